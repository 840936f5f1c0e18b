//go:build amd64 && !purego

package fused

//go:noescape
func swigluMulAVX512(out, gate, up, s *float32, n int)

//go:noescape
func swigluGradAVX512(dgate, dup, dout, gate, up, s *float32, n int)

// swigluMul is swigluMulGo, sixteen lanes at a time on AVX-512.
func swigluMul(out, gate, up, s []float32) {
	if !hasExpAVX512 || len(s) == 0 {
		swigluMulGo(out, gate, up, s)
		return
	}
	n := len(s)
	swigluMulAVX512(&out[:n][0], &gate[:n][0], &up[:n][0], &s[0], n)
}

// swigluGrad is swigluGradGo, sixteen lanes at a time on AVX-512.
func swigluGrad(dgate, dup, dout, gate, up, s []float32) {
	if !hasExpAVX512 || len(s) == 0 {
		swigluGradGo(dgate, dup, dout, gate, up, s)
		return
	}
	n := len(s)
	var dg, du *float32
	if dgate != nil {
		dg = &dgate[:n][0]
	}
	if dup != nil {
		du = &dup[:n][0]
	}
	swigluGradAVX512(dg, du, &dout[:n][0], &gate[:n][0], &up[:n][0], &s[0], n)
}
