package train

import (
	"math"

	"github.com/gopeft/gopeft/nn"
)

// gradSegments returns the trainable parameters that have a gradient and
// their segmentation.
func gradSegments(ps nn.Params) (nn.Params, []segment) {
	var with nn.Params
	var sizes []int
	for _, p := range Trainable(ps) {
		if p.Var.Grad != nil {
			with = append(with, p)
			sizes = append(sizes, len(p.Var.Grad.F32()))
		}
	}
	return with, segments(sizes)
}

// GradNorm returns the global L2 norm of the gradients of the trainable
// parameters in ps (those without a gradient count as zero). The squares are
// summed in float64 over fixed segments, combined in a fixed order, so the
// result does not depend on the thread count. A NaN or Inf anywhere makes
// the norm NaN or +Inf.
func GradNorm(ps nn.Params) float64 {
	with, segs := gradSegments(ps)
	partial := make([]float64, len(segs))
	forSegments(segs, func(k int, s segment) {
		g := with[s.p].Var.Grad.Data[s.lo:s.hi]
		// Four accumulators break the add dependency chain; the grouping is
		// fixed, so the sum is reproducible.
		var a0, a1, a2, a3 float64
		i := 0
		for ; i+4 <= len(g); i += 4 {
			x0, x1, x2, x3 := float64(g[i]), float64(g[i+1]), float64(g[i+2]), float64(g[i+3])
			a0 += x0 * x0
			a1 += x1 * x1
			a2 += x2 * x2
			a3 += x3 * x3
		}
		for ; i < len(g); i++ {
			x := float64(g[i])
			a0 += x * x
		}
		partial[k] = (a0 + a1) + (a2 + a3)
	})
	var sum float64
	for _, v := range partial {
		sum += v
	}
	return math.Sqrt(sum)
}

// ClipGradNorm scales the gradients of the trainable parameters so that
// their global L2 norm is at most maxNorm, as torch.nn.utils.clip_grad_norm_
// does (factor maxNorm/(norm+1e-6) when that is below 1), and returns the
// norm before clipping. maxNorm ≤ 0 only measures. When the norm is NaN or
// Inf the gradients are left untouched (PyTorch would fill them with NaN):
// check IsFinite on the result and skip the update.
func ClipGradNorm(ps nn.Params, maxNorm float64) float64 {
	norm := GradNorm(ps)
	if maxNorm <= 0 || !IsFinite(norm) {
		return norm
	}
	if coef := maxNorm / (norm + 1e-6); coef < 1 {
		ScaleGrads(ps, float32(coef))
	}
	return norm
}

// ScaleGrads multiplies the gradients of the trainable parameters by s: with
// gradient accumulation over n micro-batches whose losses are means, s = 1/n
// averages them (what transformers does by dividing each loss by n); to
// weight every token equally, sum per-token losses and use s = 1/tokens.
func ScaleGrads(ps nn.Params, s float32) {
	with, segs := gradSegments(ps)
	forSegments(segs, func(_ int, sg segment) {
		g := with[sg.p].Var.Grad.Data[sg.lo:sg.hi]
		for i := range g {
			g[i] *= s
		}
	})
}

// NonFiniteGrad returns the name of the first trainable parameter (in ps's
// order) whose gradient holds a NaN or an Inf, and whether there is one.
func NonFiniteGrad(ps nn.Params) (name string, found bool) {
	with, segs := gradSegments(ps)
	bad := make([]bool, len(segs)) // per segment: no two goroutines share a slot
	forSegments(segs, func(k int, s segment) {
		for _, v := range with[s.p].Var.Grad.Data[s.lo:s.hi] {
			if v-v != 0 { // NaN or ±Inf
				bad[k] = true
				return
			}
		}
	})
	for k, b := range bad {
		if b {
			return with[segs[k].p].Name, true
		}
	}
	return "", false
}

// IsFinite reports whether x is neither NaN nor ±Inf.
func IsFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
