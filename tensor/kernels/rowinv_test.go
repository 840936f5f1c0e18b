package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestRowInvariant: up to RowInvariantRows rows against a weight stored n×k
// (a Linear's forward), every row of C equals, bit for bit, the product of
// that row alone, for every path, float32 and bf16 weights, set and
// accumulate, odd sizes included. This is what makes a sequence decoded in a
// batch give the logits it gets decoded alone.
func TestRowInvariant(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(7, 8))
		for _, m := range []int{2, 3, 4, 5, 7, 17, RowInvariantRows} {
			for _, nk := range [][2]int{{1, 1}, {5, 15}, {37, 16}, {130, 17}, {64, 33}, {9, 300}, {260, 288}} {
				n, k := nk[0], nk[1]
				lda := k + 3
				a := randSlice(r, m*lda)
				w := randSlice(r, n*k)
				h := make([]BF16, n*k)
				F32ToBF16(h, w)
				c0 := randSlice(r, m*n)
				for _, acc := range []bool{false, true} {
					for _, half := range []bool{false, true} {
						mul := func(rows int, a, c []float32) {
							if half {
								GemmBF16(true, rows, n, k, a, lda, h, k, c, n, acc)
							} else {
								Gemm(false, true, rows, n, k, a, lda, w, k, c, n, acc)
							}
						}
						all := append([]float32(nil), c0...)
						mul(m, a, all)
						for i := 0; i < m; i++ {
							one := append([]float32(nil), c0[i*n:(i+1)*n]...)
							mul(1, a[i*lda:], one)
							for j := range one {
								if math.Float32bits(one[j]) != math.Float32bits(all[i*n+j]) {
									t.Fatalf("m=%d n=%d k=%d acc=%v bf16=%v: row %d col %d is %v in the batch, %v alone", m, n, k, acc, half, i, j, all[i*n+j], one[j])
								}
							}
						}
					}
				}
			}
		}
	})
}

// TestRowInvariantQ4: the same for 4-bit weights (the decode GEMV, a few
// rows at a time).
func TestRowInvariantQ4(t *testing.T) {
	withQ4Kernels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 10))
		for _, m := range []int{2, 5, 9, RowInvariantRows} {
			n, k := 37, 96
			q, _ := randQ4(r, n, k)
			a := randSlice(r, m*k)
			all := make([]float32, m*n)
			GemmQ4(true, m, n, k, a, k, q, all, n, false)
			for i := 0; i < m; i++ {
				one := make([]float32, n)
				GemmQ4(true, 1, n, k, a[i*k:], k, q, one, n, false)
				for j := range one {
					if math.Float32bits(one[j]) != math.Float32bits(all[i*n+j]) {
						t.Fatalf("m=%d: row %d col %d is %v in the batch, %v alone", m, i, j, all[i*n+j], one[j])
					}
				}
			}
		}
	})
}

// GemmQ8 gives every row of up to RowInvariantRows the bits it gets alone.
func TestRowInvariantQ8(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, m := range []int{2, 5, 9, RowInvariantRows} {
		n, k := 37, 96
		q, _ := randQ8(r, n, k)
		a := randSlice(r, m*k)
		all := make([]float32, m*n)
		GemmQ8(true, m, n, k, a, k, q, all, n, false)
		for i := 0; i < m; i++ {
			one := make([]float32, n)
			GemmQ8(true, 1, n, k, a[i*k:], k, q, one, n, false)
			for j := range one {
				if math.Float32bits(one[j]) != math.Float32bits(all[i*n+j]) {
					t.Fatalf("m=%d: row %d col %d is %v in the batch, %v alone", m, i, j, all[i*n+j], one[j])
				}
			}
		}
	}
}
