//go:build unix

package kernels

import "syscall"

// processCPU returns the CPU seconds this process has used (all threads).
// Benchmarks divide work by it as well as by wall time: on a machine shared
// with other jobs, work per CPU-second is the steadier figure.
func processCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
