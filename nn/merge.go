package nn

import (
	"fmt"
	"sync/atomic"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// weightWrites counts the changes MergeInto and StoreInto made to base
// weights; see WeightWrites.
var weightWrites atomic.Uint64

// WeightWrites is a counter that every MergeInto and StoreInto advances:
// a value computed from frozen base weights (DoRA's row norms at
// inference) stays valid while it is unchanged.
func WeightWrites() uint64 { return weightWrites.Load() }

// MergeInto adds sign·delta (a dense [out, in] change, row-major) to a base
// weight whatever its storage: float32 in place, bf16 widened to float32,
// summed and rounded back. Every mergeable method folds itself in through
// it (or StoreInto), so a new storage (a quantized base) is taught here
// once.
func MergeInto(w *tensor.Tensor, delta []float32, sign float32) error {
	if len(delta) != w.Numel() {
		return fmt.Errorf("nn: merge of %d values into a weight of shape %v", len(delta), w.Shape)
	}
	weightWrites.Add(1)
	switch w.DType() {
	case tensor.F32:
		for i, d := range delta {
			w.Data[i] += sign * d
		}
	case tensor.BF16:
		for i, h := range w.Half {
			w.Half[i] = kernels.ToBF16(kernels.FromBF16(h) + sign*delta[i])
		}
	default:
		return fmt.Errorf("nn: cannot merge into a %v weight", w.DType())
	}
	return nil
}

// StoreInto replaces a base weight's values by vals (row-major, float32)
// in the weight's own storage: copied for float32, rounded to nearest for
// bf16. It is for merges that are not a sum (DoRA rescales each row).
func StoreInto(w *tensor.Tensor, vals []float32) error {
	if len(vals) != w.Numel() {
		return fmt.Errorf("nn: store of %d values into a weight of shape %v", len(vals), w.Shape)
	}
	weightWrites.Add(1)
	switch w.DType() {
	case tensor.F32:
		copy(w.Data, vals)
	case tensor.BF16:
		kernels.F32ToBF16(w.Half, vals)
	default:
		return fmt.Errorf("nn: cannot store into a %v weight", w.DType())
	}
	return nil
}
