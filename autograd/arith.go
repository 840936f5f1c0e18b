package autograd

import (
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
)

// broadcastRow reports how b combines with a: false for the same shape,
// true for a vector of a's last dimension ([cols] or [1, cols]) broadcast
// over a's rows. Any other pair panics naming both shapes.
func broadcastRow(op string, a, b *Var) bool {
	as, bs := a.Value.Shape, b.Value.Shape
	if tensor.SameShape(as, bs) {
		return false
	}
	if len(as) > 0 && b.Value.Numel() == a.Value.Cols() && (len(bs) == 1 || (len(bs) == 2 && bs[0] == 1)) {
		return true
	}
	panicShapes(op, as, bs)
	return false
}

// Add returns a + b, where b has a's shape or is a vector of a's last
// dimension added to every row (a bias or a shift).
func (tp *Tape) Add(a, b *Var) *Var {
	bc := broadcastRow("Add", a, b)
	out := tensor.New(a.Value.Shape...)
	n, rows, cols := out.Numel(), a.Value.Rows(), a.Value.Cols()
	if bc {
		fused.AddRow(out.Data, a.Value.F32(), b.Value.F32(), rows, cols)
	} else {
		fused.Add(out.Data, a.Value.F32(), b.Value.F32(), n)
	}
	return tp.resultSaving(out, func(o *Var) { // reads no value
		if b.requiresGrad { // before a may take o's buffer
			if bc {
				fused.SumRows(b.GradBuf().Data, o.Grad.Data, rows, cols)
			} else if !a.requiresGrad {
				o.passGrad(b)
			} else {
				fused.Axpy(b.GradBuf().Data, 1, o.Grad.Data, n)
			}
		}
		if a.requiresGrad {
			o.passGrad(a)
		}
	}, nil, a, b)
}

// Mul returns a ⊙ b elementwise, with Add's broadcast rule for b (a
// per-feature scale such as IA³ or SSF).
func (tp *Tape) Mul(a, b *Var) *Var {
	bc := broadcastRow("Mul", a, b)
	out := tensor.New(a.Value.Shape...)
	n, rows, cols := out.Numel(), a.Value.Rows(), a.Value.Cols()
	av, bv := a.Value.F32(), b.Value.F32()
	if bc {
		fused.MulRow(out.Data, av, bv, rows, cols)
	} else {
		fused.Mul(out.Data, av, bv, n)
	}
	return tp.Result(out, func(o *Var) {
		g := o.Grad.Data
		if a.requiresGrad {
			if bc {
				fused.MulRowAcc(a.GradBuf().Data, g, bv, rows, cols)
			} else {
				fused.MulAcc(a.GradBuf().Data, g, bv, n)
			}
		}
		if b.requiresGrad {
			if bc {
				fused.SumRowsMul(b.GradBuf().Data, g, av, rows, cols)
			} else {
				fused.MulAcc(b.GradBuf().Data, g, av, n)
			}
		}
	}, a, b)
}

// Scale returns s·a.
func (tp *Tape) Scale(a *Var, s float32) *Var {
	out := tensor.New(a.Value.Shape...)
	n := out.Numel()
	fused.Scale(out.Data, s, a.Value.F32(), n)
	return tp.Result(out, func(o *Var) {
		fused.Axpy(a.GradBuf().Data, s, o.Grad.Data, n)
	}, a)
}

// Sum returns the sum of every element of a as a one-element tensor [1],
// accumulated in float64 in a fixed order.
func (tp *Tape) Sum(a *Var) *Var { return tp.total("Sum", a, false) }

// Mean returns the mean of every element of a as a one-element tensor [1].
func (tp *Tape) Mean(a *Var) *Var { return tp.total("Mean", a, true) }

func (tp *Tape) total(op string, a *Var, mean bool) *Var {
	n := a.Value.Numel()
	if mean && n == 0 {
		panicShapes(op, a.Value.Shape, []int{1})
	}
	s := fused.Sum(a.Value.F32(), n)
	k := float32(1)
	if mean {
		s /= float64(n)
		k = 1 / float32(n)
	}
	out := tensor.FromData([]float32{float32(s)}, 1)
	return tp.Result(out, func(o *Var) {
		addConst(a.GradBuf().Data, k*o.Grad.Data[0])
	}, a)
}

// addConst adds c to every element of dst.
func addConst(dst []float32, c float32) {
	for i := range dst {
		dst[i] += c
	}
}

// Reshape returns a view of a with a new shape of the same element count
// (one dimension may be -1); the value shares a's storage and gradients flow
// back to a.
func (tp *Tape) Reshape(a *Var, shape ...int) *Var {
	out := a.Value.Reshape(shape...)
	return tp.resultSaving(out, func(o *Var) {
		o.passGrad(a)
	}, nil, a)
}
