package autograd

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// SiLU returns x·σ(x) elementwise.
func (tp *Tape) SiLU(x *Var) *Var {
	out := tensor.New(x.Value.Shape...)
	n := out.Numel()
	fused.SiLUForward(out.Data, x.Value.F32(), n)
	return tp.Result(out, func(o *Var) {
		fused.SiLUBackward(x.GradBuf().Data, o.Grad.Data, x.Value.Data, n)
	}, x)
}

// SwiGLU returns silu(gate) ⊙ up for two tensors of the same shape, the
// LLaMA feed-forward's gating.
func (tp *Tape) SwiGLU(gate, up *Var) *Var {
	if !tensor.SameShape(gate.Value.Shape, up.Value.Shape) {
		panicShapes("SwiGLU", gate.Value.Shape, up.Value.Shape)
	}
	out := tensor.New(gate.Value.Shape...)
	n := out.Numel()
	fused.SwiGLUForward(out.Data, gate.Value.F32(), up.Value.F32(), n)
	return tp.resultSaving(out, func(o *Var) {
		fused.SwiGLUBackward(gradOrNil(gate), gradOrNil(up), o.Grad.Data, gate.Value.Data, up.Value.Data, n)
	}, []*Var{gate, up}, gate, up)
}

// Softmax returns the softmax of x over its last dimension.
func (tp *Tape) Softmax(x *Var) *Var {
	out := tensor.New(x.Value.Shape...)
	rows, cols := x.Value.Rows(), x.Value.Cols()
	fused.SoftmaxForward(out.Data, x.Value.F32(), rows, cols)
	return tp.Result(out, func(o *Var) {
		fused.SoftmaxBackward(x.GradBuf().Data, o.Grad.Data, out.Data, rows, cols)
	}, x)
}

// Dropout zeroes each element with probability p and scales the rest by
// 1/(1−p) (inverted dropout). Whether element i is kept is a pure function
// of (seed, i), so the mask does not depend on threads and the backward
// recomputes it instead of storing it. With p == 0 or a nil tape (inference)
// it returns x itself.
func (tp *Tape) Dropout(x *Var, p float32, seed uint64) *Var {
	if p < 0 || p >= 1 || math.IsNaN(float64(p)) {
		panic(fmt.Sprintf("autograd.Dropout: probability %v outside [0,1)", p))
	}
	if tp == nil || p == 0 {
		return x
	}
	out := tensor.New(x.Value.Shape...)
	xv := x.Value.F32()
	scale := 1 / (1 - p)
	dropoutApply(out.Data, xv, p, scale, seed, false)
	return tp.resultSaving(out, func(o *Var) { // the mask is recomputed: no value read
		dropoutApply(x.GradBuf().Data, o.Grad.Data, p, scale, seed, true)
	}, nil, x)
}

// DropoutKeep reports whether Dropout(·, p, seed) keeps element i.
func DropoutKeep(seed uint64, i int, p float32) bool {
	// splitmix64 of (seed, i): a well-mixed 64-bit hash; its top 24 bits
	// give a uniform value in [0, 1) with float32 resolution.
	z := seed + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float32(z>>40)*(1.0/(1<<24)) >= p
}

// dropoutApply writes (or adds) src⊙mask·scale into dst.
func dropoutApply(dst, src []float32, p, scale float32, seed uint64, acc bool) {
	n := len(src)
	parallel.For(n, parallel.Grain(n, 1<<14), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			var y float32
			if DropoutKeep(seed, i, p) {
				y = src[i] * scale
			}
			if acc {
				dst[i] += y
			} else {
				dst[i] = y
			}
		}
	})
}
