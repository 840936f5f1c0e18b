package autograd

import (
	"fmt"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
)

// IgnoreIndex marks a target that contributes nothing to a loss.
const IgnoreIndex = fused.IgnoreIndex

// meanLoss sums per-row losses in row order (float64) and divides by the
// number of targets counted (0 when there are none).
func meanLoss(losses []float32, n int) float32 {
	if n == 0 {
		return 0
	}
	var s float64
	for _, l := range losses {
		s += float64(l)
	}
	return float32(s / float64(n))
}

// CrossEntropy returns the mean over rows whose target is not IgnoreIndex of
// −log softmax(logits[row])[target], as a one-element tensor; logits is
// [rows, classes]. With every target ignored the loss is 0 (PyTorch gives
// NaN) and no gradient flows.
func (tp *Tape) CrossEntropy(logits *Var, targets []int) *Var {
	rows, classes := logits.Value.Rows(), logits.Value.Cols()
	if len(targets) != rows {
		panic(fmt.Sprintf("autograd.CrossEntropy: %d targets for logits of shape %v", len(targets), logits.Value.Shape))
	}
	n := fused.CheckTargets("autograd.CrossEntropy", targets, classes)
	targets = append([]int(nil), targets...)
	losses, lse := make([]float32, rows), make([]float32, rows)
	lv := logits.Value.F32()
	fused.CrossEntropyForward(losses, lse, lv, targets, rows, classes)
	out := tensor.FromData([]float32{meanLoss(losses, n)}, 1)
	return tp.Result(out, func(o *Var) {
		if n == 0 {
			return
		}
		scale := o.Grad.Data[0] / float32(n)
		fused.CrossEntropyBackward(logits.GradBuf().Data, lv, lse, targets, rows, classes, scale, true)
	}, logits)
}

// LMHeadCrossEntropy fuses the LM head with CrossEntropy: logits = h·wᵀ for
// h [rows, d] and w [V, d] (float32, or bf16 when frozen), and the mean
// cross-entropy against targets. Only rows whose target is not IgnoreIndex
// are computed, chunkRows of them at a time, so no more than chunkRows×V
// logits exist at once. The backward recomputes each chunk's logits, turns
// them into softmax − onehot in place and accumulates dh, and dw only when w
// is trainable.
func (tp *Tape) LMHeadCrossEntropy(h, w *Var, targets []int, chunkRows int) *Var {
	if len(w.Value.Shape) != 2 || h.Value.Cols() != w.Value.Shape[1] {
		panicShapes("LMHeadCrossEntropy", h.Value.Shape, w.Value.Shape)
	}
	rows, dim, vocab := h.Value.Rows(), h.Value.Cols(), w.Value.Shape[0]
	if len(targets) != rows {
		panic(fmt.Sprintf("autograd.LMHeadCrossEntropy: %d targets for h of shape %v", len(targets), h.Value.Shape))
	}
	if chunkRows <= 0 {
		chunkRows = 64
	}
	fused.CheckTargets("autograd.LMHeadCrossEntropy", targets, vocab)
	// Compact the counted rows: their indices and their targets.
	var idx, tgt []int
	for r, t := range targets {
		if t != IgnoreIndex {
			idx = append(idx, r)
			tgt = append(tgt, t)
		}
	}
	n := len(idx)
	chunkRows = min(chunkRows, max(n, 1))
	hv := h.Value.F32()
	hc := make([]float32, chunkRows*dim)
	logits := make([]float32, chunkRows*vocab)
	// chunk gathers counted rows [lo, hi) of h into hc and computes their
	// logits; it returns both as tensors.
	chunk := func(lo, hi int) (*tensor.Tensor, *tensor.Tensor) {
		c := hi - lo
		for i, r := range idx[lo:hi] {
			copy(hc[i*dim:(i+1)*dim], hv[r*dim:(r+1)*dim])
		}
		ht := tensor.FromData(hc[:c*dim], c, dim)
		lt := tensor.FromData(logits[:c*vocab], c, vocab)
		gemm(false, true, c, vocab, dim, ht, w.Value, lt.Data, false)
		return ht, lt
	}
	losses, lse := make([]float32, n), make([]float32, n)
	for lo := 0; lo < n; lo += chunkRows {
		hi := min(lo+chunkRows, n)
		_, lt := chunk(lo, hi)
		fused.CrossEntropyForward(losses[lo:hi], lse[lo:hi], lt.Data, tgt[lo:hi], hi-lo, vocab)
	}
	out := tensor.FromData([]float32{meanLoss(losses, n)}, 1)
	return tp.Result(out, func(o *Var) {
		if n == 0 {
			return
		}
		scale := o.Grad.Data[0] / float32(n)
		var dhc []float32
		if h.requiresGrad {
			dhc = make([]float32, chunkRows*dim)
		}
		for lo := 0; lo < n; lo += chunkRows {
			hi := min(lo+chunkRows, n)
			c := hi - lo
			ht, lt := chunk(lo, hi)
			fused.CrossEntropyBackward(lt.Data, lt.Data, lse[lo:hi], tgt[lo:hi], c, vocab, scale, false)
			if h.requiresGrad { // dh rows = dlogits·w, scattered back
				gemm(false, false, c, dim, vocab, lt, w.Value, dhc[:c*dim], false)
				dh := h.GradBuf().Data
				for i, r := range idx[lo:hi] {
					fused.Axpy(dh[r*dim:(r+1)*dim], 1, dhc[i*dim:(i+1)*dim], dim)
				}
			}
			if w.requiresGrad { // dw += dlogitsᵀ·h
				weightGradGEMMs.Add(1)
				gemm(true, false, vocab, dim, c, lt, ht, w.GradBuf().Data, true)
			}
		}
	}, h, w)
}
