//go:build !unix

package format

import "github.com/gopeft/gopeft/internal/safefile"

// mapFile reads the file at path where it cannot be mapped.
func mapFile(path string) ([]byte, func(), error) {
	b, err := safefile.ReadFile(path)
	return b, func() {}, err
}
