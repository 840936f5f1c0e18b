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
// A stays float32: B is widened exactly to float32 while it is packed (or,
// for M=1, in registers), so the result equals Gemm on the widened B.
func GemmBF16(transB bool, m, n, k int, a []float32, lda int, b []BF16, ldb int, c []float32, ldc int, accumulate bool) {
	checkGemm(false, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	gemm(active, false, m, n, k, a, lda, bMat{h: b, ld: ldb, trans: transB}, c, ldc, accumulate)
}
