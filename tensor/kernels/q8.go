package kernels

import (
	"fmt"
)

// Q8Recip127 is float32(1/127), the constant bitsandbytes' int8
// dequantization multiplies by.
const Q8Recip127 = float32(7.874015718698502e-3)

// Q8 is a Rows×Cols matrix stored row-wise in int8, as LLM.int8's
// Linear8bitLt holds a weight: element (r, c) is
// float32(float32(CB[r*Cols+c])*SCB[r]) * Q8Recip127, two float32
// multiplies in that order (bitsandbytes' int8_vectorwise_dequant).
type Q8 struct {
	Rows, Cols int
	CB         []int8
	SCB        []float32
}

func (b *Q8) check(what string) {
	if b.Rows < 0 || b.Cols < 0 || len(b.CB) < b.Rows*b.Cols || len(b.SCB) < b.Rows {
		panic(fmt.Sprintf("kernels.%s: bad Q8 %d×%d with %d codes, %d scales", what, b.Rows, b.Cols, len(b.CB), len(b.SCB)))
	}
}

// decodeRow writes elements [c0, c0+cnt) of row r to out[0], out[stride], ...
func (b *Q8) decodeRow(r, c0, cnt int, out []float32, stride int) {
	s := b.SCB[r]
	cb := b.CB[r*b.Cols+c0 : r*b.Cols+c0+cnt]
	if stride == 1 {
		out = out[:cnt]
		for i, v := range cb {
			out[i] = float32(float32(v)*s) * Q8Recip127
		}
		return
	}
	for i, v := range cb {
		out[i*stride] = float32(float32(v)*s) * Q8Recip127
	}
}

// Dequantize writes the whole matrix (Rows×Cols floats) to dst: the
// reference the kernels are tested against.
func (b *Q8) Dequantize(dst []float32) {
	b.check("Q8.Dequantize")
	for r := 0; r < b.Rows; r++ {
		b.decodeRow(r, 0, b.Cols, dst[r*b.Cols:], 1)
	}
}

// DequantizeRows writes rows [r0, r1) to dst.
func (b *Q8) DequantizeRows(r0, r1 int, dst []float32) {
	b.check("Q8.DequantizeRows")
	for r := r0; r < r1; r++ {
		b.decodeRow(r, 0, b.Cols, dst[(r-r0)*b.Cols:], 1)
	}
}

// GemmQ8 is GemmQ4 for an int8 row-wise B: C = A·op(B) or C += A·op(B), B
// stored n×k with transB (a Linear's forward y = x·Wᵀ), k×n without (the
// backward dx = dy·W). No float32 copy of B is made: the blocked path
// dequantizes each micro-panel while packing it, so its result equals Gemm
// on the dequantized B bit for bit; up to RowInvariantRows rows with transB
// take a GEMV that decodes a row segment at a time (the same values, sums
// grouped differently), a few rows at a time, so each row's result is the
// one it gets alone.
func GemmQ8(transB bool, m, n, k int, a []float32, lda int, b *Q8, c []float32, ldc int, accumulate bool) {
	b.check("GemmQ8")
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if b.Rows != br || b.Cols != bc {
		panic(fmt.Sprintf("kernels.GemmQ8: B is %d×%d, want %d×%d (transB=%v m=%d n=%d k=%d)", b.Rows, b.Cols, br, bc, transB, m, n, k))
	}
	checkGemm(false, transB, m, n, k, len(a), lda, br*bc, bc, len(c), ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !accumulate {
			for i := 0; i < m; i++ {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		return
	}
	if m <= RowInvariantRows && transB {
		// q4GemvRows rows at a time: every row's dot products are the
		// one-row ones, whatever the other rows (see RowInvariantRows).
		for r0 := 0; r0 < m; r0 += q4GemvRows {
			gemvQ8T(min(q4GemvRows, m-r0), n, k, a[r0*lda:], lda, b, c[r0*ldc:], ldc, accumulate)
		}
		return
	}
	im := *active
	im.blockKernel.packB = func(_ bMat, j0, cols, p0, kc, nr int, dst []float32) {
		dst = dst[:nr*kc]
		if cols < nr {
			clear(dst)
		}
		if transB { // column j of op(B) is row j of B
			if cols == nr && nr%8 == 0 && packBTrans != nil {
				// Decode the nr rows contiguously, then transpose them
				// with the float32 packer's register transposes (as
				// packBQ4 does): the same values, far fewer scattered
				// stores.
				buf := f32Bufs.get(nr * kc)
				defer f32Bufs.put(buf)
				rows := *buf
				for j := 0; j < nr; j++ {
					b.decodeRow(j0+j, p0, kc, rows[j*kc:(j+1)*kc], 1)
				}
				packBTrans(kc, nr, rows, kc, dst)
				return
			}
			for j := 0; j < cols; j++ {
				b.decodeRow(j0+j, p0, kc, dst[j:], nr)
			}
			return
		}
		for p := 0; p < kc; p++ {
			b.decodeRow(p0+p, j0, cols, dst[p*nr:], 1)
		}
	}
	gemmBlocked(&im, false, m, n, k, a, lda, bMat{}, c, ldc, accumulate)
}

// gemvQ8T is C (+)= A·Bᵀ for few rows of A: workers take ranges of outputs
// (rows of B), decode each row in segments once and use it for every row
// of A.
func gemvQ8T(m, n, k int, a []float32, lda int, b *Q8, c []float32, ldc int, accumulate bool) {
	serial := 2*m*n*k < serialFlops
	const seg = 512
	forPar(serial, n, gemvGrain, func(lo, hi int) {
		var w [seg]float32
		for j := lo; j < hi; j++ {
			var y [q4GemvRows]float32
			for p0 := 0; p0 < k; p0 += seg {
				cnt := min(seg, k-p0)
				b.decodeRow(j, p0, cnt, w[:cnt], 1)
				for r := 0; r < m; r++ {
					y[r] += dot4(a[r*lda+p0:r*lda+p0+cnt], w[:cnt])
				}
			}
			for r := 0; r < m; r++ {
				if accumulate {
					c[r*ldc+j] += y[r]
				} else {
					c[r*ldc+j] = y[r]
				}
			}
		}
	})
}

// dot4 is Σ x·w with four accumulators.
func dot4(x, w []float32) float32 {
	w = w[:len(x)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * w[i]
		s1 += x[i+1] * w[i+1]
		s2 += x[i+2] * w[i+2]
		s3 += x[i+3] * w[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * w[i]
	}
	return (s0 + s1) + (s2 + s3)
}
