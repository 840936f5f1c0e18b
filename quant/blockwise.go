package quant

import (
	"fmt"
	"math"
)

// minAbsmax is float32(1e-38) (bit pattern 006ce3ee, a subnormal): the
// floor bitsandbytes clamps absmax to before dividing by it.
var minAbsmax = float32(1e-38)

// Tensor4 is a tensor quantized to 4 bits in blocks of BlockSize, as
// bitsandbytes' Params4bit holds it: the packed codes (weight), one absmax
// per block (weight.absmax) or, with double quantization, their 8-bit codes
// (Nested, Offset) instead.
type Tensor4 struct {
	Type  Type
	Shape []int
	// DType is the dtype of the tensor that was quantized ("float32",
	// "bfloat16" or "float16"), recorded in the quant state; dequantization
	// here always gives float32.
	DType string
	// Packed holds element e's code in byte e/2: the high nibble when e is
	// even, the low nibble when odd. An odd count pads the last low nibble.
	Packed []byte
	// Absmax is the scale of each block (nil with double quantization).
	Absmax []float32
	// Nested, with double quantization, holds the 8-bit codes of
	// Absmax-Offset in blocks of NestedBlockSize.
	Nested *Blockwise8
	Offset float32
}

// Numel is the number of elements the shape describes.
func (q *Tensor4) Numel() int { return numel(q.Shape) }

// Blocks is the number of blocks of BlockSize (the last may be partial).
func (q *Tensor4) Blocks() int { return (q.Numel() + BlockSize - 1) / BlockSize }

// Scales returns each block's absmax as dequantization uses it: Absmax, or
// with double quantization Nested dequantized plus Offset.
func (q *Tensor4) Scales() []float32 {
	if q.Nested == nil {
		return q.Absmax
	}
	s := q.Nested.Dequantize(nil)
	for i, v := range s {
		s[i] = v + q.Offset // a second rounding, as bitsandbytes adds after dequantizing
	}
	return s
}

// Code returns the 4-bit code of element e.
func (q *Tensor4) Code(e int) uint8 { return nibble(q.Packed, e) }

func nibble(p []byte, e int) uint8 {
	b := p[e>>1]
	if e&1 == 0 {
		return b >> 4
	}
	return b & 15
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Quantize4 quantizes x (row-major, of the given shape) to 4 bits with
// bitsandbytes' quantize_4bit(blocksize=64, quant_storage=uint8), and with
// double quantization when double is set (compress_statistics=True). The
// input is recorded as DType "float32". It panics if the shape does not
// describe len(x) elements.
func Quantize4(t Type, x []float32, shape []int, double bool) *Tensor4 {
	bk := books[t.check()]
	n := numel(shape)
	if n != len(x) {
		panic(fmt.Sprintf("quant.Quantize4: shape %v has %d elements, data %d", shape, n, len(x)))
	}
	q := &Tensor4{Type: t, Shape: append([]int(nil), shape...), DType: "float32"}
	q.Packed = make([]byte, (n+1)/2)
	q.Absmax = blockAbsmax(x, BlockSize)
	var codes [BlockSize]uint8
	for b := range q.Absmax {
		lo, hi := b*BlockSize, min(n, (b+1)*BlockSize)
		scaleBlock(x[lo:hi], q.Absmax, b, hi-lo < BlockSize, func(i int, s float32) {
			codes[i] = bk.order[bucket(bk.mid[:], s)]
		})
		for i := lo; i < hi; i++ {
			c := codes[i-lo]
			if i&1 == 0 {
				q.Packed[i>>1] = c << 4
			} else {
				q.Packed[i>>1] |= c
			}
		}
	}
	if n&1 == 1 {
		q.Packed[n>>1] |= bk.zero
	}
	if double {
		q.Nested, q.Offset = doubleQuantize(q.Absmax)
		q.Absmax = nil
	}
	return q
}

// blockAbsmax returns max |x| of each block of bs consecutive elements.
func blockAbsmax(x []float32, bs int) []float32 {
	am := make([]float32, (len(x)+bs-1)/bs)
	for b := range am {
		var m float32
		for _, v := range x[b*bs : min(len(x), (b+1)*bs)] {
			m = max(m, float32(math.Abs(float64(v))))
		}
		am[b] = m
	}
	return am
}

// scaleBlock calls code(i, s) with the scaled value s of each element of
// block b (x is the block), by bitsandbytes' PyTorch rules: a full block
// multiplies by the float32 reciprocal of its clamped absmax; the last
// partial block (partial) divides by its clamped absmax, which replaces
// absmax[b]. Both clamp s to [-1, 1].
//
// The two differ: with absmax 3, x*fl(1/3) and x/3 fall on different sides
// of an NF4 midpoint for some x (golden case partial_tail), so a quantizer
// that always multiplies, as bitsandbytes' CUDA kernel does, gives other
// codes in the last block.
func scaleBlock(x []float32, absmax []float32, b int, partial bool, code func(i int, s float32)) {
	am := max(absmax[b], minAbsmax)
	if partial {
		absmax[b] = am
		for i, v := range x {
			code(i, clamp1(v/am))
		}
		return
	}
	r := 1 / am
	for i, v := range x {
		code(i, clamp1(v*r))
	}
}

func clamp1(s float32) float32 { return min(max(s, -1), 1) }

// Dequantize returns the float32 tensor (flattened row-major), in dst when
// it has room: book[code] * scale, one float32 multiply per element, the
// values bitsandbytes' dequantize_4bit gives.
func (q *Tensor4) Dequantize(dst []float32) []float32 {
	n := q.Numel()
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	code := books[q.Type.check()].code
	scales := q.Scales()
	for b, s := range scales {
		var lut [16]float32
		for i, c := range code {
			lut[i] = float32(c * s)
		}
		for e := b * BlockSize; e < min(n, (b+1)*BlockSize); e++ {
			dst[e] = lut[nibble(q.Packed, e)]
		}
	}
	return dst
}

// Blockwise8 is a vector quantized to 8 bits in blocks (bitsandbytes'
// quantize_blockwise): one code per element into Map, one absmax per block.
// Double quantization stores the 4-bit absmax vector this way.
type Blockwise8 struct {
	Codes     []uint8
	Absmax    []float32
	Map       [256]float32 // sorted ascending (the quantizer assumes it)
	BlockSize int
}

// QuantizeBlockwise8 quantizes x with the sorted 256-entry code book m in
// blocks of bs, by the rules of the 4-bit quantizer: absmax per block, a
// full block multiplied by the reciprocal of its clamped absmax, the last
// partial block divided (its clamped absmax stored), each scaled value
// given the code of the nearest map entry, a midpoint taking the lower.
func QuantizeBlockwise8(x []float32, m [256]float32, bs int) *Blockwise8 {
	if bs <= 0 {
		panic(fmt.Sprintf("quant.QuantizeBlockwise8: block size %d", bs))
	}
	q := &Blockwise8{Codes: make([]uint8, len(x)), Absmax: make([]float32, (len(x)+bs-1)/bs), Map: m, BlockSize: bs}
	NewCode8(m).Quantize(x, bs, q.Codes, q.Absmax)
	return q
}

// Code8 is a sorted 256-entry 8-bit code book (DynamicMap,
// UnsignedDynamicMap) ready to quantize in place, without allocating: the
// 8-bit optimizers requantize their state with it on every step.
type Code8 struct {
	Map [256]float32
	mid [255]float32 // (Map[i]+Map[i+1])/2 in float32, bitsandbytes' bounds
	// start[k] is the code of the lowest float32 whose top 16 bits are k:
	// a lower bound for any value in that bin, from which a short scan of
	// the midpoints finds the exact code (the maps' entries are at least
	// 0.7% apart, about the width of a bin, so the scan takes a step or
	// two). This replaces a branchy binary search per element.
	start [1 << 16]uint8
}

// NewCode8 prepares the sorted code book m.
func NewCode8(m [256]float32) *Code8 {
	c := &Code8{Map: m}
	for i := range c.mid {
		c.mid[i] = (m[i] + m[i+1]) / 2
	}
	for k := range c.start {
		low := uint32(k) << 16 // the smallest magnitude: lowest for a positive bin
		if k&0x8000 != 0 {
			low |= 0xffff // the largest magnitude: lowest for a negative bin
		}
		if k&0x7f80 == 0x7f80 { // ±Inf and NaNs: scan from 0, which leaves a NaN at code 0 as bucket does
			continue
		}
		c.start[k] = uint8(bucket(c.mid[:], math.Float32frombits(low)))
	}
	return c
}

// code is bucket(mid, s), the number of midpoints strictly below s.
func (c *Code8) code(s float32) uint8 {
	q := int(c.start[math.Float32bits(s)>>16])
	for q < len(c.mid) && c.mid[q] < s {
		q++
	}
	return uint8(q)
}

// Quantize writes the codes of x into codes (len(x)) and each block's
// absmax into absmax (one per block of bs, the last block possibly
// partial), by QuantizeBlockwise8's rules: bitsandbytes' quantize_blockwise
// as its PyTorch kernel computes it (backends/default/ops.py). x may be
// any run of whole blocks of a longer vector; a short last block counts as
// the vector's partial tail (divided, its clamped absmax stored).
func (c *Code8) Quantize(x []float32, bs int, codes []uint8, absmax []float32) {
	nb := (len(x) + bs - 1) / bs
	if bs <= 0 || len(codes) < len(x) || len(absmax) < nb {
		panic(fmt.Sprintf("quant.Code8.Quantize: %d values in blocks of %d into %d codes and %d absmax", len(x), bs, len(codes), len(absmax)))
	}
	for b := 0; b < nb; b++ {
		lo, hi := b*bs, min(len(x), (b+1)*bs)
		blk, out := x[lo:hi], codes[lo:hi]
		var m float32
		for _, v := range blk {
			m = max(m, float32(math.Abs(float64(v))))
		}
		// scaleBlock's rules, inlined: a full block multiplies by the
		// reciprocal of its clamped absmax, the partial tail divides.
		am := max(m, minAbsmax)
		if hi-lo < bs {
			absmax[b] = am
			for i, v := range blk {
				out[i] = c.code(clamp1(v / am))
			}
			continue
		}
		absmax[b] = m
		r := 1 / am
		for i, v := range blk {
			out[i] = c.code(clamp1(v * r))
		}
	}
}

// Dequantize writes Map[code]*absmax[block] for each code into dst
// (len(codes)), one float32 multiply, as bitsandbytes' dequantize_blockwise.
func (c *Code8) Dequantize(codes []uint8, absmax []float32, bs int, dst []float32) {
	dst = dst[:len(codes)]
	for i, q := range codes {
		dst[i] = float32(c.Map[q] * absmax[i/bs])
	}
}

// Dequantize returns Map[code]*Absmax[block] for every element, in dst when
// it has room.
func (q *Blockwise8) Dequantize(dst []float32) []float32 {
	n := len(q.Codes)
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	for i, c := range q.Codes {
		dst[i] = float32(q.Map[c] * q.Absmax[i/q.BlockSize])
	}
	return dst
}

// doubleQuantize quantizes a 4-bit tensor's absmax vector: the offset is
// its float32 mean, and absmax-offset is quantized with the dynamic map in
// blocks of NestedBlockSize. When all absmax are equal (one block, say) the
// differences are all zero: the nested absmax is stored as 1e-38 and every
// code is 127 (the map's 0.0), as bitsandbytes' PyTorch backend does.
func doubleQuantize(absmax []float32) (*Blockwise8, float32) {
	off := mean32(absmax)
	d := make([]float32, len(absmax))
	for i, a := range absmax {
		d[i] = a - off
	}
	return QuantizeBlockwise8(d, dynamicMap, NestedBlockSize), off
}

// mean32 is PyTorch's float32 mean on CPU: a float32 sum divided by the
// count in float32. PyTorch sums in float32 in a cascade whose rounding
// depends on the vector width; here the sum is accumulated in float64 and
// rounded once, which equals PyTorch's whenever its partial sums are exact
// (the golden cases are built so) and may differ in the last bit of the
// offset otherwise. The offset a checkpoint stores is read back as stored.
func mean32(x []float32) float32 {
	if len(x) == 0 {
		return 0
	}
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	return float32(s) / float32(len(x))
}
