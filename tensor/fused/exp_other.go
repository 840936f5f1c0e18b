//go:build !amd64 || purego

package fused

// ExpTo sets dst[i] = Exp(src[i]) for i < len(src); dst may alias src.
func ExpTo(dst, src []float32) {
	expGo(dst[:len(src)], src)
}

// sigmoidTo sets dst[i] = 1/(1+Exp(-src[i])); dst may alias src.
func sigmoidTo(dst, src []float32) {
	sigmoidGo(dst[:len(src)], src)
}

// softmaxRow is softmaxRowGo.
func softmaxRow(row []float32, scale float32) (m float32, sum float64) {
	return softmaxRowGo(row, scale)
}

// rowMax is rowMaxGo.
func rowMax(x []float32) float32 { return rowMaxGo(x) }

// expSumTo is expSumGo.
func expSumTo(dst, x []float32, m float32) float64 { return expSumGo(dst, x, m) }
