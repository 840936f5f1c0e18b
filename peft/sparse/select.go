package sparse

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

func tensorOf(v []float32) *tensor.Tensor { return tensor.FromData(v, len(v)) }

// orderKey maps a float32 to a uint32 that sorts as the float does.
func orderKey(f float32) uint32 {
	b := math.Float32bits(f)
	if b&0x80000000 != 0 {
		return ^b
	}
	return b | 0x80000000
}

// TopK returns, for each tensor of scores, the sorted indices of its
// entries among the k largest scores of all tensors together (a global
// top-k). Ties at the threshold go to the earlier tensor, then the lower
// index, so the choice is deterministic. It reads the scores five times
// and allocates nothing of their size: a radix select on the scores' bits.
func TopK(scores [][]float32, k int) [][]int32 {
	out := make([][]int32, len(scores))
	total := 0
	for _, s := range scores {
		total += len(s)
	}
	if k <= 0 {
		return out
	}
	if k >= total {
		for t, s := range scores {
			out[t] = make([]int32, len(s))
			for i := range s {
				out[t][i] = int32(i)
			}
		}
		return out
	}
	var prefix, mask uint32
	need := k
	for shift := 24; shift >= 0; shift -= 8 {
		var hist [256]int
		for _, s := range scores {
			for _, f := range s {
				if key := orderKey(f); key&mask == prefix {
					hist[(key>>shift)&255]++
				}
			}
		}
		for b := 255; b >= 0; b-- {
			if hist[b] >= need {
				prefix |= uint32(b) << shift
				break
			}
			need -= hist[b]
		}
		mask |= 255 << shift
	}
	for t, s := range scores {
		for i, f := range s {
			key := orderKey(f)
			if key > prefix || (key == prefix && need > 0) {
				if key == prefix {
					need--
				}
				out[t] = append(out[t], int32(i))
			}
		}
	}
	return out
}

// Budget is how many entries a density allows on a base: ⌊density ·
// parameters⌋, counting every parameter of the base (a tied head once).
func Budget(pm *peft.Model, density float64) int {
	all, _ := pm.Base.Params().Count()
	return int(math.Floor(density * float64(all)))
}

// FisherOptions sets how Fisher estimates the empirical Fisher information.
type FisherOptions struct {
	// Samples is how many training examples to use, one per backward
	// (batch size 1), from the first: FishMask's N. 0: all.
	Samples int
	// ClipNorm, when positive, scales each tensor's gradient of a sample
	// to at most this L2 norm before squaring (child-tuning D clips per
	// tensor).
	ClipNorm float64
	// Mean divides the sum by the number of samples used.
	Mean bool
}

// Fisher is Σ_i (∇_W ℓ(x_i, y_i))² for each target weight W, the loss of
// each example alone with its true label (FishMask's "label-square"
// estimate). The weights are made trainable only while it runs, and every
// gradient it leaves is cleared: the run starts from zero gradients.
func Fisher(pm *peft.Model, targets []*nn.Linear, obj peft.Objective, opt FisherOptions) ([][]float32, error) {
	n := obj.Len()
	if opt.Samples > 0 && opt.Samples < n {
		n = opt.Samples
	}
	fisher := make([][]float32, len(targets))
	for t, l := range targets {
		fisher[t] = make([]float32, l.Weight.Value.Numel())
		if l.Weight.RequiresGrad() {
			return nil, fmt.Errorf("%s is already trained by another method: it cannot also be selected", l.Name)
		}
		l.Weight.SetTrainable(true)
	}
	defer func() {
		for _, l := range targets {
			l.Weight.SetTrainable(false)
		}
		for _, p := range pm.TrainableParams() {
			p.Var.ZeroGrad()
		}
	}()
	used := 0
	for i := 0; i < n; i++ {
		tp := autograd.NewTape()
		loss, err := obj.Loss(&nn.Pass{Tape: tp}, []int{i})
		if err != nil {
			return nil, err
		}
		if loss == nil || !loss.RequiresGrad() {
			continue // no target in this example
		}
		tp.Backward(loss)
		used++
		for t, l := range targets {
			g := l.Weight.Grad
			if g == nil {
				continue
			}
			scale := float32(1)
			if opt.ClipNorm > 0 {
				var ss float64
				for _, v := range g.Data {
					ss += float64(v) * float64(v)
				}
				if norm := math.Sqrt(ss); norm > opt.ClipNorm {
					scale = float32(opt.ClipNorm / (norm + 1e-6))
				}
			}
			f := fisher[t]
			for j, v := range g.Data {
				v *= scale
				f[j] += v * v
			}
			g.Zero()
		}
	}
	if used == 0 {
		return nil, fmt.Errorf("no training example has a target to compute the Fisher information from")
	}
	if opt.Mean {
		for _, f := range fisher {
			for j := range f {
				f[j] /= float32(used)
			}
		}
	}
	for _, f := range fisher {
		for j, v := range f {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, fmt.Errorf("the Fisher information is not finite (entry %d): the loss or its gradient overflowed", j)
			}
		}
	}
	return fisher, nil
}
