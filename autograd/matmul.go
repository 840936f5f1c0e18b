package autograd

import (
	"fmt"
	"sync/atomic"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
	"github.com/gopeft/gopeft/tensor/kernels"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// weightGradGEMMs counts weight-gradient products; see WeightGradGEMMs.
var weightGradGEMMs atomic.Int64

// WeightGradGEMMs reports how many weight-gradient products (Linear's
// dW = dYᵀ·X and LMHeadCrossEntropy's dW, one per call or chunk) have run in
// this process. Tests use it to prove that frozen weights cost no GEMM.
func WeightGradGEMMs() int64 { return weightGradGEMMs.Load() }

// gemm runs C (+)= op(A)·op(B) for tensors seen as matrices, using the bf16
// kernel when B is stored in bf16 and the dequantizing kernels (GemmQ4,
// GemmQ8) when B is quantized: a frozen weight W [out, in] is then read in
// its 4- or 8-bit form for the forward x·Wᵀ and the backward dy·W alike,
// never copied whole to float32.
func gemm(transA, transB bool, m, n, k int, a *tensor.Tensor, b *tensor.Tensor, c []float32, accumulate bool) {
	lda, ldb := a.Cols(), b.Cols()
	if b.Quantized() {
		if transA {
			panic(fmt.Sprintf("autograd: a %v tensor %v as the right operand of a transposed-A product", b.DType(), b.Shape))
		}
		if b.Q4 != nil {
			kernels.GemmQ4(transB, m, n, k, a.F32(), lda, b.Q4, c, n, accumulate)
		} else {
			kernels.GemmQ8(transB, m, n, k, a.F32(), lda, b.Q8, c, n, accumulate)
		}
		return
	}
	if b.DType() == tensor.BF16 {
		if transA {
			panic("autograd: bf16 tensor as the right operand of a transposed-A product")
		}
		kernels.GemmBF16(transB, m, n, k, a.F32(), lda, b.Half, ldb, c, n, accumulate)
		return
	}
	kernels.Gemm(transA, transB, m, n, k, a.F32(), lda, b.Data, ldb, c, n, accumulate)
}

// Few-row products (decoding) read every weight once and are memory-bound;
// the kernels run the smaller ones on a single thread. linearsForward splits
// such a product's outputs (the weights' rows) over the threads so every
// core streams its share; parallel's workers spin between calls, so even a
// layer of stories15M (288×288) is worth splitting. Each output is the same dot product either way
// (the kernels' results do not depend on how columns are grouped), so the
// split changes no bits.
const (
	splitMaxRows    = 16      // at most this many input rows
	splitMinWeights = 1 << 16 // at least this many weights (all of them, for Linears): below, the hand-off costs more than it saves
	splitAlign      = 16      // chunks of whole cache lines of outputs
)

// linearForward sets y [rows, out] = x·wᵀ for w [out, in].
func linearForward(rows, out, in int, x, w *tensor.Tensor, y []float32) {
	linearsForward(rows, in, x, []*tensor.Tensor{w}, [][]float32{y})
}

// linearsForward sets ys[i] [rows, out_i] = x·ws[i]ᵀ for weights ws[i]
// [out_i, in]. A few-row product over enough weights is one parallel split
// over the weights' rows taken end to end (so that Q, K and V, or gate and
// up, share one hand-off and balance across the threads); otherwise each is
// one kernel call.
func linearsForward(rows, in int, x *tensor.Tensor, ws []*tensor.Tensor, ys [][]float32) {
	th := parallel.Threads()
	total, quantized := 0, false
	for _, w := range ws {
		total += w.Shape[0]
		quantized = quantized || w.Quantized()
	}
	// The quantized kernels split few-row products over the threads
	// themselves (a block of 4-bit codes may cross rows).
	if quantized || rows > splitMaxRows || total*in < splitMinWeights || th == 1 || total < 2*splitAlign {
		for i, w := range ws {
			gemm(false, true, rows, w.Shape[0], in, x, w, ys[i], false)
		}
		return
	}
	chunk := ((total+th-1)/th + splitAlign - 1) / splitAlign * splitAlign
	xs := x.F32()
	parallel.For(total, chunk, func(lo, hi int) {
		base := 0 // first row of ws[i] in the end-to-end order
		for i, w := range ws {
			out := w.Shape[0]
			a, b := max(lo-base, 0), min(hi-base, out)
			base += out
			if a >= b {
				continue
			}
			if w.DType() == tensor.BF16 {
				kernels.GemmBF16(true, rows, b-a, in, xs, in, w.Half[a*in:b*in], in, ys[i][a:], out, false)
			} else {
				kernels.Gemm(false, true, rows, b-a, in, xs, in, w.Data[a*in:b*in], in, ys[i][a:], out, false)
			}
		}
	})
}

// Linears computes x·wᵢᵀ for several weights [out_i, in] sharing the input
// x [..., in]: exactly what one Linear per weight gives, with the few-row
// (decoding) products split over the threads together. Gradients are as
// Linear's.
func (tp *Tape) Linears(x *Var, ws ...*Var) []*Var {
	in := x.Value.Cols()
	rows := x.Value.Rows()
	vals := make([]*tensor.Tensor, len(ws))
	ys := make([]*tensor.Tensor, len(ws))
	data := make([][]float32, len(ws))
	for i, w := range ws {
		if len(w.Value.Shape) != 2 || w.Value.Shape[1] != in {
			panicShapes("Linears", x.Value.Shape, w.Value.Shape)
		}
		vals[i] = w.Value
		ys[i] = tensor.New(append(append([]int(nil), x.Value.Shape[:len(x.Value.Shape)-1]...), w.Value.Shape[0])...)
		data[i] = ys[i].Data
	}
	linearsForward(rows, in, x.Value, vals, data)
	outs := make([]*Var, len(ws))
	for i, w := range ws {
		outs[i] = tp.linearResult(x, w, ys[i])
	}
	return outs
}

// Linear computes x·wᵀ for x [..., in] and w [out, in] (PyTorch's layout),
// giving [..., out]. Backward: dx += dy·w, and dw += dyᵀ·x only when w is
// trainable. w may be bf16 when frozen.
func (tp *Tape) Linear(x, w *Var) *Var {
	if len(w.Value.Shape) != 2 || x.Value.Cols() != w.Value.Shape[1] {
		panicShapes("Linear", x.Value.Shape, w.Value.Shape)
	}
	out, in := w.Value.Shape[0], w.Value.Shape[1]
	rows := x.Value.Rows()
	shape := append(append([]int(nil), x.Value.Shape[:len(x.Value.Shape)-1]...), out)
	y := tensor.New(shape...)
	linearForward(rows, out, in, x.Value, w.Value, y.Data)
	return tp.linearResult(x, w, y)
}

// linearResult records y = x·wᵀ's backward.
func (tp *Tape) linearResult(x, w *Var, y *tensor.Tensor) *Var {
	out, in := w.Value.Shape[0], w.Value.Shape[1]
	rows := x.Value.Rows()
	var saved []*Var // x's value only for a trainable weight's gradient
	if w.requiresGrad {
		saved = []*Var{x}
	}
	return tp.resultSaving(y, func(y *Var) {
		if x.requiresGrad {
			gemm(false, false, rows, in, out, y.Grad, w.Value, x.GradBuf().Data, true)
		}
		if w.requiresGrad {
			weightGradGEMMs.Add(1)
			gemm(true, false, out, in, rows, y.Grad, x.Value, w.GradBuf().Data, true)
		}
	}, saved, x, w)
}

// MatMul computes op(a)·op(b) for 2-D a and b, where op transposes when the
// flag is set.
func (tp *Tape) MatMul(a, b *Var, transA, transB bool) *Var {
	if len(a.Value.Shape) != 2 || len(b.Value.Shape) != 2 {
		panicShapes("MatMul", a.Value.Shape, b.Value.Shape)
	}
	m, k := a.Value.Shape[0], a.Value.Shape[1]
	if transA {
		m, k = k, m
	}
	kb, n := b.Value.Shape[0], b.Value.Shape[1]
	if transB {
		kb, n = n, kb
	}
	if k != kb {
		panicShapes("MatMul", a.Value.Shape, b.Value.Shape)
	}
	c := tensor.New(m, n)
	gemm(transA, transB, m, n, k, a.Value, b.Value, c.Data, false)
	return tp.Result(c, func(c *Var) {
		dc := c.Grad
		if a.requiresGrad { // dA = dC·op(B)ᵀ, stored transposed when transA
			if transA {
				gemm(transB, true, k, m, n, b.Value, dc, a.GradBuf().Data, true)
			} else {
				gemm(false, !transB, m, k, n, dc, b.Value, a.GradBuf().Data, true)
			}
		}
		if b.requiresGrad { // dB = op(A)ᵀ·dC, stored transposed when transB
			if transB {
				gemm(true, transA, n, k, m, dc, a.Value, b.GradBuf().Data, true)
			} else {
				gemm(!transA, false, k, n, m, a.Value, dc, b.GradBuf().Data, true)
			}
		}
	}, a, b)
}

// AddLinear returns y + s·(x·wᵀ) for x [..., in], w [out, in] and y
// [..., out]: one product accumulated onto a copy of y, instead of a product,
// a scaled copy and a sum (each a full [rows, out] tensor with its own
// gradient). It is LoRA's update y + s·(x·Aᵀ)·Bᵀ with x = x·Aᵀ, w = B; the
// scale is applied to x, the narrow operand.
func (tp *Tape) AddLinear(y, x, w *Var, s float32) *Var {
	if len(w.Value.Shape) != 2 || x.Value.Cols() != w.Value.Shape[1] || x.Value.Rows() != y.Value.Rows() || y.Value.Cols() != w.Value.Shape[0] {
		panicShapes("AddLinear", x.Value.Shape, w.Value.Shape)
	}
	out, in, rows := w.Value.Shape[0], w.Value.Shape[1], x.Value.Rows()
	xs := tensor.New(x.Value.Shape...)
	fused.Scale(xs.Data, s, x.Value.F32(), len(xs.Data))
	z := y.Value.Clone()
	gemm(false, true, rows, out, in, xs, w.Value, z.Data, true)
	return tp.resultSaving(z, func(o *Var) { // reads its own copy xs, and w
		if x.requiresGrad { // dx += s·(dz·w)
			dxs := tensor.New(rows, in)
			gemm(false, false, rows, in, out, o.Grad, w.Value, dxs.Data, false)
			fused.Axpy(x.GradBuf().Data, s, dxs.Data, len(dxs.Data))
		}
		if w.requiresGrad { // dw += dzᵀ·(s·x)
			weightGradGEMMs.Add(1)
			gemm(true, false, out, in, rows, o.Grad, xs, w.GradBuf().Data, true)
		}
		if y.requiresGrad { // last: y may take o's buffer
			o.passGrad(y)
		}
	}, []*Var{w}, y, x, w)
}
