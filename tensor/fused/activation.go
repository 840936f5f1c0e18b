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
			e := b + len(s)
			swigluMul(out[b:e], gate[b:e], up[b:e], s)
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
			e := b + len(s)
			var dg, du []float32
			if dgate != nil {
				dg = dgate[b:e]
			}
			if dup != nil {
				du = dup[b:e]
			}
			swigluGrad(dg, du, dout[b:e], gate[b:e], up[b:e], s)
		})
	})
}

// swigluMulGo sets out[i] = gate[i]·s[i]·up[i] (s = σ(gate)) over len(s)
// elements.
func swigluMulGo(out, gate, up, s []float32) {
	for i, si := range s {
		out[i] = float32(gate[i]*si) * up[i]
	}
}

// swigluGradGo accumulates dgate[i] += dout·up·s·(1 + g·(1−s)) and dup[i]
// += dout·g·s over len(s) elements, g = gate[i], s = σ(g); a nil dgate or
// dup is skipped. Each product and sum is rounded on its own (the
// conversions keep the compiler from fusing any into an FMA), so the
// AVX-512 kernel gives the same bits.
func swigluGradGo(dgate, dup, dout, gate, up, s []float32) {
	for i, si := range s {
		g := gate[i]
		if dgate != nil {
			d := float32(float32(dout[i]*up[i])*si) * float32(1+float32(g*(1-si)))
			dgate[i] += d
		}
		if dup != nil {
			dup[i] += float32(float32(dout[i]*g) * si)
		}
	}
}
