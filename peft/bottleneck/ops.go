package bottleneck

import (
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/tensor"
)

// Relu is max(x, 0) elementwise.
func Relu(tp *autograd.Tape, x *autograd.Var) *autograd.Var {
	return unary(tp, x, func(v float32) float32 { return max(v, 0) }, func(_, y float32) float32 {
		if y > 0 {
			return 1
		}
		return 0
	})
}

// Tanh is tanh elementwise.
func Tanh(tp *autograd.Tape, x *autograd.Var) *autograd.Var {
	return unary(tp, x, func(v float32) float32 { return float32(math.Tanh(float64(v))) }, func(_, y float32) float32 { return 1 - y*y })
}

// unary is an elementwise op y = f(x) with dy/dx = df(x, y).
func unary(tp *autograd.Tape, x *autograd.Var, f func(float32) float32, df func(x, y float32) float32) *autograd.Var {
	out := tensor.New(x.Value.Shape...)
	xs := x.Value.F32()
	for i, v := range xs {
		out.Data[i] = f(v)
	}
	return tp.Result(out, func(o *autograd.Var) {
		g := x.GradBuf().Data
		for i, y := range out.Data {
			g[i] += o.Grad.Data[i] * df(xs[i], y)
		}
	}, x)
}
