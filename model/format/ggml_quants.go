package format

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/gopeft/gopeft/tensor/kernels"
)

// GGML's 8- and 4-bit block formats, Q8_0 and Q4_0, bit for bit as ggml
// writes them. They live here, beside the GGUF reader and writer, because
// they are part of the file format (ggml's block layout, a float16 scale
// per block): the quant package holds bitsandbytes' formats, which share
// neither the blocks nor the rounding rules.
//
// The rules are ggml's reference quantizers, quantize_row_q8_0_ref and
// quantize_row_q4_0_ref in ggml/src/ggml-quants.c (what llama-quantize uses
// without an importance matrix, and what gguf-py's quants.py reproduces
// for convert_hf_to_gguf.py --outtype q8_0), and the decoders
// dequantize_row_q8_0 / dequantize_row_q4_0 in the same file. All
// arithmetic is float32, each step rounded (explicit conversions keep Go
// from fusing a multiply and an add).
//
// Q8_0, per block of 32 values x:
//
//	amax = max |x|;  d = amax/127;  id = d ≠ 0 ? 1/d : 0
//	q[j] = roundf(x[j]·id)            (half away from zero)
//	stored: fp16(d) (round to nearest even), then the 32 int8 q
//	decoded: q[j]·fp32(d)
//
// Q4_0, per block of 32 values x:
//
//	max = the x[j] of largest |x[j]|, the first one on a tie (a signed max)
//	d = max/-8;  id = d ≠ 0 ? 1/d : 0
//	q[j] = min(15, trunc(x[j]·id + 8.5))  (so the signed max maps to code 0)
//	stored: fp16(d), then 16 bytes: byte j holds q[j] in its low nibble and
//	q[j+16] in its high nibble
//	decoded: (q[j]-8)·fp32(d)
//
// An all-zero Q4_0 block has d = 0/-8 = -0: its scale is stored as the
// float16 -0 (0x8000), every code is 8, and it decodes to -0.

// QK is the number of values in a Q8_0 or Q4_0 block.
const QK = 32

const (
	blockBytesQ8_0 = 2 + QK   // fp16 d, 32 int8
	blockBytesQ4_0 = 2 + QK/2 // fp16 d, 16 bytes of nibbles
	q4Offset       = float32(8.5)
)

// QuantizeQ8_0 writes the Q8_0 blocks of x (whose length must be a multiple
// of 32) into dst, which must hold len(x)/32*34 bytes.
func QuantizeQ8_0(dst []byte, x []float32) {
	checkBlocks("Q8_0", len(dst), len(x), blockBytesQ8_0)
	for b := 0; b < len(x)/QK; b++ {
		blk := x[QK*b : QK*b+QK]
		var amax float32
		for _, v := range blk {
			amax = max(amax, abs32(v))
		}
		d := float32(amax / 127)
		var id float32
		if d != 0 {
			id = float32(1 / d)
		}
		o := dst[blockBytesQ8_0*b : blockBytesQ8_0*(b+1)]
		binary.LittleEndian.PutUint16(o, f32ToF16(d))
		for j, v := range blk {
			o[2+j] = byte(int8(roundAway(float32(v * id))))
		}
	}
}

// DequantizeQ8_0 decodes Q8_0 blocks from src into dst (32 values a block).
func DequantizeQ8_0(dst []float32, src []byte) {
	checkBlocks("Q8_0", len(src), len(dst), blockBytesQ8_0)
	for b := 0; b < len(src)/blockBytesQ8_0; b++ {
		blk := src[blockBytesQ8_0*b : blockBytesQ8_0*(b+1)]
		d := f16ToF32(binary.LittleEndian.Uint16(blk))
		for j := 0; j < QK; j++ {
			dst[QK*b+j] = float32(int8(blk[2+j])) * d
		}
	}
}

// QuantizeQ4_0 writes the Q4_0 blocks of x (whose length must be a multiple
// of 32) into dst, which must hold len(x)/32*18 bytes.
func QuantizeQ4_0(dst []byte, x []float32) {
	checkBlocks("Q4_0", len(dst), len(x), blockBytesQ4_0)
	for b := 0; b < len(x)/QK; b++ {
		blk := x[QK*b : QK*b+QK]
		var amax, mx float32
		for _, v := range blk {
			if amax < abs32(v) { // strict: the first of equal magnitudes wins
				amax, mx = abs32(v), v
			}
		}
		d := float32(mx / -8)
		var id float32
		if d != 0 {
			id = float32(1 / d)
		}
		o := dst[blockBytesQ4_0*b : blockBytesQ4_0*(b+1)]
		binary.LittleEndian.PutUint16(o, f32ToF16(d))
		for j := 0; j < QK/2; j++ {
			lo := q4Code(float32(blk[j] * id))
			hi := q4Code(float32(blk[j+QK/2] * id))
			o[2+j] = lo | hi<<4
		}
	}
}

// q4Code is min(15, (int8_t)(x + 8.5f)): a float32 add, then truncation
// toward zero. x lies in [-8, 8] up to rounding, so the sum is positive.
func q4Code(x float32) uint8 {
	s := float32(x + q4Offset)
	c := int8(s)
	if c > 15 {
		c = 15
	}
	return uint8(c)
}

// DequantizeQ4_0 decodes Q4_0 blocks from src into dst (32 values a block).
func DequantizeQ4_0(dst []float32, src []byte) {
	checkBlocks("Q4_0", len(src), len(dst), blockBytesQ4_0)
	for b := 0; b < len(src)/blockBytesQ4_0; b++ {
		blk := src[blockBytesQ4_0*b : blockBytesQ4_0*(b+1)]
		d := f16ToF32(binary.LittleEndian.Uint16(blk))
		out := dst[QK*b : QK*b+QK]
		for j := 0; j < QK/2; j++ {
			q := blk[2+j]
			out[j] = float32(int(q&0x0f)-8) * d
			out[j+QK/2] = float32(int(q>>4)-8) * d
		}
	}
}

func checkBlocks(typ string, nbytes, nvalues, blockBytes int) {
	if nvalues%QK != 0 || nbytes != nvalues/QK*blockBytes {
		panic(fmt.Sprintf("format: %s: %d values in %d bytes are not whole blocks of %d values in %d bytes", typ, nvalues, nbytes, QK, blockBytes))
	}
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

// roundAway is C's roundf: to nearest, halves away from zero (exact in
// float64, which holds every float32).
func roundAway(v float32) float32 { return float32(math.Round(float64(v))) }

// F32ToF16 rounds a float32 to IEEE half precision, ties to even, as ggml's
// GGML_FP32_TO_FP16 does.
func F32ToF16(f float32) uint16 { return f32ToF16(f) }

// F16ToF32 widens an IEEE half-precision value exactly.
func F16ToF32(h uint16) float32 { return f16ToF32(h) }

// TensorAs encodes float32 values as a tensor of dtype F32, F16, BF16
// (round to nearest even, as ggml's converters), Q8_0 or Q4_0 (ggml's
// reference quantizers; rows must be whole blocks of 32). It panics if
// len(values) does not match the shape.
func TensorAs(name string, shape []int, values []float32, dtype DType) (*Tensor, error) {
	checkLen(name, shape, len(values))
	t := &Tensor{Name: name, DType: dtype, Shape: append([]int(nil), shape...)}
	le := binary.LittleEndian
	switch dtype {
	case F32:
		return TensorFromF32(name, shape, values), nil
	case F16:
		t.Data = make([]byte, 2*len(values))
		for i, v := range values {
			le.PutUint16(t.Data[2*i:], f32ToF16(v))
		}
		return t, nil
	case BF16:
		h := make([]uint16, len(values))
		kernels.F32ToBF16(h, values)
		return TensorFromBF16(name, shape, h), nil
	case Q8_0, Q4_0:
		if len(shape) == 0 || shape[len(shape)-1]%QK != 0 {
			return nil, fmt.Errorf("tensor %q: %s needs rows of whole blocks of %d values, the shape is %v", name, dtype, QK, shape)
		}
		if dtype == Q8_0 {
			t.Data = make([]byte, len(values)/QK*blockBytesQ8_0)
			QuantizeQ8_0(t.Data, values)
		} else {
			t.Data = make([]byte, len(values)/QK*blockBytesQ4_0)
			QuantizeQ4_0(t.Data, values)
		}
		return t, nil
	}
	return nil, fmt.Errorf("tensor %q: cannot encode float32 values as %s (F32, F16, BF16, Q8_0, Q4_0)", name, dtype)
}
