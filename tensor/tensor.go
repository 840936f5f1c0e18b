// Package tensor provides gopeft's dense tensors: row-major float32 storage
// with a shape, cheap reshapes and row views, bfloat16 storage for frozen
// weights, and seeded initialisers.
package tensor

import (
	"fmt"
	"math"
	"slices"

	"github.com/gopeft/gopeft/tensor/kernels"
)

// DType is a tensor's storage type.
type DType uint8

const (
	F32  DType = iota // float32, the compute type
	BF16              // bfloat16 storage, widened to float32 in the kernels
	Q4                // 4-bit NF4/FP4 blocks (a frozen weight), dequantized in the kernels
	Q8                // int8 row-wise (LLM.int8), dequantized in the kernels
)

func (d DType) String() string {
	switch d {
	case BF16:
		return "bf16"
	case Q4:
		return "4-bit"
	case Q8:
		return "int8"
	}
	return "f32"
}

// Quantized is the storage a quantized tensor came from (package quant's
// Tensor4 or Int8, as a checkpoint holds it), kept for writers and for
// dequantizing.
type Quantized interface {
	Dequantize(dst []float32) []float32
}

// Tensor is a dense row-major tensor. Exactly one of Data (F32), Half
// (BF16), Q4 or Q8 holds its elements. Reshape and Row share storage.
//
// A quantized tensor (Q4, Q8) is a frozen 2-D weight [out, in]: the
// products in the kernels read it directly (GemmQ4, GemmQ8), and nothing
// else of the package reads its elements (F32 and RowsView panic; ToF32
// dequantizes a copy). Quant is the on-disk form it was made from.
type Tensor struct {
	Shape []int
	Data  []float32
	Half  []kernels.BF16
	Q4    *kernels.Q4
	Q8    *kernels.Q8
	Quant Quantized

	mem *mapping // the memory OffHeap moved the storage to, shared by views
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
	switch {
	case t.Half != nil:
		return BF16
	case t.Q4 != nil:
		return Q4
	case t.Q8 != nil:
		return Q8
	}
	return F32
}

// Quantized reports whether the storage is Q4 or Q8.
func (t *Tensor) Quantized() bool { return t.Q4 != nil || t.Q8 != nil }

// FromQ4 wraps a 4-bit matrix (not copied) as a 2-D tensor; src, when not
// nil, is the form it was made from.
func FromQ4(q *kernels.Q4, src Quantized) *Tensor {
	return &Tensor{Shape: []int{q.Rows, q.Cols}, Q4: q, Quant: src}
}

// FromQ8 wraps an int8 matrix (not copied) as a 2-D tensor.
func FromQ8(q *kernels.Q8, src Quantized) *Tensor {
	return &Tensor{Shape: []int{q.Rows, q.Cols}, Q8: q, Quant: src}
}

// StorageBytes is the memory the elements take (scales included for the
// quantized kinds).
func (t *Tensor) StorageBytes() int64 {
	switch {
	case t.Half != nil:
		return 2 * int64(len(t.Half))
	case t.Q4 != nil:
		return int64(len(t.Q4.Packed)) + 4*int64(len(t.Q4.Scales))
	case t.Q8 != nil:
		return int64(len(t.Q8.CB)) + 4*int64(len(t.Q8.SCB))
	}
	return 4 * int64(len(t.Data))
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
	if Numel(shape) != t.Numel() || (t.Quantized() && !SameShape(shape, t.Shape)) {
		panic(fmt.Sprintf("tensor.Reshape: cannot view %v shape %v as %v", t.DType(), t.Shape, shape))
	}
	return &Tensor{Shape: shape, Data: t.Data, Half: t.Half, Q4: t.Q4, Q8: t.Q8, Quant: t.Quant, mem: t.mem}
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
	if t.Quantized() {
		panic(fmt.Sprintf("tensor.RowsView: rows of a %v tensor of shape %v", t.DType(), t.Shape))
	}
	v := &Tensor{Shape: []int{hi - lo, c}, mem: t.mem}
	if t.Half != nil {
		v.Half = t.Half[lo*c : hi*c]
	} else {
		v.Data = t.Data[lo*c : hi*c]
	}
	return v
}

// RowsF32 returns rows [lo, hi) of the tensor seen as Rows × Cols as
// float32 values, whatever its storage: float32 rows are returned in place
// (dst unused), bf16 ones widened and quantized ones dequantized into dst,
// which must then hold (hi-lo)·Cols values.
func (t *Tensor) RowsF32(lo, hi int, dst []float32) []float32 {
	c := t.Cols()
	if lo < 0 || hi > t.Rows() || lo > hi {
		panic(fmt.Sprintf("tensor.RowsF32: rows [%d,%d) of shape %v", lo, hi, t.Shape))
	}
	n := (hi - lo) * c
	switch {
	case t.Q4 != nil:
		t.Q4.DequantizeRows(lo, hi, dst)
	case t.Q8 != nil:
		t.Q8.DequantizeRows(lo, hi, dst)
	case t.Half != nil:
		kernels.BF16ToF32(dst[:n], t.Half[lo*c:hi*c])
	default:
		return t.Data[lo*c : hi*c]
	}
	return dst[:n]
}

// F32 returns the float32 storage, panicking (with the shape) for other
// storage.
func (t *Tensor) F32() []float32 {
	if t.Data == nil && t.DType() != F32 {
		panic(fmt.Sprintf("tensor: float32 access to a %v tensor of shape %v", t.DType(), t.Shape))
	}
	return t.Data
}

// Clone returns a deep copy. Quantized storage is immutable and shared.
func (t *Tensor) Clone() *Tensor {
	c := &Tensor{Shape: append([]int(nil), t.Shape...)}
	if t.Quantized() {
		c.Q4, c.Q8, c.Quant = t.Q4, t.Q8, t.Quant
		return c
	}
	if t.Half != nil {
		c.Half = append([]kernels.BF16(nil), t.Half...)
	} else {
		c.Data = append([]float32(nil), t.Data...)
	}
	return c
}

// ToBF16 returns a bf16 copy (rounded to nearest even; a quantized tensor
// is dequantized first).
func (t *Tensor) ToBF16() *Tensor {
	if t.Half != nil {
		return t.Clone()
	}
	if t.Quantized() {
		t = t.ToF32()
	}
	h := make([]kernels.BF16, len(t.Data))
	kernels.F32ToBF16(h, t.Data)
	return &Tensor{Shape: append([]int(nil), t.Shape...), Half: h}
}

// ToF32 returns a float32 copy (exact for bf16; the dequantized values for
// Q4 and Q8).
func (t *Tensor) ToF32() *Tensor {
	switch {
	case t.Q4 != nil:
		d := make([]float32, t.Numel())
		t.Q4.Dequantize(d)
		return &Tensor{Shape: append([]int(nil), t.Shape...), Data: d}
	case t.Q8 != nil:
		d := make([]float32, t.Numel())
		t.Q8.Dequantize(d)
		return &Tensor{Shape: append([]int(nil), t.Shape...), Data: d}
	case t.Half == nil:
		return t.Clone()
	}
	d := make([]float32, len(t.Half))
	kernels.BF16ToF32(d, t.Half)
	return &Tensor{Shape: append([]int(nil), t.Shape...), Data: d}
}

// SameShape reports whether two shapes are equal.
func SameShape(a, b []int) bool { return slices.Equal(a, b) }

// Zero sets every element to 0. It panics for quantized storage.
func (t *Tensor) Zero() {
	if t.Quantized() {
		panic(fmt.Sprintf("tensor.Zero: a %v tensor of shape %v is read-only", t.DType(), t.Shape))
	}
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

// SameBits reports whether a and b hold the same float32 values bit for
// bit (NaNs by their payload, −0 apart from 0): the check that a result is
// exactly what it was, not merely equal in value.
func SameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
