//go:build amd64 && !purego

package fused

//go:noescape
func ropeHalfAVX512(out, x, cos, sin *float32, half int, sign float32, acc bool)

// ropeHalf is ropeHalfGo, sixteen pairs at a time on AVX-512.
func ropeHalf(out, x, cos, sin []float32, sign float32, acc bool) {
	half := len(cos)
	if !hasExpAVX512 || half == 0 {
		ropeHalfGo(out, x, cos, sin, sign, acc)
		return
	}
	_, _, _ = out[2*half-1], x[2*half-1], sin[half-1]
	ropeHalfAVX512(&out[0], &x[0], &cos[0], &sin[0], half, sign, acc)
}
