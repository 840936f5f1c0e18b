package fused

import (
	"math"
	"testing"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// withThreads runs fn with n workers.
func withThreads(n int, fn func()) {
	old := parallel.SetThreads(n)
	defer parallel.SetThreads(old)
	fn()
}

// ReduceRows and Sum give the exact row sums, bitwise the same on any number
// of threads (here with enough rows and elements to split).
func TestReductionsThreadIndependent(t *testing.T) {
	const rows, cols = 1000, 37
	a := make([]float32, rows*cols)
	for i := range a {
		a[i] = float32(math.Sin(float64(i))) * 1e3
	}
	var want [cols]float64
	for r := 0; r < rows; r++ {
		for j := 0; j < cols; j++ {
			want[j] += float64(a[r*cols+j])
		}
	}
	var ref []float32
	var refSum float64
	for _, n := range []int{1, 2, 3, 8} {
		dst := make([]float32, cols)
		var s float64
		withThreads(n, func() {
			SumRows(dst, a, rows, cols)
			s = Sum(a, len(a))
		})
		for j, w := range want {
			if math.Abs(float64(dst[j])-w) > 1e-3*math.Max(1, math.Abs(w)) {
				t.Fatalf("column %d sum %v, want %v", j, dst[j], w)
			}
		}
		if ref == nil {
			ref, refSum = dst, s
			continue
		}
		for j := range dst {
			if math.Float32bits(dst[j]) != math.Float32bits(ref[j]) {
				t.Fatalf("%d threads: column %d = %v, 1 thread %v", n, j, dst[j], ref[j])
			}
		}
		if s != refSum {
			t.Fatalf("%d threads: Sum %v, 1 thread %v", n, s, refSum)
		}
	}
}

// Undersized buffers panic naming the op and the sizes.
func TestShortSlicePanics(t *testing.T) {
	defer func() {
		if r := recover(); r == nil {
			t.Error("no panic")
		} else if msg := r.(string); msg != "fused.RMSNormForward: out has 5 elements, need 6" {
			t.Errorf("panic %q", msg)
		}
	}()
	RMSNormForward(make([]float32, 5), make([]float32, 2), make([]float32, 6), make([]float32, 3), 2, 3, 1e-5)
}
