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
		for i := lo; i < hi; i++ {
			out[i] = x[i] * sigmoid(x[i])
		}
	})
}

// siluGrad is d silu/dx = σ(x)·(1 + x·(1−σ(x))).
func siluGrad(x float32) float32 {
	s := sigmoid(x)
	return s * (1 + x*(1-s))
}

// SiLUBackward accumulates dx += dout · silu'(x).
func SiLUBackward(dx, dout, x []float32, n int) {
	need("SiLUBackward", "dx", dx, n)
	need("SiLUBackward", "dout", dout, n)
	need("SiLUBackward", "x", x, n)
	elementwise(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dx[i] += dout[i] * siluGrad(x[i])
		}
	})
}

// SwiGLUForward sets out = silu(gate) ⊙ up over n elements.
func SwiGLUForward(out, gate, up []float32, n int) {
	need("SwiGLUForward", "out", out, n)
	need("SwiGLUForward", "gate", gate, n)
	need("SwiGLUForward", "up", up, n)
	elementwise(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := gate[i]
			out[i] = g * sigmoid(g) * up[i]
		}
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
		for i := lo; i < hi; i++ {
			g := gate[i]
			s := sigmoid(g)
			if dgate != nil {
				dgate[i] += dout[i] * up[i] * s * (1 + g*(1-s))
			}
			if dup != nil {
				dup[i] += dout[i] * g * s
			}
		}
	})
}
