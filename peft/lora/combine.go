package lora

// The combine operators of PEFT's merge_utils (METHODS.md §23), on task
// tensors T_i of one shape (flattened) with weights c_i.

import (
	"fmt"
	"math"
	"slices"

	"github.com/gopeft/gopeft/tensor"
)

// MajoritySign is how TIES elects each entry's sign.
type MajoritySign string

const (
	SignTotal     MajoritySign = "total"     // sign of Σ_i T_i
	SignFrequency MajoritySign = "frequency" // sign of Σ_i sign(T_i)
)

// checkDensity refuses a negative density; at 1 or more nothing is pruned.
func checkDensity(density float64) error {
	if density < 0 || math.IsNaN(density) {
		return fmt.Errorf("density %v: must be ≥ 0 (≥ 1 prunes nothing)", density)
	}
	return nil
}

// MagnitudePrune keeps the ⌊density·n⌋ entries of t largest in magnitude
// (ties to the lower index) and zeroes the rest; density ≥ 1 keeps t.
func MagnitudePrune(t []float32, density float64) []float32 {
	out := slices.Clone(t)
	if density >= 1 {
		return out
	}
	k := int(density * float64(len(t)))
	idx := make([]int, len(t))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		x, y := math.Abs(float64(t[a])), math.Abs(float64(t[b]))
		switch {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return 0
	})
	for _, i := range idx[k:] {
		out[i] = 0
	}
	return out
}

// RandomPrune is DARE's drop: each entry kept with probability density
// and, kept, divided by density (Bernoulli(density)/density); density ≥ 1
// keeps t.
func RandomPrune(t []float32, density float64, g *tensor.RNG) []float32 {
	out := slices.Clone(t)
	if density >= 1 {
		return out
	}
	for i, v := range out {
		if g.Float64() < density {
			out[i] = float32(float64(v) / density)
		} else {
			out[i] = 0
		}
	}
	return out
}

// Linear is Σ_i c_i·T_i.
func Linear(ts [][]float32, c []float64) []float32 {
	out := make([]float32, len(ts[0]))
	for j := range out {
		var s float64
		for i, t := range ts {
			s += c[i] * float64(t[j])
		}
		out[j] = float32(s)
	}
	return out
}

// TiesMerge elects each entry's sign over the (unweighted) T_i — a zero
// sum counts as + — and averages c_i·T_i over the tensors whose entry has
// that sign: Σ mask_i·c_i·T_i / max(1, Σ mask_i). A zero entry never
// counts.
func TiesMerge(ts [][]float32, c []float64, method MajoritySign) ([]float32, error) {
	if method != SignTotal && method != SignFrequency {
		return nil, fmt.Errorf("majority_sign_method %q: want total or frequency", method)
	}
	sign := func(x float32) float64 {
		switch {
		case x > 0:
			return 1
		case x < 0:
			return -1
		}
		return 0
	}
	out := make([]float32, len(ts[0]))
	for j := range out {
		var m float64
		for _, t := range ts {
			if method == SignTotal {
				m += float64(t[j])
			} else {
				m += sign(t[j])
			}
		}
		elected := 1.0
		if m < 0 {
			elected = -1
		}
		var sum float64
		n := 0
		for i, t := range ts {
			if sign(t[j]) == elected {
				sum += c[i] * float64(t[j])
				n++
			}
		}
		out[j] = float32(sum / float64(max(n, 1)))
	}
	return out, nil
}

// Combine applies one of PEFT's combine operators (without the "_svd"
// suffix: linear, ties, dare_linear, dare_ties, magnitude_prune) to task
// tensors with weights c.
func Combine(kind string, ts [][]float32, c []float64, density float64, sign MajoritySign, g *tensor.RNG) ([]float32, error) {
	if kind != "linear" {
		if err := checkDensity(density); err != nil {
			return nil, err
		}
	}
	pruned := func(f func([]float32) []float32) [][]float32 {
		out := make([][]float32, len(ts))
		for i, t := range ts {
			out[i] = f(t)
		}
		return out
	}
	mag := func(t []float32) []float32 { return MagnitudePrune(t, density) }
	dare := func(t []float32) []float32 { return RandomPrune(t, density, g) }
	switch kind {
	case "linear":
		return Linear(ts, c), nil
	case "magnitude_prune":
		return Linear(pruned(mag), c), nil
	case "ties":
		return TiesMerge(pruned(mag), c, sign)
	case "dare_linear":
		return Linear(pruned(dare), c), nil
	case "dare_ties":
		return TiesMerge(pruned(dare), c, sign)
	}
	return nil, fmt.Errorf("unknown combination %q", kind)
}
