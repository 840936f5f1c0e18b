package format

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"

	"github.com/gopeft/gopeft/tensor/kernels"
)

// DType names a storage type. Spellings follow safetensors ("F32", "BF16",
// "I64", ...) and, for GGML's block-quantized types, gguf-py ("Q8_0",
// "Q4_K", "IQ2_XXS", ...). Where both formats have a type (F32, F16, BF16,
// F64, I8, I16, I32, I64) the meaning is the same.
type DType string

// Storage types that can be decoded to float32 by [Tensor.Float32].
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	Q8_0 DType = "Q8_0" // GGML: blocks of 32 values, a float16 scale then 32 int8
	Q4_0 DType = "Q4_0" // GGML: blocks of 32 values, a float16 scale then 16 bytes of 4-bit codes
)

// dtypeInfo describes how many bytes a run of elements takes: elements come
// in blocks of blockElems that occupy blockBytes (1 and the element size for
// plain types; sub-byte and quantized types use larger blocks).
type dtypeInfo struct {
	blockElems, blockBytes int
	stRank                 int // safetensors Dtype enum position (alignment order), -1 if not a safetensors type
	ggml                   int // GGML type id, -1 if none
}

// dtypes lists every type this package knows. The safetensors ranks are the
// declaration order of the Rust library's Dtype enum, which its writer sorts by
// (descending) to keep every tensor aligned.
var dtypes = map[DType]dtypeInfo{
	"BOOL":        {1, 1, 0, -1},
	"F4":          {2, 1, 1, -1},
	"F6_E2M3":     {4, 3, 2, -1},
	"F6_E3M2":     {4, 3, 3, -1},
	"U8":          {1, 1, 4, -1},
	"I8":          {1, 1, 5, 24},
	"F8_E5M2":     {1, 1, 6, -1},
	"F8_E4M3":     {1, 1, 7, -1},
	"F8_E8M0":     {1, 1, 8, -1},
	"F8_E4M3FNUZ": {1, 1, 9, -1},
	"F8_E5M2FNUZ": {1, 1, 10, -1},
	"I16":         {1, 2, 11, 25},
	"U16":         {1, 2, 12, -1},
	"F16":         {1, 2, 13, 1},
	"BF16":        {1, 2, 14, 30},
	"I32":         {1, 4, 15, 26},
	"U32":         {1, 4, 16, -1},
	"F32":         {1, 4, 17, 0},
	"C64":         {1, 8, 18, -1},
	"F64":         {1, 8, 19, 28},
	"I64":         {1, 8, 20, 27},
	"U64":         {1, 8, 21, -1},

	// GGML-only types (ggml.h enum ggml_type; sizes from ggml.c type_traits).
	"Q4_0":    {32, 18, -1, 2},
	"Q4_1":    {32, 20, -1, 3},
	"Q5_0":    {32, 22, -1, 6},
	"Q5_1":    {32, 24, -1, 7},
	"Q8_0":    {32, 34, -1, 8},
	"Q8_1":    {32, 36, -1, 9},
	"Q2_K":    {256, 84, -1, 10},
	"Q3_K":    {256, 110, -1, 11},
	"Q4_K":    {256, 144, -1, 12},
	"Q5_K":    {256, 176, -1, 13},
	"Q6_K":    {256, 210, -1, 14},
	"Q8_K":    {256, 292, -1, 15},
	"IQ2_XXS": {256, 66, -1, 16},
	"IQ2_XS":  {256, 74, -1, 17},
	"IQ3_XXS": {256, 98, -1, 18},
	"IQ1_S":   {256, 50, -1, 19},
	"IQ4_NL":  {32, 18, -1, 20},
	"IQ3_S":   {256, 110, -1, 21},
	"IQ2_S":   {256, 82, -1, 22},
	"IQ4_XS":  {256, 136, -1, 23},
	"IQ1_M":   {256, 56, -1, 29},
	"TQ1_0":   {256, 54, -1, 34},
	"TQ2_0":   {256, 66, -1, 35},
	"MXFP4":   {32, 17, -1, 39},
}

// Known reports whether this package knows the type's storage size.
func (d DType) Known() bool { _, ok := dtypes[d]; return ok }

// BlockSize returns how many elements make up one storage block (1 for plain
// types, 32 for Q8_0, 256 for K-quants) and how many bytes the block takes.
// Both are 0 for an unknown type.
func (d DType) BlockSize() (elems, bytes int) {
	info := dtypes[d]
	return info.blockElems, info.blockBytes
}

// ByteSize returns the number of bytes numel elements of this type occupy. It
// fails for unknown types, for counts that are not whole blocks and on
// overflow.
func (d DType) ByteSize(numel int) (int, error) {
	info, ok := dtypes[d]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q", string(d))
	}
	if numel < 0 {
		return 0, fmt.Errorf("negative element count %d", numel)
	}
	if numel%info.blockElems != 0 {
		return 0, fmt.Errorf("dtype %s stores blocks of %d elements; %d elements is not a whole number of blocks", d, info.blockElems, numel)
	}
	n, ok := mulInt(numel/info.blockElems, info.blockBytes)
	if !ok {
		return 0, fmt.Errorf("size of %d elements of %s overflows", numel, d)
	}
	return n, nil
}

// Tensor is one named array as stored in a checkpoint file.
type Tensor struct {
	Name  string
	DType DType
	Shape []int  // row-major: the last dimension is contiguous
	Data  []byte // raw little-endian bytes as stored; may alias the file buffer
}

// Numel returns the number of elements the shape describes, or -1 if a
// dimension is negative or the product overflows int.
func (t *Tensor) Numel() int {
	n, ok := numel(t.Shape)
	if !ok {
		return -1
	}
	return n
}

// Validate checks that the dtype is known and that Data holds exactly the
// bytes the shape needs; for GGML block types (Q8_0, ...) each row (the last
// dimension) must also be a whole number of blocks.
func (t *Tensor) Validate() error {
	n, ok := numel(t.Shape)
	if !ok {
		return fmt.Errorf("tensor %q: invalid shape %v", t.Name, t.Shape)
	}
	size, err := t.DType.ByteSize(n)
	if err != nil {
		return fmt.Errorf("tensor %q (shape %v): %v", t.Name, t.Shape, err)
	}
	// GGML block types quantize along rows: each row is whole blocks.
	if info := dtypes[t.DType]; info.stRank < 0 && len(t.Shape) > 0 && t.Shape[len(t.Shape)-1]%info.blockElems != 0 {
		return fmt.Errorf("tensor %q (shape %v): %s rows must be a whole number of blocks of %d", t.Name, t.Shape, t.DType, info.blockElems)
	}
	if size != len(t.Data) {
		return fmt.Errorf("tensor %q: %s%v needs %d bytes, has %d", t.Name, t.DType, t.Shape, size, len(t.Data))
	}
	return nil
}

// Float32 decodes the tensor to a new float32 slice in row-major order.
// Supported storage types: F32, F16, BF16, Q8_0 and Q4_0; others return an error
// naming the tensor and the type.
func (t *Tensor) Float32() ([]float32, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	src := t.Data
	switch t.DType {
	case F32:
		out := make([]float32, len(src)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
		return out, nil
	case F16:
		out := make([]float32, len(src)/2)
		for i := range out {
			out[i] = f16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
		return out, nil
	case BF16:
		out := make([]float32, len(src)/2)
		for i := range out {
			out[i] = kernels.FromBF16(binary.LittleEndian.Uint16(src[2*i:]))
		}
		return out, nil
	case Q8_0:
		out := make([]float32, len(src)/blockBytesQ8_0*QK)
		DequantizeQ8_0(out, src)
		return out, nil
	case Q4_0:
		out := make([]float32, len(src)/blockBytesQ4_0*QK)
		DequantizeQ4_0(out, src)
		return out, nil
	}
	return nil, fmt.Errorf("tensor %q: cannot decode dtype %s to float32 (supported: F32, F16, BF16, Q8_0, Q4_0)", t.Name, t.DType)
}

// BF16 returns the tensor as bfloat16 bit patterns. BF16 storage is copied
// without widening; other decodable types are converted through float32 with
// round-to-nearest-even.
func (t *Tensor) BF16() ([]uint16, error) {
	if t.DType == BF16 {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		out := make([]uint16, len(t.Data)/2)
		for i := range out {
			out[i] = binary.LittleEndian.Uint16(t.Data[2*i:])
		}
		return out, nil
	}
	f, err := t.Float32()
	if err != nil {
		return nil, err
	}
	out := make([]uint16, len(f))
	kernels.F32ToBF16(out, f)
	return out, nil
}

// TensorFromF32 builds an F32 tensor holding a copy of values. It panics if
// len(values) does not match the shape (a programming error).
func TensorFromF32(name string, shape []int, values []float32) *Tensor {
	checkLen(name, shape, len(values))
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return &Tensor{Name: name, DType: F32, Shape: append([]int(nil), shape...), Data: data}
}

// TensorFromBF16 builds a BF16 tensor holding a copy of values (bfloat16 bit
// patterns). It panics if len(values) does not match the shape.
func TensorFromBF16(name string, shape []int, values []uint16) *Tensor {
	checkLen(name, shape, len(values))
	data := make([]byte, 2*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint16(data[2*i:], v)
	}
	return &Tensor{Name: name, DType: BF16, Shape: append([]int(nil), shape...), Data: data}
}

// TensorQ8_0 quantizes values to a Q8_0 tensor the way llama.cpp's reference
// quantizer does (per block of 32: scale = max|x|/127 stored as float16,
// q = round(x/scale)). The element count must be a multiple of 32; it panics
// otherwise or if len(values) does not match the shape.
func TensorQ8_0(name string, shape []int, values []float32) *Tensor {
	checkLen(name, shape, len(values))
	if len(values)%32 != 0 {
		panic(fmt.Sprintf("format: Q8_0 tensor %q: %d elements is not a multiple of 32", name, len(values)))
	}
	data := make([]byte, len(values)/QK*blockBytesQ8_0)
	QuantizeQ8_0(data, values)
	return &Tensor{Name: name, DType: Q8_0, Shape: append([]int(nil), shape...), Data: data}
}

func checkLen(name string, shape []int, n int) {
	if m, ok := numel(shape); !ok || m != n {
		panic(fmt.Sprintf("format: tensor %q: shape %v does not hold %d values", name, shape, n))
	}
}

// f16ToF32 widens an IEEE half-precision value exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half: normalise into a float32 normal.
	e := uint32(113)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

// f32ToF16 rounds a float32 to the nearest half, ties to even.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 // quiet NaN
		}
		return sign | 0x7c00
	}
	e := exp - 112 // rebias 127 -> 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e >= 1 {
		h := uint32(e)<<10 | mant>>13
		rem := mant & 0x1fff
		if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
			h++ // may carry into the exponent, up to infinity: both correct
		}
		return sign | uint16(h)
	}
	// Result is subnormal (or zero): value = full * 2^(e-14) in units of 2^-24.
	if exp == 0 {
		return sign // float32 subnormals are far below half's range
	}
	full := mant | 0x800000
	shift := uint(14 - e)
	if shift >= 25 {
		return sign
	}
	h := full >> shift
	rem := full & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || (rem == half && h&1 == 1) {
		h++
	}
	return sign | uint16(h)
}

// numel multiplies the dimensions, failing on a negative one or overflow.
func numel(shape []int) (int, bool) {
	n := 1
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		var ok bool
		if n, ok = mulInt(n, d); !ok {
			return 0, false
		}
	}
	return n, true
}

// mulInt multiplies non-negative ints, reporting overflow.
func mulInt(a, b int) (int, bool) {
	if a < 0 || b < 0 {
		return 0, false
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > math.MaxInt {
		return 0, false
	}
	return int(lo), true
}
