package quant

import (
	"fmt"

	"github.com/gopeft/gopeft/tensor/kernels"
)

// Matrix returns the kernels' view of a 2-D 4-bit weight [out, in], for
// kernels.GemmQ4 (transB for the forward y = x·Wᵀ, not for dx = dy·W). The
// packed codes are shared, not copied; with double quantization the scales
// are dequantized here, once (4 bytes per 64 weights), so the kernels never
// repeat it.
func (q *Tensor4) Matrix() (*kernels.Q4, error) {
	if len(q.Shape) != 2 {
		return nil, fmt.Errorf("quant: a %s matrix needs 2 dimensions, shape is %v", q.Type, q.Shape)
	}
	code := q.Type.Code()
	return &kernels.Q4{Rows: q.Shape[0], Cols: q.Shape[1], Packed: q.Packed, Scales: q.Scales(), Code: &code}, nil
}
