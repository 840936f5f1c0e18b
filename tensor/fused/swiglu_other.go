//go:build !amd64 || purego

package fused

// swigluMul is swigluMulGo.
func swigluMul(out, gate, up, s []float32) { swigluMulGo(out, gate, up, s) }

// swigluGrad is swigluGradGo.
func swigluGrad(dgate, dup, dout, gate, up, s []float32) {
	swigluGradGo(dgate, dup, dout, gate, up, s)
}
