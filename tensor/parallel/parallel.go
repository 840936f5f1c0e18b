// Package parallel is gopeft's shared worker pool: one set of goroutines
// sized to the machine, used by every kernel that splits work.
//
// Work is split into chunks whose boundaries depend only on the problem size
// and the grain, never on the number of threads, so any kernel that writes
// each output from exactly one chunk computes bitwise the same result on 1 or
// N threads.
//
// The workers are long-lived. A call to For publishes its job in a single
// slot, wakes any worker that has gone to sleep, and then takes chunks
// itself alongside the workers; it returns once every chunk is done. A
// worker that finds no job spins for a short while (spinFor) before it
// parks, so the back-to-back small splits of decoding (a few per layer) do
// not each pay a thread wake-up. While the slot is taken, by a nested For
// (called from inside a chunk) or by another goroutine's For, a call runs its
// chunks inline on the calling goroutine: the same chunks, so the same
// results, and no call ever waits on a worker that could be waiting on it.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

var threads atomic.Int32

func init() {
	threads.Store(int32(runtime.GOMAXPROCS(0)))
	pool.Store(new([]*worker))
}

// Threads reports how many goroutines (the caller and Threads()-1 workers)
// For splits work over.
func Threads() int { return int(threads.Load()) }

// SetThreads sets the number of threads (at least 1) and returns the old
// value. Workers are started as calls first need them; spare ones sleep.
func SetThreads(n int) int {
	if n < 1 {
		n = 1
	}
	return int(threads.Swap(int32(n)))
}

// spinFor is how long an idle worker, and a caller waiting on the last
// chunks, polls before parking. Decoding issues a split every few to a few
// hundred microseconds; a futex wake-up costs tens, and the woken thread
// first has to be scheduled. A GEMM's threads finish their last tasks up
// to a task apart (a millisecond or more on a shared machine): with 200 µs
// one in four fork/joins of an M=1024 product ended with a parked thread
// to wake, with 2 ms one in fifty, and 2-thread GEMM gained about 1%
// (median of 54 shapes, interleaved in one process). A machine with more
// runnable threads than cores stops the spinning anyway (see calmAt).
const spinFor = 2 * time.Millisecond

// job is one For call's work: chunks are claimed from next; done counts the
// finished ones.
type job struct {
	// Set before the job is published, then only read (by spinning
	// workers too): kept off the cache line the counters below bounce on.
	seq        uint64 // a job's number: workers remember numbers, not jobs
	fn         func(lo, hi int)
	n, grain   int
	chunks     int64
	maxHelpers int32 // at most Threads()-1, and no more than chunks-1
	_          [64]byte

	next, done atomic.Int64
	helpers    atomic.Int32 // workers that joined
	waiting    atomic.Bool  // the caller sleeps on wake
	wake       chan struct{}
}

// run claims and runs chunks until none is left.
func (j *job) run() {
	for {
		c := j.next.Add(1) - 1
		if c >= j.chunks {
			return
		}
		lo := int(c) * j.grain
		j.fn(lo, min(lo+j.grain, j.n))
		if j.done.Add(1) == j.chunks && j.waiting.Load() {
			j.wake <- struct{}{}
		}
	}
}

// wait returns once every chunk is done: the caller has run out of chunks
// to claim and the workers are finishing theirs.
func (j *job) wait() {
	if spin(func() bool { return j.done.Load() == j.chunks }) {
		return
	}
	j.wake = make(chan struct{}, 1)
	j.waiting.Store(true) // publishes wake
	if j.done.Load() == j.chunks {
		return
	}
	<-j.wake
}

// epoch is the origin of now's monotonic clock.
var epoch = time.Now()

func now() int64 { return int64(time.Since(epoch)) }

// calmAt is the time (now) from which spinning is allowed again. A spinner
// that finds a long gap between two looks at the clock was descheduled: the
// machine has more runnable threads than cores, and a spinning thread would
// only take the core the thread it waits for needs (a sleeper, woken, gets
// priority instead). Nobody spins then for busyPause.
var calmAt atomic.Int64

const (
	preemptedGap = 200 * time.Microsecond
	busyPause    = 20 * time.Millisecond
)

// spin polls done for up to spinFor and reports whether it became true.
func spin(done func() bool) bool {
	if done() {
		return true
	}
	t0 := now()
	if t0 < calmAt.Load() {
		return false
	}
	last := t0
	for i := 1; ; i++ {
		if done() {
			return true
		}
		if i%64 == 0 {
			t := now()
			if t-last > int64(preemptedGap) {
				calmAt.Store(t + int64(busyPause))
				return false
			}
			if t-t0 > int64(spinFor) {
				return false
			}
			last = t
			runtime.Gosched()
		}
	}
}

// jobSeq numbers jobs from 1 (a worker's "last job" starts at 0).
var jobSeq atomic.Uint64

// slot holds the job workers should help with, or nil.
var slot atomic.Pointer[job]

// worker is a long-lived helper goroutine.
type worker struct {
	sleeping atomic.Bool
	wake     chan struct{} // one token per wake-up
}

var (
	poolMu sync.Mutex
	pool   atomic.Pointer[[]*worker] // grows only; read without the lock
)

// workers returns at least n workers, starting missing ones.
func workers(n int) []*worker {
	ws := *pool.Load()
	if len(ws) >= n {
		return ws
	}
	poolMu.Lock()
	defer poolMu.Unlock()
	ws = *pool.Load()
	if len(ws) < n {
		grown := append(append(make([]*worker, 0, n), ws...), make([]*worker, n-len(ws))...)
		for i := len(ws); i < n; i++ {
			w := &worker{wake: make(chan struct{}, 1)}
			grown[i] = w
			go w.loop()
		}
		ws = grown
		pool.Store(&ws)
	}
	return ws
}

// loop helps with each new job it sees; between jobs it spins for spinFor,
// then sleeps until a For wakes it.
func (w *worker) loop() {
	// The last job's number, not the job: holding the job would keep its
	// fn (and what fn captures) alive while the worker idles.
	var last uint64
	for {
		j := slot.Load()
		if j == nil || j.seq == last {
			j = w.await(last)
		}
		last = j.seq
		if j.helpers.Add(1) <= j.maxHelpers {
			j.run()
		}
	}
}

// await returns the next job other than last, spinning, then sleeping.
func (w *worker) await(last uint64) *job {
	var j *job
	fresh := func() bool {
		j = slot.Load()
		return j != nil && j.seq != last
	}
	for {
		if spin(fresh) {
			return j
		}
		// Sleep. A For stores its job before it looks for sleepers, and the
		// worker marks itself sleeping before it looks at the slot, so one
		// of the two sees the other.
		w.sleeping.Store(true)
		if fresh() {
			if !w.sleeping.CompareAndSwap(true, false) {
				<-w.wake // a For woke us meanwhile: take its token
			}
			return j
		}
		<-w.wake
	}
}

// For calls fn(lo, hi) over [0, n) in chunks of grain items (the last may be
// shorter). Chunks run on up to Threads() goroutines, the caller included;
// For returns when all are done. With one thread, one chunk, or the pool
// busy with another call, it runs inline.
func For(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	chunks := (n + grain - 1) / grain
	helpers := min(Threads(), chunks) - 1
	if helpers <= 0 || slot.Load() != nil {
		inline(n, grain, fn)
		return
	}
	j := &job{seq: jobSeq.Add(1), fn: fn, n: n, grain: grain, chunks: int64(chunks), maxHelpers: int32(helpers)}
	if !slot.CompareAndSwap(nil, j) {
		inline(n, grain, fn)
		return
	}
	defer slot.CompareAndSwap(j, nil) // also when fn panics
	for _, w := range workers(helpers)[:helpers] {
		if w.sleeping.Load() && w.sleeping.CompareAndSwap(true, false) {
			w.wake <- struct{}{}
		}
	}
	j.run()
	slot.CompareAndSwap(j, nil) // every chunk is claimed: free the slot
	j.wait()
}

func inline(n, grain int, fn func(lo, hi int)) {
	for lo := 0; lo < n; lo += grain {
		fn(lo, min(lo+grain, n))
	}
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
