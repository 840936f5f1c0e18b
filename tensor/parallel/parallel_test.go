package parallel

import (
	"sync/atomic"
	"testing"
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
