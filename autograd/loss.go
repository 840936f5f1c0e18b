package autograd

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
	"github.com/gopeft/gopeft/tensor/kernels"
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
// are computed, and no more than chunkRows×V logits (chunkRows ≤ 0 means 64)
// exist at once: they are formed in tiles of up to lmTileRows(...) rows by a
// block of the vocabulary, with a running log-sum-exp across blocks, so that
// w is streamed (and packed for the GEMM) as few times as possible.
//
// When only h needs a gradient (a frozen head: LoRA and the like), the
// forward also forms dloss/dh per unit of loss gradient in the same pass,
// as a running Σ exp(logit − max)·w rescaled with the max (the online
// softmax of flash attention), so the backward is a scaled add. Otherwise
// the backward recomputes each tile's logits, turns them into softmax −
// onehot in place and accumulates dh, and dw when w is trainable.
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
	tileRows, block := lmTile(n, vocab, chunkRows)
	hv := h.Value.F32()
	hc := make([]float32, tileRows*dim)
	logits := make([]float32, tileRows*block)
	// gather copies counted rows [r0, r0+c) of h into hc.
	gather := func(r0, c int) *tensor.Tensor {
		for i, r := range idx[r0 : r0+c] {
			copy(hc[i*dim:(i+1)*dim], hv[r*dim:(r+1)*dim])
		}
		return tensor.FromData(hc[:c*dim], c, dim)
	}
	// tile computes the logits of the gathered rows against vocabulary
	// entries [v0, v0+vb).
	tile := func(ht *tensor.Tensor, v0, vb int) *tensor.Tensor {
		c := ht.Shape[0]
		lt := tensor.FromData(logits[:c*vb], c, vb)
		gemm(false, true, c, vb, dim, ht, w.Value.RowsView(v0, v0+vb), lt.Data, false)
		return lt
	}
	lse := make([]float32, n)
	var total float64
	m, s, tl := make([]float32, tileRows), make([]float64, tileRows), make([]float32, tileRows)
	var dhUnit []float32 // [n, dim]: dloss/dh rows for a loss gradient of n
	if tp != nil && h.requiresGrad && !w.requiresGrad {
		dhUnit = make([]float32, n*dim)
	}
	for r0 := 0; r0 < n; r0 += tileRows {
		c := min(tileRows, n-r0)
		ht := gather(r0, c)
		for i := range c {
			m[i], s[i] = float32(math.Inf(-1)), 0
		}
		for v0 := 0; v0 < vocab; v0 += block {
			vb := min(block, vocab-v0)
			lt := tile(ht, v0, vb)
			if dhUnit == nil {
				fused.LogSumExpBlock(m, s, tl, lt.Data, tgt[r0:r0+c], c, vb, v0)
				continue
			}
			acc := dhUnit[r0*dim : (r0+c)*dim]
			fused.ExpBlock(m, s, tl, lt.Data, tgt[r0:r0+c], c, vb, v0, acc, dim)
			gemm(false, false, c, dim, vb, lt, w.Value.RowsView(v0, v0+vb), acc, true)
		}
		for i := range c {
			lse[r0+i] = m[i] + float32(math.Log(s[i]))
			total += float64(lse[r0+i] - tl[i])
		}
		if dhUnit != nil { // softmax·w − w[target], row by row
			wt := make([]float32, dim)
			for i := range c {
				acc := dhUnit[(r0+i)*dim : (r0+i+1)*dim]
				fused.Scale(acc, float32(1/s[i]), acc, dim)
				fused.Axpy(acc, -1, rowF32(w.Value, tgt[r0+i], wt), dim)
			}
		}
	}
	var loss float32
	if n > 0 {
		loss = float32(total / float64(n))
	}
	return tp.Result(tensor.FromData([]float32{loss}, 1), func(o *Var) {
		if n == 0 {
			return
		}
		scale := o.Grad.Data[0] / float32(n)
		if dhUnit != nil {
			dh := h.GradBuf().Data
			for i, r := range idx {
				fused.Axpy(dh[r*dim:(r+1)*dim], scale, dhUnit[i*dim:(i+1)*dim], dim)
			}
			return
		}
		var dhc *tensor.Tensor
		if h.requiresGrad {
			dhc = tensor.New(tileRows, dim)
		}
		for r0 := 0; r0 < n; r0 += tileRows {
			c := min(tileRows, n-r0)
			ht := gather(r0, c)
			for v0 := 0; v0 < vocab; v0 += block {
				vb := min(block, vocab-v0)
				lt := tile(ht, v0, vb)
				fused.CrossEntropyBlockGrad(lt.Data, lse[r0:r0+c], tgt[r0:r0+c], c, vb, v0, scale)
				if dhc != nil { // dh rows += dlogits·w_block
					gemm(false, false, c, dim, vb, lt, w.Value.RowsView(v0, v0+vb), dhc.Data[:c*dim], v0 > 0)
				}
				if w.requiresGrad { // dw_block += dlogitsᵀ·h
					weightGradGEMMs.Add(1)
					gemm(true, false, vb, dim, c, lt, ht, w.GradBuf().Data[v0*dim:(v0+vb)*dim], true)
				}
			}
			if dhc != nil {
				dh := h.GradBuf().Data
				for i, r := range idx[r0 : r0+c] {
					fused.Axpy(dh[r*dim:(r+1)*dim], 1, dhc.Data[i*dim:(i+1)*dim], dim)
				}
			}
		}
	}, h, w)
}

// lmTile chooses LMHeadCrossEntropy's tile: rows × vocabulary block, at most
// chunkRows×vocab logits. Each tile's GEMM packs its rows of h and its block
// of w, so streaming w costs rows/tileRows passes and h vocab/block passes;
// with a fixed area that is least for a square tile, but all rows at once
// when they fit (w, far larger than h, is then read once).
func lmTile(rows, vocab, chunkRows int) (tileRows, block int) {
	budget := chunkRows * vocab
	side := int(math.Sqrt(float64(budget)))
	tileRows = max(1, min(rows, max(chunkRows, side)))
	block = max(1, min(vocab, budget/tileRows))
	return tileRows, block
}

// rowF32 returns row r of the matrix t in float32, converting into buf when
// t is bf16.
func rowF32(t *tensor.Tensor, r int, buf []float32) []float32 {
	if t.Half == nil {
		return t.Row(r)
	}
	c := t.Cols()
	kernels.BF16ToF32(buf[:c], t.Half[r*c:(r+1)*c])
	return buf[:c]
}
