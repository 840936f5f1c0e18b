//go:build !unix

package tensor

import "errors"

const canMap = false

func mapAnon(int) ([]byte, error) { return nil, errors.New("tensor: no anonymous mappings here") }

func unmap([]byte) {}
