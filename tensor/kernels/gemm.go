// Package kernels holds gopeft's hot loops: matrix multiplication in the
// layouts that forward and backward passes use, with float32 and bf16 operands.
//
// Gemm is a BLIS-style blocked multiply: op(A) and op(B) are packed into
// cache-sized panels and a register-blocked micro-kernel (AVX-512 or AVX2+FMA
// assembly on amd64, plain Go elsewhere or with -tags purego) computes MR×NR
// tiles of C. A single row (M=1, decoding) takes a separate memory-bound GEMV
// path that streams the weights once without packing; so do up to
// RowInvariantRows rows against a weight stored n×k (transB), with the
// one-row arithmetic for every row: each row's result is then the same, bit
// for bit, whatever the other rows (a decode batch gives every sequence
// what it gets decoded alone).
//
// Results do not depend on the number of threads: every C element is summed
// over K in blocks of a fixed size, in order, whichever worker computes it.
// They do depend on the instruction set chosen at start-up (FMA rounds once,
// separate multiply and add twice), within float32 rounding — and, for
// GemmBF16 on CPUs with AVX512_BF16 or AMX, on whether A is rounded to bf16
// (see GemmBF16).
package kernels

import "fmt"

// Gemm computes C = op(A)·op(B), or C += op(A)·op(B) when accumulate is set.
// All matrices are row-major. op(A) is m×k: A itself (stored m×k, row stride
// lda) or, with transA, the transpose of A stored k×m. op(B) is k×n: B itself
// (stored k×n, row stride ldb) or, with transB, the transpose of B stored n×k.
// C is m×n with row stride ldc.
func Gemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkGemm(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	gemm(active, transA, m, n, k, a, lda, bMat{f: b, ld: ldb, trans: transB}, c, ldc, accumulate, false)
}

// GemmPacked is Gemm through the packed path whatever m: a compute-bound
// product of few rows against many columns (attention's tiles in training:
// 32 query rows against every key) runs there at about twice the GEMV
// paths' rate. The packed path sums every C element in the same order
// whatever m, so its rows do not depend on one another either; what is
// given up is only agreement with Gemm's one-row arithmetic for m ≤
// RowInvariantRows (which decoding relies on).
func GemmPacked(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	checkGemm(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	gemm(active, transA, m, n, k, a, lda, bMat{f: b, ld: ldb, trans: transB}, c, ldc, accumulate, true)
}

// bMat is the right operand, stored as float32 (f) or bfloat16 (h).
type bMat struct {
	f     []float32
	h     []BF16
	ld    int
	trans bool // stored n×k
}

// gemm dispatches one checked multiply to the GEMV or the blocked path
// (always the blocked one when packed).
func gemm(im *impl, transA bool, m, n, k int, a []float32, lda int, b bMat, c []float32, ldc int, accumulate, packed bool) {
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
	if packed {
		gemmBlocked(im, transA, m, n, k, a, lda, b, c, ldc, accumulate)
		return
	}
	if m == 1 {
		gemv(im, transA, n, k, a, lda, b, c, accumulate)
		return
	}
	if b.trans && !transA && m <= RowInvariantRows {
		gemvT(im, m, n, k, a, lda, b, c, ldc, accumulate)
		return
	}
	gemmBlocked(im, transA, m, n, k, a, lda, b, c, ldc, accumulate)
}

// gemmRef is the plain reference loop: each C element summed over k in order.
func gemmRef(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += av * bv
			}
			if accumulate {
				c[i*ldc+j] += s
			} else {
				c[i*ldc+j] = s
			}
		}
	}
}

// checkGemm panics, naming every size, when a slice is too short for the
// shapes given: an internal shape bug, never user input.
func checkGemm(transA, transB bool, m, n, k, la, lda, lb, ldb, lc, ldc int) {
	ar, ac := m, k
	if transA {
		ar, ac = k, m
	}
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	bad := func(rows, cols, ld, l int) bool {
		return rows > 0 && cols > 0 && (ld < cols || (rows-1)*ld+cols > l)
	}
	if m < 0 || n < 0 || k < 0 || bad(ar, ac, lda, la) || bad(br, bc, ldb, lb) || bad(m, n, ldc, lc) {
		panic(fmt.Sprintf("kernels.Gemm: bad shapes transA=%v transB=%v m=%d n=%d k=%d: A len %d ld %d, B len %d ld %d, C len %d ld %d",
			transA, transB, m, n, k, la, lda, lb, ldb, lc, ldc))
	}
}
