package fused

import "github.com/gopeft/gopeft/tensor/parallel"

// elementwise runs fn over [0, n) in parallel chunks.
func elementwise(n int, fn func(lo, hi int)) {
	parallel.For(n, parallel.Grain(n, elemGrain), fn)
}

// SiLUForward sets out = x·σ(x) over n elements; out may alias x.
func SiLUForward(out, x []float32, n int) {
	need("SiLUForward", "out", out, n)
	need("SiLUForward", "x", x, n)
	elementwise(n, func(lo, hi int) {
		sigmoidBlocks(x, lo, hi, func(b int, s []float32) {
			for j, sj := range s {
				out[b+j] = x[b+j] * sj
			}
		})
	})
}

// sigmoidBlock is how many sigmoids sigmoidBlocks forms at once (on the
// stack) before handing them out.
const sigmoidBlock = 256

// sigmoidBlocks walks [lo, hi) in blocks, calling use(b, s) with s[j] =
// σ(x[b+j]) = 1/(1+Exp(-x[b+j])), sixteen at a time where the CPU allows.
func sigmoidBlocks(x []float32, lo, hi int, use func(b int, s []float32)) {
	var buf [sigmoidBlock]float32
	for b := lo; b < hi; b += sigmoidBlock {
		e := buf[:min(sigmoidBlock, hi-b)]
		sigmoidTo(e, x[b:b+len(e)])
		use(b, e)
	}
}

// SiLUBackward accumulates dx += dout · silu'(x).
func SiLUBackward(dx, dout, x []float32, n int) {
	need("SiLUBackward", "dx", dx, n)
	need("SiLUBackward", "dout", dout, n)
	need("SiLUBackward", "x", x, n)
	elementwise(n, func(lo, hi int) {
		sigmoidBlocks(x, lo, hi, func(b int, s []float32) {
			for j, sj := range s {
				i := b + j
				dx[i] += dout[i] * (sj * (1 + x[i]*(1-sj)))
			}
		})
	})
}

// SwiGLUForward sets out = silu(gate) ⊙ up over n elements.
func SwiGLUForward(out, gate, up []float32, n int) {
	need("SwiGLUForward", "out", out, n)
	need("SwiGLUForward", "gate", gate, n)
	need("SwiGLUForward", "up", up, n)
	elementwise(n, func(lo, hi int) {
		sigmoidBlocks(gate, lo, hi, func(b int, s []float32) {
			for j, sj := range s {
				out[b+j] = gate[b+j] * sj * up[b+j]
			}
		})
	})
}

// SwiGLUBackward accumulates dgate += dout⊙up⊙silu'(gate) and
// dup += dout⊙silu(gate); either may be nil.
func SwiGLUBackward(dgate, dup, dout, gate, up []float32, n int) {
	need("SwiGLUBackward", "dout", dout, n)
	need("SwiGLUBackward", "gate", gate, n)
	need("SwiGLUBackward", "up", up, n)
	if dgate != nil {
		need("SwiGLUBackward", "dgate", dgate, n)
	}
	if dup != nil {
		need("SwiGLUBackward", "dup", dup, n)
	}
	elementwise(n, func(lo, hi int) {
		sigmoidBlocks(gate, lo, hi, func(b int, s []float32) {
			for j, sj := range s {
				i, g := b+j, gate[b+j]
				if dgate != nil {
					dgate[i] += dout[i] * up[i] * sj * (1 + g*(1-sj))
				}
				if dup != nil {
					dup[i] += dout[i] * g * sj
				}
			}
		})
	})
}
