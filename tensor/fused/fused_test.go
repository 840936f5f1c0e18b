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

// ExpBlock leaves m, s and target bitwise as LogSumExpBlock does, turns x into
// exp(x − m) with the block's final m, and rescales acc rows whose maximum
// grew by exp(old − new), on any number of threads.
func TestExpBlockMatchesLogSumExpBlock(t *testing.T) {
	const rows, cols, accCols = 9, 300, 5
	targets := []int{0, 299, 600, 301, 5, 599, 450, 2, 310}
	type state struct {
		m, target, acc []float32
		s              []float64
	}
	run := func(keep bool, th int) (st state, exps [][]float32) {
		st = state{m: make([]float32, rows), target: make([]float32, rows), acc: make([]float32, rows*accCols), s: make([]float64, rows)}
		for r := range st.m {
			st.m[r] = float32(math.Inf(-1))
		}
		for b := 0; b < 2; b++ {
			x := make([]float32, rows*cols)
			for i := range x {
				x[i] = float32(math.Sin(float64(i*(b+3)))) * float32(4+3*b)
			}
			withThreads(th, func() {
				if keep {
					ExpBlock(st.m, st.s, st.target, x, targets, rows, cols, b*cols, st.acc, accCols)
				} else {
					LogSumExpBlock(st.m, st.s, st.target, x, targets, rows, cols, b*cols)
				}
			})
			exps = append(exps, x)
			for i := range st.acc { // the caller's accumulation: one per block
				st.acc[i]++
			}
		}
		return st, exps
	}
	want, raw := run(false, 1)
	for _, th := range []int{1, 3} {
		got, exps := run(true, th)
		for r := 0; r < rows; r++ {
			if got.m[r] != want.m[r] || got.s[r] != want.s[r] || got.target[r] != want.target[r] {
				t.Fatalf("%d threads, row %d: m, s, target = %v %v %v, LogSumExpBlock %v %v %v", th, r, got.m[r], got.s[r], got.target[r], want.m[r], want.s[r], want.target[r])
			}
			// Block 1 used the final max; block 0's acc (1) was rescaled if it grew.
			e := Exp(raw[1][r*cols+7] - want.m[r])
			if exps[1][r*cols+7] != e {
				t.Fatalf("row %d: exp %v, want %v", r, exps[1][r*cols+7], e)
			}
			m0 := rowMax(raw[0][r*cols : (r+1)*cols])
			wantAcc := float32(math.Exp(float64(m0-want.m[r]))) + 1
			if d := got.acc[r*accCols] - wantAcc; d > 1e-6 || d < -1e-6 {
				t.Fatalf("row %d: acc %v, want %v", r, got.acc[r*accCols], wantAcc)
			}
		}
	}
}

// A block whose logits are all −Inf (a row's vocabulary masked so far)
// adds nothing: the running sum stays 0, not NaN, the exponentials kept are
// 0, and a later finite block gives the plain log-sum-exp.
func TestLogSumExpBlockMaskedFirstBlock(t *testing.T) {
	negInf := float32(math.Inf(-1))
	for _, keep := range []bool{false, true} {
		m, s, target := []float32{negInf}, []float64{0}, []float32{0}
		acc := []float32{0}
		block := []float32{negInf, negInf, negInf}
		if keep {
			ExpBlock(m, s, target, block, []int{4}, 1, 3, 0, acc, 1)
		} else {
			LogSumExpBlock(m, s, target, block, []int{4}, 1, 3, 0)
		}
		if s[0] != 0 || !math.IsInf(float64(m[0]), -1) || (keep && (block[0] != 0 || block[2] != 0)) {
			t.Fatalf("keep %v: after a masked block m %v s %v exps %v", keep, m[0], s[0], block)
		}
		next := []float32{1, 2, 3}
		LogSumExpBlock(m, s, target, next, []int{4}, 1, 3, 3)
		got, want := float64(m[0])+math.Log(s[0]), math.Log(math.Exp(1)+math.Exp(2)+math.Exp(3))
		if math.Abs(got-want) > 1e-6 || target[0] != 2 {
			t.Fatalf("keep %v: lse %v, want %v; target %v, want 2", keep, got, want, target[0])
		}
	}
}
