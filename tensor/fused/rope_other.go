//go:build !amd64 || purego

package fused

// ropeHalf is ropeHalfGo.
func ropeHalf(out, x, cos, sin []float32, sign float32, acc bool) {
	ropeHalfGo(out, x, cos, sin, sign, acc)
}
