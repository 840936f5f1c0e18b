// Package tensor provides gopeft's dense tensors: row-major float32 storage
// with a shape, cheap reshapes and row views, bfloat16 storage for frozen
// weights, and seeded initialisers.
package tensor

import (
	"fmt"
	"slices"

	"github.com/gopeft/gopeft/tensor/kernels"
)

// DType is a tensor's storage type.
type DType uint8

const (
	F32  DType = iota // float32, the compute type
	BF16              // bfloat16 storage, widened to float32 in the kernels
)

func (d DType) String() string {
	if d == BF16 {
		return "bf16"
	}
	return "f32"
}

// Tensor is a dense row-major tensor. Exactly one of Data (F32) or Half
// (BF16) holds its elements. Reshape and Row share storage.
type Tensor struct {
	Shape []int
	Data  []float32
	Half  []kernels.BF16
}

// Numel is the number of elements a shape holds. It panics on a negative
// dimension.
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("tensor: negative dimension in shape %v", shape))
		}
		n *= d
	}
	return n
}

// New returns a zeroed float32 tensor of the given shape.
func New(shape ...int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), Data: make([]float32, Numel(shape))}
}

// FromData wraps data (not copied) as a tensor of the given shape.
func FromData(data []float32, shape ...int) *Tensor {
	if Numel(shape) != len(data) {
		panic(fmt.Sprintf("tensor.FromData: %d values for shape %v", len(data), shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: data}
}

// FromBF16 wraps bfloat16 data (not copied) as a tensor of the given shape.
func FromBF16(half []kernels.BF16, shape ...int) *Tensor {
	if Numel(shape) != len(half) {
		panic(fmt.Sprintf("tensor.FromBF16: %d values for shape %v", len(half), shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), Half: half}
}

// DType reports the storage type.
func (t *Tensor) DType() DType {
	if t.Half != nil {
		return BF16
	}
	return F32
}

// Numel is the number of elements.
func (t *Tensor) Numel() int { return Numel(t.Shape) }

// Dim returns the size of dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// Cols is the size of the last dimension (1 for a scalar).
func (t *Tensor) Cols() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[len(t.Shape)-1]
}

// Rows is the product of all dimensions but the last: the tensor seen as a
// matrix of Rows × Cols.
func (t *Tensor) Rows() int {
	if c := t.Cols(); c > 0 {
		return t.Numel() / c
	}
	return Numel(t.Shape[:len(t.Shape)-1])
}

// Reshape returns a view with a new shape of the same element count. One
// dimension may be -1 to be inferred.
func (t *Tensor) Reshape(shape ...int) *Tensor {
	shape = append([]int(nil), shape...)
	infer, known := -1, 1
	for i, d := range shape {
		if d == -1 && infer < 0 {
			infer = i
			continue
		}
		known *= d
	}
	if infer >= 0 && known > 0 {
		shape[infer] = t.Numel() / known
	}
	if Numel(shape) != t.Numel() {
		panic(fmt.Sprintf("tensor.Reshape: cannot view shape %v as %v", t.Shape, shape))
	}
	return &Tensor{Shape: shape, Data: t.Data, Half: t.Half}
}

// Row returns row i of the tensor seen as Rows × Cols, sharing storage.
// It panics for bf16 storage.
func (t *Tensor) Row(i int) []float32 {
	c := t.Cols()
	return t.F32()[i*c : (i+1)*c]
}

// RowsView returns rows [lo, hi) as a tensor of shape [hi-lo, Cols], sharing
// storage.
func (t *Tensor) RowsView(lo, hi int) *Tensor {
	c := t.Cols()
	if lo < 0 || hi > t.Rows() || lo > hi {
		panic(fmt.Sprintf("tensor.RowsView: rows [%d,%d) of shape %v", lo, hi, t.Shape))
	}
	v := &Tensor{Shape: []int{hi - lo, c}}
	if t.Half != nil {
		v.Half = t.Half[lo*c : hi*c]
	} else {
		v.Data = t.Data[lo*c : hi*c]
	}
	return v
}

// F32 returns the float32 storage, panicking (with the shape) for bf16.
func (t *Tensor) F32() []float32 {
	if t.Half != nil {
		panic(fmt.Sprintf("tensor: float32 access to a bf16 tensor of shape %v", t.Shape))
	}
	return t.Data
}

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	c := &Tensor{Shape: append([]int(nil), t.Shape...)}
	if t.Half != nil {
		c.Half = append([]kernels.BF16(nil), t.Half...)
	} else {
		c.Data = append([]float32(nil), t.Data...)
	}
	return c
}

// ToBF16 returns a bf16 copy (rounded to nearest even).
func (t *Tensor) ToBF16() *Tensor {
	if t.Half != nil {
		return t.Clone()
	}
	h := make([]kernels.BF16, len(t.Data))
	kernels.F32ToBF16(h, t.Data)
	return &Tensor{Shape: append([]int(nil), t.Shape...), Half: h}
}

// ToF32 returns a float32 copy (exact for bf16).
func (t *Tensor) ToF32() *Tensor {
	if t.Half == nil {
		return t.Clone()
	}
	d := make([]float32, len(t.Half))
	kernels.BF16ToF32(d, t.Half)
	return &Tensor{Shape: append([]int(nil), t.Shape...), Data: d}
}

// SameShape reports whether two shapes are equal.
func SameShape(a, b []int) bool { return slices.Equal(a, b) }

// Zero sets every element to 0.
func (t *Tensor) Zero() {
	clear(t.Data)
	clear(t.Half)
}

// Argmax returns the index of the largest value, the first on ties (a
// greedy token, a predicted class); -1 for an empty slice.
func Argmax[T float32 | float64](xs []T) int {
	if len(xs) == 0 {
		return -1
	}
	best := 0
	for i, x := range xs {
		if x > xs[best] {
			best = i
		}
	}
	return best
}
