//go:build amd64 && !purego && !linux

package kernels

// amxPermit: only Linux is known to grant the AMX tile state on request.
func amxPermit() bool { return false }
