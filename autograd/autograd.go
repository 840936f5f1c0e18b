// Package autograd is gopeft's reverse-mode automatic differentiation.
//
// A Tape records each operation's backward as it runs forward; Backward
// replays them in reverse. Parameters are either trainable or frozen: a
// frozen tensor never gets a gradient buffer, and an operation skips every
// product whose only use would be a frozen tensor's gradient (for a frozen
// Linear weight, the dW = dYᵀ·X GEMM is never run). A nil *Tape is valid and
// records nothing: the same model code then runs as plain inference.
//
// Every operation is deterministic: results do not depend on the number of
// threads (see tensor/parallel).
//
// Tensors are seen as matrices [rows, cols] with leading dimensions
// flattened; a batch of B sequences of T tokens is B·T rows, row b·T+t. The
// ops: Linear, AddLinear and MatMul (matmul.go); Add, Mul, Scale, Sum, Mean,
// Reshape (arith.go); RMSNorm and RoPE (norm.go); SiLU, SwiGLU, Softmax,
// Dropout (activation.go); Attention (attention.go); Embedding, GatherRows,
// ConcatSeq (rows.go); CrossEntropy and LMHeadCrossEntropy (loss.go). The
// loops behind them live in tensor/fused.
package autograd

import (
	"fmt"
	"slices"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
)

// Var is a value in the computation: a tensor, its gradient (when it
// requires one) and the name it is reported under.
type Var struct {
	Value *tensor.Tensor
	// Grad accumulates dLoss/dValue. It is nil until Backward reaches the
	// value, and stays nil for values that do not require a gradient.
	Grad         *tensor.Tensor
	Name         string
	requiresGrad bool
	// saved is set when a recorded backward reads the value (PyTorch's
	// save_for_backward): DropUnsaved keeps it.
	saved bool
	// tape is set on intermediate results: their gradient buffers come from
	// and go back to the tape's free list.
	tape *Tape
}

// Param wraps a model tensor. Trainable parameters accumulate gradients
// across Backward calls until ZeroGrad; frozen ones never allocate any.
func Param(name string, t *tensor.Tensor, trainable bool) *Var {
	if trainable && t.DType() != tensor.F32 {
		panic(fmt.Sprintf("autograd.Param %s: trainable tensors must be float32, got %v", name, t.DType()))
	}
	return &Var{Value: t, Name: name, requiresGrad: trainable}
}

// Const wraps a tensor that needs no gradient (inputs, masks).
func Const(t *tensor.Tensor) *Var { return &Var{Value: t} }

// RequiresGrad reports whether gradients flow to v.
func (v *Var) RequiresGrad() bool { return v.requiresGrad }

// SetTrainable marks a leaf trainable or frozen. Freezing drops its gradient.
func (v *Var) SetTrainable(on bool) {
	v.requiresGrad = on
	if !on {
		v.Grad = nil
	}
}

// Shape is the value's shape.
func (v *Var) Shape() []int { return v.Value.Shape }

// ZeroGrad clears the accumulated gradient, keeping its buffer.
func (v *Var) ZeroGrad() {
	if v.Grad != nil {
		v.Grad.Zero()
	}
}

// GradBuf returns the gradient buffer, allocating zeros on first use. Ops
// call it only for values that require a gradient.
func (v *Var) GradBuf() *tensor.Tensor {
	if v.Grad == nil {
		if v.tape != nil {
			v.Grad = v.tape.zeros(v.Value.Shape)
		} else {
			v.Grad = tensor.New(v.Value.Shape...)
		}
	}
	return v.Grad
}

// gradOrNil is v's gradient buffer when a gradient flows to v, else nil:
// what the fused backward loops take for an input they may skip.
func gradOrNil(v *Var) []float32 {
	if v == nil || !v.requiresGrad {
		return nil
	}
	return v.GradBuf().Data
}

// passGrad adds out's gradient into dst's. When dst is an intermediate with
// no gradient yet, it takes out's buffer instead of copying it: out's
// backward is running, so nothing reads out.Grad afterwards. Ops whose
// gradient passes through unchanged (Add, Reshape) use it.
func (out *Var) passGrad(dst *Var) {
	if dst.Grad == nil && dst.tape != nil && out.tape == dst.tape {
		dst.Grad = tensor.FromData(out.Grad.Data, dst.Value.Shape...)
		out.Grad = nil
		return
	}
	fused.Axpy(dst.GradBuf().Data, 1, out.Grad.Data, len(out.Grad.Data))
}

// Tape records the backward closures of the ops run on it.
//
// Memory: an intermediate's gradient is complete when its backward runs and
// nothing reads it afterwards, so the tape takes the buffer back right then
// and hands it to the next gradient of the same size. Only a few layers'
// gradients are then alive at once instead of every intermediate's.
type Tape struct {
	backward []func()
	temps    []*Var
	free     map[int][]*tensor.Tensor // released gradient buffers by length
}

// NewTape returns an empty tape.
func NewTape() *Tape { return &Tape{} }

// Recording reports whether ops on tp record anything (tp is non-nil).
func (tp *Tape) Recording() bool { return tp != nil }

// Result makes the output Var of an op over inputs. If the tape records and
// any input requires a gradient, the output requires one too and backward is
// recorded; backward is called with the output once its gradient is
// complete, and must add into the inputs' GradBuf() only where
// RequiresGrad() holds. Op implementations outside this package (fused
// model ops, PEFT methods) use it the same way.
//
// Result assumes that backward reads the values of every input and of the
// output (DropUnsaved keeps them); the ops of this package that read fewer
// say which (resultSaving).
func (tp *Tape) Result(value *tensor.Tensor, backward func(out *Var), inputs ...*Var) *Var {
	out := tp.resultSaving(value, backward, inputs, inputs...)
	if out.tape != nil {
		out.saved = true
	}
	return out
}

// resultSaving is Result for an op whose backward reads the values of
// saved only (not its output's): the values of the other inputs may be
// dropped once the forward is past them (DropUnsaved).
func (tp *Tape) resultSaving(value *tensor.Tensor, backward func(out *Var), saved []*Var, inputs ...*Var) *Var {
	out := &Var{Value: value}
	if tp == nil || backward == nil {
		return out
	}
	for _, in := range inputs {
		if in != nil && in.requiresGrad {
			out.requiresGrad = true
			break
		}
	}
	if out.requiresGrad {
		for _, v := range saved {
			if v != nil {
				v.saved = true
			}
		}
		out.tape = tp
		tp.temps = append(tp.temps, out)
		tp.backward = append(tp.backward, func() {
			if out.Grad != nil { // no gradient reached it: nothing to pass on
				backward(out)
				tp.release(out)
			}
		})
	}
	return out
}

// Backward seeds loss (a single value) with gradient 1 and runs every
// recorded backward in reverse order. Then it releases the intermediate
// gradients and clears the tape; parameters keep theirs.
func (tp *Tape) Backward(loss *Var) {
	if loss.Value.Numel() != 1 {
		panic(fmt.Sprintf("autograd.Backward: loss must hold one value, has shape %v", loss.Value.Shape))
	}
	if !loss.requiresGrad {
		panic("autograd.Backward: the loss does not depend on any trainable parameter")
	}
	loss.GradBuf().Data[0] += 1
	tp.replay()
}

// BackwardFrom seeds out with the gradient grad (same shape) instead of a
// scalar loss's 1, then runs Backward's replay: the vector-Jacobian product
// that gradient checks and custom losses need.
func (tp *Tape) BackwardFrom(out *Var, grad *tensor.Tensor) {
	if !tensor.SameShape(out.Value.Shape, grad.Shape) {
		panicShapes("BackwardFrom", out.Value.Shape, grad.Shape)
	}
	if !out.requiresGrad {
		panic("autograd.BackwardFrom: the output does not depend on any trainable parameter")
	}
	g := out.GradBuf().Data
	for i, v := range grad.F32() {
		g[i] += v
	}
	tp.replay()
}

// replay runs every recorded backward in reverse order, then resets the tape.
func (tp *Tape) replay() {
	for i := len(tp.backward) - 1; i >= 0; i-- {
		tp.backward[i]()
		tp.backward[i] = nil
	}
	tp.Reset()
}

// Reset forgets everything recorded, releasing intermediate gradients.
func (tp *Tape) Reset() {
	for _, t := range tp.temps {
		t.Grad = nil
	}
	tp.backward = tp.backward[:0]
	tp.temps = tp.temps[:0]
	tp.free = nil
}

// zeros returns a zeroed buffer of the given shape, reusing a released one.
func (tp *Tape) zeros(shape []int) *tensor.Tensor {
	n := tensor.Numel(shape)
	if l := tp.free[n]; len(l) > 0 {
		t := l[len(l)-1]
		tp.free[n] = l[:len(l)-1]
		clear(t.Data)
		return tensor.FromData(t.Data, shape...)
	}
	return tensor.New(shape...)
}

// Mark is the tape's position for DropUnsaved: the intermediates recorded
// from now on.
func (tp *Tape) Mark() int {
	if tp == nil {
		return 0
	}
	return len(tp.temps)
}

// DropUnsaved lets go of the values of the intermediates recorded since
// mark that no recorded backward reads, except those in keep: the values
// the forward still reads after this point. A model calls it after each
// decoder block, keeping the block's output: the inputs of frozen products
// (the normed input of gate/up, SwiGLU's output before down_proj) and the
// products that only feed a sum are then freed at once instead of living
// until the backward reaches them, about a third of a LLaMA block's
// activations when only a few of its Linears are adapted. A dropped value
// keeps its shape and has no elements.
func (tp *Tape) DropUnsaved(mark int, keep ...*Var) {
	if tp == nil {
		return
	}
	for _, v := range tp.temps[mark:] {
		if v.saved || slices.Contains(keep, v) {
			continue
		}
		v.Value = &tensor.Tensor{Shape: v.Value.Shape}
	}
}

// release takes back v's finished gradient buffer.
func (tp *Tape) release(v *Var) {
	if v.Grad == nil || len(v.Grad.Data) == 0 {
		return
	}
	if tp.free == nil {
		tp.free = map[int][]*tensor.Tensor{}
	}
	n := len(v.Grad.Data)
	tp.free[n] = append(tp.free[n], v.Grad)
	v.Grad = nil
}

// panicShapes reports an internal shape bug naming the op and both shapes.
func panicShapes(op string, a, b []int) {
	panic(fmt.Sprintf("autograd.%s: shape mismatch %v vs %v", op, a, b))
}
