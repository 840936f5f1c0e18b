package quant

import (
	"fmt"
	"math"
)

// Int8 is a matrix [Rows, Cols] quantized row-wise to int8 as LLM.int8's
// Linear8bitLt stores its weight: CB (the checkpoint's "weight", I8
// [Rows, Cols]) and SCB (the checkpoint's "SCB", F32 [Rows]), the absmax of
// each row.
type Int8 struct {
	Rows, Cols int
	CB         []int8
	SCB        []float32
}

// QuantizeInt8 quantizes w (rows×cols, row-major) with bitsandbytes'
// int8_vectorwise_quant (threshold 0): SCB[r] = max |w[r,:]| and
// CB = round(w * fl(127/SCB[r])), a float32 multiply by the float32
// quotient, rounded half to even (torch.round). An all-zero row has SCB 0;
// its quotient is +Inf and 0·Inf is NaN, whose conversion to int8 the
// PyTorch backend leaves to the platform (the CUDA kernel's
// __float2int_rn gives 0): here its codes are 0, which dequantize to 0
// either way.
//
// Linear8bitLt casts the weight to float16 before quantizing it; pass
// RoundFloat16 of the weight to reproduce a checkpoint it wrote.
func QuantizeInt8(w []float32, rows, cols int) *Int8 {
	if rows < 0 || cols < 0 || rows*cols != len(w) {
		panic(fmt.Sprintf("quant.QuantizeInt8: %d×%d for %d values", rows, cols, len(w)))
	}
	q := &Int8{Rows: rows, Cols: cols, CB: make([]int8, len(w)), SCB: make([]float32, rows)}
	for r := 0; r < rows; r++ {
		row := w[r*cols : (r+1)*cols]
		var m float32
		for _, v := range row {
			m = max(m, float32(math.Abs(float64(v))))
		}
		q.SCB[r] = m
		if m == 0 {
			continue
		}
		s := 127 / m
		for i, v := range row {
			q.CB[r*cols+i] = int8(math.RoundToEven(float64(v * s)))
		}
	}
	return q
}

// int8Recip127 is the constant bitsandbytes dequantizes with
// (7.874015718698502e-3, float32(1/127)).
const int8Recip127 = float32(7.874015718698502e-3)

// Dequantize returns CB*SCB*fl(1/127) for every element (bitsandbytes'
// int8_vectorwise_dequant: two float32 multiplies, in that order), in dst
// when it has room.
func (q *Int8) Dequantize(dst []float32) []float32 {
	n := q.Rows * q.Cols
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	for r := 0; r < q.Rows; r++ {
		s := q.SCB[r]
		for i, c := range q.CB[r*q.Cols : (r+1)*q.Cols] {
			dst[r*q.Cols+i] = float32(float32(c)*s) * int8Recip127
		}
	}
	return dst
}

// RoundFloat16 rounds x to the nearest float16 value (ties to even, with
// float16's subnormals; beyond its range to ±Inf) and returns it as a
// float32, as PyTorch's .to(torch.float16) does.
func RoundFloat16(x float32) float32 {
	a := math.Abs(float64(x))
	switch {
	case math.IsNaN(a) || math.IsInf(a, 0):
		return x
	case a >= 65520: // halfway between 65504 (the largest float16) and 65536
		return float32(math.Copysign(math.Inf(1), float64(x)))
	}
	// Quantum of the float16 binade holding a: 2^(e-10), at least 2^-24.
	_, e := math.Frexp(a) // a = f·2^e, f in [0.5, 1)
	ulp := math.Ldexp(1, max(e-11, -24))
	return float32(math.Copysign(math.RoundToEven(a/ulp)*ulp, float64(x)))
}
