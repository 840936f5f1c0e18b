//go:build amd64 && !purego && linux

package kernels

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// amxPermit asks Linux for the AMX tile data state (XTILEDATA, feature 18)
// for this process, which it must grant before any tile instruction runs,
// and checks it was granted.
func amxPermit() bool {
	const (
		archGetXcompPerm  = 0x1022
		archReqXcompPerm  = 0x1023
		xfeatureXtiledata = 18
	)
	if _, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, archReqXcompPerm, xfeatureXtiledata, 0); e != 0 {
		return false
	}
	var mask uint64
	if _, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, archGetXcompPerm, uintptr(unsafe.Pointer(&mask)), 0); e != 0 {
		return false
	}
	return mask&(1<<xfeatureXtiledata) != 0
}
