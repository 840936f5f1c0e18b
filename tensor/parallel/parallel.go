// Package parallel is gopeft's shared worker pool: one set of goroutines
// sized to the machine, used by every kernel that splits work.
//
// Work is split into chunks whose boundaries depend only on the problem size
// and the grain, never on the number of threads, so any kernel that writes
// each output from exactly one chunk computes bitwise the same result on 1 or
// N threads.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

var threads atomic.Int32

func init() { threads.Store(int32(runtime.GOMAXPROCS(0))) }

// Threads reports how many workers For uses.
func Threads() int { return int(threads.Load()) }

// SetThreads sets the number of workers (at least 1) and returns the old value.
func SetThreads(n int) int {
	if n < 1 {
		n = 1
	}
	return int(threads.Swap(int32(n)))
}

// For calls fn(lo, hi) over [0, n) in chunks of grain items (the last may be
// shorter). Chunks run on up to Threads() goroutines; For returns when all
// are done. With one thread, or one chunk, it runs inline.
func For(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	chunks := (n + grain - 1) / grain
	workers := Threads()
	if workers > chunks {
		workers = chunks
	}
	if workers <= 1 {
		for lo := 0; lo < n; lo += grain {
			fn(lo, min(lo+grain, n))
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			for {
				c := int(next.Add(1) - 1)
				if c >= chunks {
					return
				}
				lo := c * grain
				fn(lo, min(lo+grain, n))
			}
		}()
	}
	wg.Wait()
}

// Grain returns a chunk size that splits n items into about 4 chunks per
// worker, at least minGrain each. Use it only where the split does not change
// results (each output written by one chunk).
func Grain(n, minGrain int) int {
	g := (n + 4*Threads() - 1) / (4 * Threads())
	if g < minGrain {
		g = minGrain
	}
	return g
}
