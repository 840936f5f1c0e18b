// Package fused holds the plain loops behind gopeft's fused model ops:
// RMSNorm, rotary embeddings, SiLU/SwiGLU, softmax, cross-entropy (whole or
// by vocabulary block) and causal grouped-query attention (tiled, its
// products on kernels.Gemm), each as a forward and a backward function over
// []float32 slices in the style of llm.c (X_forward(out, ..., inp) and
// X_backward(dinp, dweight, ..., dout)); plus the elementwise arithmetic
// and fixed-order reductions the autograd tape needs, and a fast float32
// Exp. ExpTo applies Exp to a whole slice, sixteen lanes at a time on
// AVX-512 (exp_amd64.s) with exactly Exp's arithmetic, so a value's bits do
// not depend on where it falls in a slice; softmax, cross-entropy, attention
// and the SiLU/SwiGLU sigmoid form their exponentials through it.
//
// Tensors are matrices [rows, cols] in row-major order. Backward functions
// accumulate (+=) into their gradient slices, so a caller can sum
// contributions from several uses; a nil gradient slice skips that
// gradient. Work is split over rows, heads or elements with
// tensor/parallel; every output is written by exactly one chunk and every
// reduction across rows is summed in a fixed order (per fixed-size block,
// then block by block), so results are bitwise independent of the number of
// threads.
package fused

import (
	"fmt"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// reduceBlock is the fixed number of rows whose contributions to a
// cross-row sum are added together before the per-block partial sums are
// combined in order. It must not depend on the thread count.
const reduceBlock = 32

// elemGrain is the smallest chunk of elements worth a goroutine for the
// cheap elementwise loops.
const elemGrain = 1 << 14

// rowGrain is the number of rows of width cols that make a chunk worth a
// goroutine.
func rowGrain(rows, cols int) int {
	g := elemGrain / max(cols, 1)
	return parallel.Grain(rows, max(g, 1))
}

// need panics, naming the op and sizes, when a slice is shorter than the
// shape given: an internal shape bug, never user input.
func need(op, name string, s []float32, n int) {
	if len(s) < n {
		panic(fmt.Sprintf("fused.%s: %s has %d elements, need %d", op, name, len(s), n))
	}
}

// ReduceRows adds Σ_r contribution(r) into dst[:cols], where add(r, acc)
// adds row r's contribution into acc. Rows are summed per fixed block of
// reduceBlock rows (blocks run in parallel) and the block sums are then
// added into dst in block order, so the result does not depend on the
// number of threads.
func ReduceRows(dst []float32, rows, cols int, add func(r int, acc []float32)) {
	need("ReduceRows", "dst", dst, cols)
	if rows <= 0 || cols <= 0 {
		return
	}
	nb := (rows + reduceBlock - 1) / reduceBlock
	part := make([]float32, nb*cols)
	parallel.For(nb, parallel.Grain(nb, max(1, elemGrain/(cols*reduceBlock))), func(lo, hi int) {
		for b := lo; b < hi; b++ {
			acc := part[b*cols : (b+1)*cols]
			for r := b * reduceBlock; r < min((b+1)*reduceBlock, rows); r++ {
				add(r, acc)
			}
		}
	})
	dst = dst[:cols]
	for b := 0; b < nb; b++ {
		axpy(dst, 1, part[b*cols:(b+1)*cols])
	}
}

// dot is Σ a[i]·b[i] over len(a), with four accumulators so the loop does
// not wait on one addition chain. The order is fixed, hence deterministic.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// axpy does y += a·x over len(y).
func axpy(y []float32, a float32, x []float32) {
	x = x[:len(y)]
	for i := range y {
		y[i] += a * x[i]
	}
}
