//go:build amd64 && !purego

package fused

import (
	"math"

	"golang.org/x/sys/cpu"
)

//go:noescape
func expAVX512(dst, src *float32, n int, c *[17]float32, sigmoid bool)

//go:noescape
func softmaxAVX512(row *float32, n int, scale float32, c *[17]float32) (m float32, sum float64)

//go:noescape
func maxAVX512(x *float32, n int) float32

//go:noescape
func expSumAVX512(dst, src *float32, n int, m float32, c *[17]float32) float64

var hasExpAVX512 = cpu.X86.HasAVX512F

// expConsts are Exp's constants, as expAVX512 reads them.
var expConsts = [17]float32{
	1.44269504088896341, 0.693359375, -2.12194440e-4,
	1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1,
	1, 2, math.Float32frombits(0x80000000), 0.5, math.Float32frombits(127),
	-87.33654, 88.72283, float32(math.Inf(1)),
}

// ExpTo sets dst[i] = Exp(src[i]) for i < len(src); dst may alias src.
// On AVX-512 it runs sixteen lanes at a time with Exp's exact arithmetic.
func ExpTo(dst, src []float32) {
	if len(src) == 0 {
		return
	}
	dst = dst[:len(src)]
	if hasExpAVX512 {
		expAVX512(&dst[0], &src[0], len(src), &expConsts, false)
		return
	}
	expGo(dst, src)
}

// sigmoidTo sets dst[i] = 1/(1+Exp(-src[i])); dst may alias src.
func sigmoidTo(dst, src []float32) {
	if len(src) == 0 {
		return
	}
	dst = dst[:len(src)]
	if hasExpAVX512 {
		expAVX512(&dst[0], &src[0], len(src), &expConsts, true)
		return
	}
	sigmoidGo(dst, src)
}

// softmaxRow is softmaxRowGo, sixteen lanes at a time on AVX-512.
func softmaxRow(row []float32, scale float32) (m float32, sum float64) {
	if hasExpAVX512 && len(row) > 0 {
		return softmaxAVX512(&row[0], len(row), scale, &expConsts)
	}
	return softmaxRowGo(row, scale)
}

// rowMax is rowMaxGo, sixteen lanes at a time on AVX-512: the same
// maximum, a NaN never being it (only the sign of a zero maximum may
// differ, which no caller sees).
func rowMax(x []float32) float32 {
	if hasExpAVX512 && len(x) > 0 {
		return maxAVX512(&x[0], len(x))
	}
	return rowMaxGo(x)
}

// expSumTo is expSumGo, sixteen lanes at a time on AVX-512 with the same
// bits; dst is nil or len(x) long (and may be x).
func expSumTo(dst, x []float32, m float32) float64 {
	if !hasExpAVX512 || len(x) == 0 {
		return expSumGo(dst, x, m)
	}
	var d *float32
	if dst != nil {
		d = &dst[:len(x)][0]
	}
	return expSumAVX512(d, &x[0], len(x), m, &expConsts)
}
