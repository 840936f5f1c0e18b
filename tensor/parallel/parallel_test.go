package parallel

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestForCoversEveryItemOnceInFixedChunks(t *testing.T) {
	for _, threads := range []int{1, 2, 5} {
		old := SetThreads(threads)
		var seen [1003]atomic.Int32
		var chunks atomic.Int32
		For(len(seen), 17, func(lo, hi int) {
			if lo%17 != 0 || (hi-lo != 17 && hi != len(seen)) {
				t.Errorf("chunk [%d,%d) not aligned to the grain", lo, hi)
			}
			chunks.Add(1)
			for i := lo; i < hi; i++ {
				seen[i].Add(1)
			}
		})
		SetThreads(old)
		for i := range seen {
			if seen[i].Load() != 1 {
				t.Fatalf("threads %d: item %d visited %d times", threads, i, seen[i].Load())
			}
		}
		if chunks.Load() != 59 {
			t.Errorf("threads %d: %d chunks, want ⌈1003/17⌉ = 59", threads, chunks.Load())
		}
	}
	For(0, 4, func(lo, hi int) { t.Error("called for an empty range") })
}

// cover runs For over n items of the given grain and fails unless every item
// is visited exactly once.
func cover(t *testing.T, n, grain int) {
	t.Helper()
	seen := make([]atomic.Int32, n)
	For(n, grain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			seen[i].Add(1)
		}
	})
	for i := range seen {
		if v := seen[i].Load(); v != 1 {
			t.Fatalf("n %d grain %d: item %d visited %d times", n, grain, i, v)
		}
	}
}

// A For inside a chunk of another For completes (inline or on the pool),
// however deep, on any number of threads.
func TestNestedForDoesNotDeadlock(t *testing.T) {
	for _, threads := range []int{1, 2, 4} {
		old := SetThreads(threads)
		var total atomic.Int64
		For(8, 1, func(lo, hi int) {
			For(16, 2, func(lo, hi int) {
				For(4, 1, func(lo, hi int) { total.Add(int64(hi - lo)) })
			})
		})
		SetThreads(old)
		if total.Load() != 8*8*4 {
			t.Fatalf("threads %d: nested For counted %d, want %d", threads, total.Load(), 8*8*4)
		}
	}
}

// Changing the thread count between calls (up, down, to 1 and back) keeps
// every call correct; the pool grows on demand and spare workers sleep.
func TestSetThreadsBetweenCalls(t *testing.T) {
	old := Threads()
	defer SetThreads(old)
	for _, threads := range []int{3, 1, 6, 2, 1, 4, 0} {
		if prev := SetThreads(threads); prev < 1 {
			t.Fatalf("SetThreads returned %d", prev)
		}
		if threads == 0 && Threads() != 1 {
			t.Fatalf("SetThreads(0) gave %d threads, want 1", Threads())
		}
		for _, n := range []int{1, 7, 100, 1000} {
			cover(t, n, 3)
		}
	}
}

// Many goroutines calling For at once (with nested calls) each get all of
// their chunks run exactly once, whether or not they won the pool.
func TestConcurrentCallers(t *testing.T) {
	old := SetThreads(4)
	defer SetThreads(old)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := 0; it < 200; it++ {
				n := 1 + (g*31+it*7)%300
				seen := make([]atomic.Int32, n)
				For(n, 1+it%5, func(lo, hi int) {
					For(hi-lo, 1, func(a, b int) {
						for i := lo + a; i < lo+b; i++ {
							seen[i].Add(1)
						}
					})
				})
				for i := range seen {
					if seen[i].Load() != 1 {
						errs <- "an item was not visited exactly once"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// A result written chunk by chunk is bitwise the same on any thread count,
// back to back many times (the workers spin between calls) and after the
// workers have gone to sleep.
func TestDeterministicAcrossThreadsAndSleep(t *testing.T) {
	const n, grain = 4096, 64
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(i%97) * 0.37
	}
	run := func() []float32 {
		out := make([]float32, n/grain)
		For(n, grain, func(lo, hi int) {
			var s float32
			for _, v := range x[lo:hi] {
				s += v * v
			}
			out[lo/grain] = s
		})
		return out
	}
	old := SetThreads(1)
	want := run()
	defer SetThreads(old)
	for _, threads := range []int{2, 3, 8} {
		SetThreads(threads)
		for it := 0; it < 100; it++ {
			if it == 50 {
				time.Sleep(2 * spinFor) // let the workers park
			}
			got := run()
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("threads %d: chunk %d = %g, want %g", threads, i, got[i], want[i])
				}
			}
		}
	}
}

// A panic in a chunk run on the calling goroutine reaches the caller and
// leaves the pool usable. (A panic on a worker ends the program, as one in
// any goroutine does.)
func TestPanicLeavesPoolUsable(t *testing.T) {
	old := SetThreads(2)
	defer SetThreads(old)
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic in a chunk was lost")
			}
		}()
		For(1, 1, func(lo, hi int) { panic("boom") }) // one chunk: inline
	}()
	if slot.Load() != nil {
		t.Fatal("the pool's slot is taken after a panic")
	}
	cover(t, 100, 1)
}
