package kernels

import "math"

// BF16 is a bfloat16 bit pattern: the high 16 bits of a float32.
type BF16 = uint16

// FromBF16 widens one bfloat16 to float32 exactly.
func FromBF16(h BF16) float32 { return math.Float32frombits(uint32(h) << 16) }

// ToBF16 rounds a float32 to the nearest bfloat16, ties to even, as PyTorch
// does; NaN stays NaN.
func ToBF16(f float32) BF16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN: keep it quiet and non-zero
		return BF16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return BF16(u >> 16)
}

// BF16ToF32 widens src into dst (len(dst) >= len(src)).
func BF16ToF32(dst []float32, src []BF16) {
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = FromBF16(h)
	}
}

// F32ToBF16 rounds src into dst (len(dst) >= len(src)).
func F32ToBF16(dst []BF16, src []float32) {
	dst = dst[:len(src)]
	for i, f := range src {
		dst[i] = ToBF16(f)
	}
}

// GemmBF16 is Gemm with B stored as bfloat16 (a frozen weight kept at half
// the memory); products are accumulated in float32. transA is not supported
// (weights are the right operand in every layout that uses them).
//
// Numerics depend on the path chosen at start-up:
//
//   - Widening (no AVX512_BF16; and, on AVX512_BF16 CPUs without usable
//     AMX, the blocked path and the stored-k×n GEMV): A stays float32 and B is widened
//     exactly to float32 while it is packed (or, for M=1, in registers), so
//     the result equals Gemm on the widened B.
//   - VDPBF16PS (AVX512_BF16 CPUs: the transposed GEMV, M ≤
//     RowInvariantRows with transB, i.e. decoding through a Linear) and AMX TDPBF16PS (M > 1 on CPUs with
//     AMX-BF16 whose OS grants the tile state): A is rounded to bf16
//     (nearest even, as ToBF16; denormals flushed to zero) and the exact
//     bf16 products are summed in float32 (VDPBF16PS: pairs; TDPBF16PS:
//     blocks of 32 k, in the hardware's order, then in K order). The result
//     equals Gemm on the rounded A and the widened B within float32
//     summation rounding, and differs from the widening path by A's rounding
//     (relative 2⁻⁹ per element).
//
// The blocked VDPBF16PS path (M > 1, impl "avx512bf16") is the default
// where VDPBF16PS issues as fast as an FMA (vdpbf16FullRate: AVX512_BF16
// without AMX, e.g. AMD Zen 4, where it gives 1.45–1.7× the widening GEMM);
// on the Xeons with AMX it issues at half the FMA rate and widening (or AMX)
// is faster.
func GemmBF16(transB bool, m, n, k int, a []float32, lda int, b []BF16, ldb int, c []float32, ldc int, accumulate bool) {
	checkGemm(false, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	gemm(active, false, m, n, k, a, lda, bMat{h: b, ld: ldb, trans: transB}, c, ldc, accumulate, false)
}

// NativeBF16 reports whether this CPU multiplies bf16 natively in the
// blocked GEMM: the path chosen at start-up has bf16-pair kernels
// (VDPBF16PS where it issues at the FMA rate, or AMX-BF16 where the OS
// grants the tile state). There GemmBF16 and 4-bit weights computed in bf16
// run at up to twice the float32 FMA rate on half the bytes, so training
// holds its frozen base in bf16 by default (mixed precision, as
// torch.autocast's bf16). Elsewhere (an AMX Xeon whose OS refuses the
// tiles, a CPU without AVX512_BF16) a bf16 B is widened to float32 as it
// is packed, and the default stays float32.
func NativeBF16() bool { return active.bf16 != nil }
