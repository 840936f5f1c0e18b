package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// randQ8 returns a random rows×cols Q8 matrix and its dequantized values.
func randQ8(r *rand.Rand, rows, cols int) (*Q8, []float32) {
	q := &Q8{Rows: rows, Cols: cols, CB: make([]int8, rows*cols), SCB: make([]float32, rows)}
	for i := range q.CB {
		q.CB[i] = int8(r.IntN(255) - 127)
	}
	for i := range q.SCB {
		q.SCB[i] = 0.01 + r.Float32()*0.05
	}
	w := make([]float32, rows*cols)
	q.Dequantize(w)
	return q, w
}

// TestGemmQ8: both layouts, every path: the blocked path equals Gemm on the
// dequantized matrix bit for bit, the GEMV is within rounding of gemmRef.
func TestGemmQ8(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(4, 5))
		q0, w0 := randQ8(r, 3, 5)
		for e, v := range w0 {
			if want := float32(float32(q0.CB[e])*q0.SCB[e/5]) * Q8Recip127; v != want {
				t.Fatalf("element %d: %g, want %g", e, v, want)
			}
		}
		for _, s := range q4Shapes {
			for _, transB := range []bool{true, false} {
				for _, acc := range []bool{false, true} {
					br, bc := s.k, s.n
					if transB {
						br, bc = s.n, s.k
					}
					q, w := randQ8(r, br, bc)
					g := gemmCase{transB: transB, acc: acc, m: s.m, n: s.n, k: s.k}
					checkGemmCase(t, g, r, w, func(a []float32, lda int, c []float32) {
						GemmQ8(transB, s.m, s.n, s.k, a, lda, q, c, s.n, acc)
					})
					if s.m == 1 || (s.m <= RowInvariantRows && transB) { // both take their GEMVs: rounding, not bits
						continue
					}
					lda, ldc := s.k+3, s.n+5
					a := randSlice(r, s.m*lda)
					c1 := randSlice(r, s.m*ldc)
					c2 := append([]float32(nil), c1...)
					GemmQ8(transB, s.m, s.n, s.k, a, lda, q, c1, ldc, acc)
					Gemm(false, transB, s.m, s.n, s.k, a, lda, w, bc, c2, ldc, acc)
					for i := range c1 {
						if math.Float32bits(c1[i]) != math.Float32bits(c2[i]) {
							t.Fatalf("m=%d n=%d k=%d transB=%v acc=%v: C[%d] = %g, Gemm on the dequantized B gives %g", s.m, s.n, s.k, transB, acc, i, c1[i], c2[i])
						}
					}
				}
			}
		}
	})
}
