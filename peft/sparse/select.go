package sparse

import (
	"math"

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
// index, so the choice is deterministic. It reads the scores six times
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
	// Count each tensor's share first, so the lists are allocated once at
	// their size (no append growth: k may be a good part of the base).
	counts := make([]int, len(scores))
	left := need
	for t, s := range scores {
		for _, f := range s {
			key := orderKey(f)
			if key > prefix || (key == prefix && left > 0) {
				if key == prefix {
					left--
				}
				counts[t]++
			}
		}
	}
	for t, s := range scores {
		if counts[t] == 0 {
			continue
		}
		out[t] = make([]int32, 0, counts[t])
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
