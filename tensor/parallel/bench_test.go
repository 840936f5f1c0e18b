package parallel

import (
	"sync/atomic"
	"testing"
)

// sink keeps the benchmark's work from being optimised away.
var sink atomic.Int64

// spinWork does about n·1ns of arithmetic.
func spinWork(n int) {
	s := 0
	for i := 0; i < n; i++ {
		s += i * i
	}
	sink.Add(int64(s))
}

// BenchmarkForEmpty is one fork/join of two trivial chunks: the hand-off cost
// every small split in decoding pays.
func BenchmarkForEmpty(b *testing.B) {
	for i := 0; i < b.N; i++ {
		For(2, 1, func(lo, hi int) {})
	}
}

// BenchmarkFor10us splits about 10µs of work in two, back to back, as
// decoding's small products are.
func BenchmarkFor10us(b *testing.B) {
	for i := 0; i < b.N; i++ {
		For(2, 1, func(lo, hi int) { spinWork(5000) })
	}
}
