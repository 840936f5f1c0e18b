package nn

import (
	"fmt"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// MergeInto adds sign·delta (a dense [out, in] change, row-major) to a base
// weight whatever its storage: float32 in place, bf16 widened to float32,
// summed and rounded back. Every mergeable method folds itself in through
// it, so a new storage (a quantized base) is taught here once.
func MergeInto(w *tensor.Tensor, delta []float32, sign float32) error {
	if len(delta) != w.Numel() {
		return fmt.Errorf("nn: merge of %d values into a weight of shape %v", len(delta), w.Shape)
	}
	switch w.DType() {
	case tensor.F32:
		for i, d := range delta {
			w.Data[i] += sign * d
		}
	case tensor.BF16:
		for i, h := range w.Half {
			w.Half[i] = kernels.ToBF16(kernels.FromBF16(h) + sign*delta[i])
		}
	case tensor.Q4, tensor.Q8:
		// Adding a delta to 4- or 8-bit codes in place would re-round the
		// whole block (or row) it touches; the model's Dequantize makes a
		// float32/bf16 base first and says so.
		return fmt.Errorf("nn: cannot merge into a quantized (%v) weight %v in place: dequantize the base first", w.DType(), w.Shape)
	default:
		return fmt.Errorf("nn: cannot merge into a %v weight", w.DType())
	}
	return nil
}
