package quant

import (
	"fmt"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// Kind names a storage a frozen weight can be quantized to on load: the
// values of --quant.
type Kind string

const (
	KindNone Kind = ""
	KindNF4  Kind = "nf4"
	KindFP4  Kind = "fp4"
	KindInt8 Kind = "int8"
)

// ParseKind reads --quant's value.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(s); k {
	case KindNone, KindNF4, KindFP4, KindInt8:
		return k, nil
	}
	return "", fmt.Errorf("unknown quantization %q (want nf4, fp4 or int8)", s)
}

// Tensor wraps the 4-bit weight as a tensor the kernels multiply by
// directly (tensor.Q4), keeping q as its source for writers.
func (q *Tensor4) Tensor() (*tensor.Tensor, error) {
	m, err := q.Matrix()
	if err != nil {
		return nil, err
	}
	return tensor.FromQ4(m, q), nil
}

// Tensor wraps the int8 weight as a tensor (tensor.Q8).
func (q *Int8) Tensor() *tensor.Tensor {
	return tensor.FromQ8(&kernels.Q8{Rows: q.Rows, Cols: q.Cols, CB: q.CB, SCB: q.SCB}, q)
}

// QuantizeTensor quantizes a 2-D float32 or bf16 weight [out, in] to kind,
// as bitsandbytes does when transformers loads a model with load_in_4bit
// (Params4bit: blocks of 64 over the flattened weight, double quantization
// of the absmax when double) or load_in_8bit (Int8Params: the weight cast
// to float16, then row-wise int8). The 4-bit quant state records the
// source dtype ("float32" or "bfloat16"). double applies to 4-bit kinds
// only.
func QuantizeTensor(t *tensor.Tensor, kind Kind, double bool) (*tensor.Tensor, error) {
	if len(t.Shape) != 2 {
		return nil, fmt.Errorf("quant: only matrices are quantized, shape is %v", t.Shape)
	}
	if t.Quantized() {
		return nil, fmt.Errorf("quant: the tensor is already %v", t.DType())
	}
	dtype := "float32"
	x := t.Data
	if t.DType() == tensor.BF16 {
		dtype = "bfloat16"
		x = t.ToF32().Data
	}
	switch kind {
	case KindNF4, KindFP4:
		typ := NF4
		if kind == KindFP4 {
			typ = FP4
		}
		q := Quantize4(typ, x, t.Shape, double)
		q.DType = dtype
		return q.Tensor()
	case KindInt8:
		h := make([]float32, len(x))
		for i, v := range x {
			h[i] = RoundFloat16(v)
		}
		return QuantizeInt8(h, t.Shape[0], t.Shape[1]).Tensor(), nil
	}
	return nil, fmt.Errorf("quant: unknown kind %q", kind)
}

// ShareStorage points q at the kernels' form's codes after
// tensor.OffHeap moved them (and at its scales when they are q's absmax
// as they are), so that one copy of the weight remains.
func (q *Tensor4) ShareStorage(t *tensor.Tensor) {
	if t.Q4 == nil {
		return
	}
	q.Packed = t.Q4.Packed
	if q.Nested == nil {
		q.Absmax = t.Q4.Scales
	}
}

// ShareStorage points q at the kernels' form's codes and scales after
// tensor.OffHeap moved them.
func (q *Int8) ShareStorage(t *tensor.Tensor) {
	if t.Q8 == nil {
		return
	}
	q.CB, q.SCB = t.Q8.CB, t.Q8.SCB
}
