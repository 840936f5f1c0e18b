package fused

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// IgnoreIndex marks a target row that contributes nothing to a
// cross-entropy loss (PyTorch's ignore_index default).
const IgnoreIndex = -100

// LogSumExp returns log Σ exp(x), stable against overflow: the sum of
// exp(x−max) is accumulated in float64.
func LogSumExp(x []float32) float32 {
	m := rowMax(x)
	if math.IsInf(float64(m), -1) {
		return m
	}
	return m + float32(math.Log(expSum(x, m, false)))
}

// expBlock is how many exponentials the helpers below form at once (on the
// stack) with ExpTo.
const expBlock = 256

// expSum returns Σ Exp(v − m) over x in float64. The sum goes by sixteen
// lanes folded in a fixed order (expSumGo), not element by element: one
// float64 add chain ran at a quarter of an element a cycle and was 6% of a
// stories15M training step's CPU (the LM head's whole log-sum-exp 14%).
// With keep, x is overwritten by the exponentials.
func expSum(x []float32, m float32, keep bool) float64 {
	var dst []float32
	if keep {
		dst = x
	}
	return expSumTo(dst, x, m)
}

// SoftmaxForward sets each row of out [rows, cols] to softmax of the same
// row of x; out may alias x.
func SoftmaxForward(out, x []float32, rows, cols int) {
	need("SoftmaxForward", "out", out, rows*cols)
	need("SoftmaxForward", "x", x, rows*cols)
	parallel.For(rows, rowGrain(rows, cols), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, or := x[r*cols:(r+1)*cols], out[r*cols:(r+1)*cols]
			m := rowMax(xr)
			for j, v := range xr {
				or[j] = v - m
			}
			ExpTo(or, or)
			var s float64
			for _, e := range or {
				s += float64(e)
			}
			inv := float32(1 / s)
			for j := range or {
				or[j] *= inv
			}
		}
	})
}

// SoftmaxBackward accumulates dx += y ⊙ (dout − Σ dout⊙y) per row, where y
// is SoftmaxForward's output.
func SoftmaxBackward(dx, dout, y []float32, rows, cols int) {
	n := rows * cols
	need("SoftmaxBackward", "dx", dx, n)
	need("SoftmaxBackward", "dout", dout, n)
	need("SoftmaxBackward", "y", y, n)
	parallel.For(rows, rowGrain(rows, cols), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			yr, dr, xr := y[r*cols:(r+1)*cols], dout[r*cols:(r+1)*cols], dx[r*cols:(r+1)*cols]
			c := dot(dr, yr)
			for j, v := range yr {
				xr[j] += v * (dr[j] - c)
			}
		}
	})
}

// CheckTargets panics, naming the row, if a target is neither IgnoreIndex
// nor a class in [0, classes), and returns how many rows are not ignored.
func CheckTargets(op string, targets []int, classes int) int {
	n := 0
	for r, t := range targets {
		if t == IgnoreIndex {
			continue
		}
		if t < 0 || t >= classes {
			panic(fmt.Sprintf("%s: target %d at row %d is outside [0,%d) and is not IgnoreIndex", op, t, r, classes))
		}
		n++
	}
	return n
}

// CrossEntropyForward computes, for each row of logits [rows, classes],
// lse[r] = log Σ exp(logits[r]) and loss[r] = lse[r] − logits[r, targets[r]]
// (0 for IgnoreIndex rows). Targets must have been checked.
func CrossEntropyForward(loss, lse, logits []float32, targets []int, rows, classes int) {
	need("CrossEntropyForward", "logits", logits, rows*classes)
	need("CrossEntropyForward", "loss", loss, rows)
	need("CrossEntropyForward", "lse", lse, rows)
	parallel.For(rows, rowGrain(rows, 4*classes), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			lr := logits[r*classes : (r+1)*classes]
			lse[r] = LogSumExp(lr)
			if t := targets[r]; t != IgnoreIndex {
				loss[r] = lse[r] - lr[t]
			} else {
				loss[r] = 0
			}
		}
	})
}

// CrossEntropyBackward forms scale·(softmax(logits[r]) − onehot(target))
// for every row not ignored: added into dlogits, or, unless accumulate,
// written over it (ignored rows then become 0). Without accumulate, dlogits
// may alias logits, which then becomes the gradient.
func CrossEntropyBackward(dlogits, logits, lse []float32, targets []int, rows, classes int, scale float32, accumulate bool) {
	xentGrad("CrossEntropyBackward", dlogits, logits, lse, targets, rows, classes, 0, scale, accumulate)
}

// CrossEntropyBlockGrad is CrossEntropyBackward (without accumulate) for a
// block of columns [col0, col0+cols) of the classes, given each row's full
// log-sum-exp: logits [rows, cols] becomes scale·(exp(logits − lse) −
// onehot) in place, the onehot term only where the target lies in the block.
func CrossEntropyBlockGrad(logits, lse []float32, targets []int, rows, cols, col0 int, scale float32) {
	xentGrad("CrossEntropyBlockGrad", logits, logits, lse, targets, rows, cols, col0, scale, false)
}

func xentGrad(op string, dlogits, logits, lse []float32, targets []int, rows, cols, col0 int, scale float32, accumulate bool) {
	need(op, "logits", logits, rows*cols)
	need(op, "dlogits", dlogits, rows*cols)
	need(op, "lse", lse, rows)
	parallel.For(rows, rowGrain(rows, 4*cols), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			lr, dr := logits[r*cols:(r+1)*cols], dlogits[r*cols:(r+1)*cols]
			t := targets[r]
			if t == IgnoreIndex {
				if !accumulate {
					clear(dr)
				}
				continue
			}
			m := lse[r]
			if accumulate {
				var buf [expBlock]float32
				for b := 0; b < cols; b += expBlock {
					e := buf[:min(expBlock, cols-b)]
					for j := range e {
						e[j] = lr[b+j] - m
					}
					ExpTo(e, e)
					for j, v := range e {
						dr[b+j] += scale * v
					}
				}
			} else { // dr may alias lr: each element is read before it is written
				for j, v := range lr {
					dr[j] = v - m
				}
				ExpTo(dr, dr)
				for j := range dr {
					dr[j] *= scale
				}
			}
			if t -= col0; t >= 0 && t < cols {
				dr[t] -= scale
			}
		}
	})
}

// LogSumExpBlock folds a block of columns [col0, col0+cols) of each row's
// logits x [rows, cols] into a running log-sum-exp: m[r] is the largest
// logit so far and s[r] = Σ exp(logit − m[r]) over the columns seen. Where
// targets[r] lies in the block, target[r] receives that logit. Start with
// m = −Inf and s = 0; after the last block, lse = m + log(s). The result
// depends only on the blocks, not on the thread count.
func LogSumExpBlock(m []float32, s []float64, target []float32, x []float32, targets []int, rows, cols, col0 int) {
	lseBlock("LogSumExpBlock", m, s, target, x, targets, rows, cols, col0, nil, 0)
}

// ExpBlock is LogSumExpBlock that keeps the exponentials, for a softmax
// gradient formed in the same pass over the vocabulary: x becomes
// exp(x − m[r]) in place (m[r] the running maximum after this block), and
// where the maximum grows, row r of acc [rows, accCols] (the caller's running
// Σ exp(logit − m)·w over earlier blocks) is rescaled to it. m, s and target
// get the same bits as with LogSumExpBlock.
func ExpBlock(m []float32, s []float64, target []float32, x []float32, targets []int, rows, cols, col0 int, acc []float32, accCols int) {
	need("ExpBlock", "acc", acc, rows*accCols)
	lseBlock("ExpBlock", m, s, target, x, targets, rows, cols, col0, acc, accCols)
}

func lseBlock(op string, m []float32, s []float64, target []float32, x []float32, targets []int, rows, cols, col0 int, acc []float32, accCols int) {
	need(op, "x", x, rows*cols)
	need(op, "m", m, rows)
	need(op, "target", target, rows)
	keep := acc != nil
	parallel.For(rows, rowGrain(rows, 4*cols), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr := x[r*cols : (r+1)*cols]
			if t := targets[r] - col0; t >= 0 && t < cols {
				target[r] = xr[t]
			}
			if bm := rowMax(xr); bm > m[r] {
				f := math.Exp(float64(m[r] - bm))
				if keep && !math.IsInf(float64(m[r]), -1) {
					ar := acc[r*accCols : (r+1)*accCols]
					for j := range ar {
						ar[j] *= float32(f)
					}
				}
				s[r] *= f
				m[r] = bm
			}
			if math.IsInf(float64(m[r]), -1) { // nothing finite yet: every exp is 0, not Exp(NaN)
				if keep {
					clear(xr)
				}
				continue
			}
			s[r] += expSum(xr, m[r], keep)
		}
	})
}
