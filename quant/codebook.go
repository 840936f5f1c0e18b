package quant

import (
	"fmt"
	"math"
	"sort"
)

// Type is a 4-bit code book.
type Type uint8

const (
	// NF4 is 4-bit NormalFloat (QLoRA): 16 quantiles of N(0,1) scaled to
	// [-1, 1], with an exact zero.
	NF4 Type = iota + 1
	// FP4 is bitsandbytes' 4-bit float: 1 sign, 2 exponent and 1 mantissa
	// bit, divided by its largest magnitude (12).
	FP4
)

// BlockSize is the number of weights that share one absmax in 4-bit
// quantization. bitsandbytes accepts others; checkpoints and this package
// use 64 (transformers' default).
const BlockSize = 64

// NestedBlockSize is the block size of double quantization: absmax values
// quantized to 8 bits share one nested absmax per 256.
const NestedBlockSize = 256

// String returns bitsandbytes' name: "nf4" or "fp4".
func (t Type) String() string {
	switch t {
	case NF4:
		return "nf4"
	case FP4:
		return "fp4"
	}
	return fmt.Sprintf("quant.Type(%d)", uint8(t))
}

// ParseType reads bitsandbytes' quant_type names.
func ParseType(s string) (Type, error) {
	switch s {
	case "nf4":
		return NF4, nil
	case "fp4":
		return FP4, nil
	}
	return 0, fmt.Errorf("unknown 4-bit quant_type %q (want nf4 or fp4)", s)
}

// Code returns the code book: the value of each 4-bit code, in float32.
// It is what a checkpoint stores as weight.quant_map.
func (t Type) Code() [16]float32 { return books[t.check()].code }

func (t Type) check() Type {
	if t != NF4 && t != FP4 {
		panic(fmt.Sprintf("quant: invalid Type %d", uint8(t)))
	}
	return t
}

// book is a code book with what the quantizer needs.
type book struct {
	code  [16]float32
	mid   [15]float32 // midpoints of the sorted code book
	order [16]uint8   // order[i]: the code of the i-th smallest value
	zero  uint8       // the code of 0.0 (the padding nibble)
}

var books = map[Type]*book{NF4: newBook(nf4Values), FP4: newBook(fp4Values)}

// nf4Values: bitsandbytes' get_4bit_type("nf4"), the list as written there
// (create_normal_map(offset=0.9677083, use_extra_value=True) hard-coded),
// each rounded to float32 when the tensor is built. Its largest magnitude
// is 1, so the final division by it changes nothing.
var nf4Values = [16]float64{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// fp4Values: get_4bit_type("fp4") before its division by 12. The list there
// has "-0" at index 8, which is the Python integer 0: code 8 is +0.0, like
// code 0 (the CUDA kernel alone dequantizes it to -0.0).
var fp4Values = [16]float64{0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3}

// newBook builds a code book as bitsandbytes does: float32 values divided
// (in float32) by their largest magnitude; midpoints (a+b)/2 in float32 of
// neighbours in argsort order. bitsandbytes' argsort is torch's (not
// stable), but on these books it puts the two zeros of FP4 in index order,
// as a stable sort does (checked against the golden sorted_order): a scaled
// value in (-m, 0] gets FP4 code 0 and one in (0, m] code 8.
func newBook(v [16]float64) *book {
	var b book
	var maxAbs float32
	for i, x := range v {
		b.code[i] = float32(x)
		maxAbs = max(maxAbs, float32(math.Abs(x)))
	}
	for i := range b.code {
		b.code[i] /= maxAbs
	}
	idx := make([]int, 16)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return b.code[idx[i]] < b.code[idx[j]] })
	for i, c := range idx {
		b.order[i] = uint8(c)
	}
	for i := range b.mid {
		b.mid[i] = (b.code[idx[i]] + b.code[idx[i+1]]) / 2
	}
	b.zero = b.order[bucket(b.mid[:], 0)]
	return &b
}

// bucket returns the number of midpoints strictly below s: torch.bucketize
// with right=False, so a value equal to a midpoint goes to the lower side.
// mid is sorted; a NaN gets 0.
func bucket(mid []float32, s float32) int {
	lo, hi := 0, len(mid)
	for lo < hi {
		h := (lo + hi) / 2
		if mid[h] < s {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo
}

// DynamicMap returns bitsandbytes' 8-bit dynamic map
// (create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)), the
// code book of double quantization (weight.nested_quant_map) and of the
// first state (exp_avg) of the 8-bit optimizers (qmap1): for exponent
// i = 0..6, the 2^i midpoints of linspace(0.1, 1, 2^i+1) scaled by
// 10^(i-6), with both signs, then 0 and 1, sorted (256 values).
//
// The map is built with float32 tensor arithmetic, so its last bits depend
// on how PyTorch's CPU linspace kernel rounds. That kernel computes
// start+step*i for the first half and end-step*(steps-1-i) for the second,
// but its vectorized loop (8 lanes, AVX2, for pairs of whole vectors) starts
// each vector at that base and adds l*step for lane l; the build fuses the
// base's multiply-add into an FMA but not the lanes'. Only that combination
// reproduces every bit of the map bitsandbytes ships (other choices miss 4
// to 46 of the 256 values), and that is what is built here. A checkpoint
// stores the map it was quantized with (weight.nested_quant_map), and
// loading uses the stored one.
func DynamicMap() [256]float32 { return dynamicMap }

// UnsignedDynamicMap returns create_dynamic_map(signed=False): the code
// book of the 8-bit optimizers' second state (exp_avg_sq, qmap2, which is
// never negative). Without a sign bit each exponent i = 0..6 gets twice the
// fractions: the 2^(i+1) midpoints of linspace(0.1, 1, 2^(i+1)+1) scaled by
// 10^(i-6), then 0 and 1, sorted (256 values, map[0] = 0, map[255] = 1).
// It is built by the same float32 rules as DynamicMap; the signed map is
// checked bit for bit against bitsandbytes, this one (whose largest
// linspace, 129 points, runs the same vector loop further) is not.
func UnsignedDynamicMap() [256]float32 { return unsignedDynamicMap }

var (
	dynamicMap         = buildDynamicMap(true)
	unsignedDynamicMap = buildDynamicMap(false)
)

func buildDynamicMap(signed bool) [256]float32 {
	var data []float64
	for i := 0; i < 7; i++ {
		n := 1<<(i+1) + 1
		if signed {
			n = 1<<i + 1
		}
		b := torchLinspace32(0.1, 1, n)
		scale := float32(math.Pow(10, float64(i-6))) // a Python float scalar, applied in float32
		for j := 0; j+1 < n; j++ {
			m := (b[j] + b[j+1]) / 2
			v := float64(scale * m)
			data = append(data, v)
			if signed {
				data = append(data, -v)
			}
		}
	}
	data = append(data, 0, 1)
	sort.Float64s(data)
	var out [256]float32
	if len(data) != len(out) {
		panic("quant: dynamic map size")
	}
	for i, v := range data {
		out[i] = float32(v)
	}
	return out
}

// torchLinspace32 is torch.linspace(start, end, steps, dtype=float32) as
// PyTorch's CPU kernel computes it on an AVX2 build (see DynamicMap).
func torchLinspace32(start, end float32, steps int) []float32 {
	const lanes = 8
	out := make([]float32, steps)
	step := (end - start) / float32(steps-1)
	half := steps / 2
	base := func(i int) float32 {
		if i < half {
			return fma32(step, float32(i), start)
		}
		return fma32(-step, float32(steps-1-i), end)
	}
	i := 0
	for ; i+2*lanes <= steps; i += 2 * lanes { // two vectors at a time
		for v := i; v < i+2*lanes; v += lanes {
			b := base(v)
			for l := 0; l < lanes; l++ {
				out[v+l] = b + float32(float32(l)*step)
			}
		}
	}
	for ; i < steps; i++ {
		out[i] = base(i)
	}
	return out
}

// fma32 is a float32 fused multiply-add: the float64 product of two float32
// values is exact, and the float64 sum rounded to float32 agrees with a
// single float32 rounding on every value used here (checked bit for bit).
func fma32(a, b, c float32) float32 {
	return float32(math.FMA(float64(a), float64(b), float64(c)))
}
