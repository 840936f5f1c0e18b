package fused

import "math"

// Exp is a float32 e^x accurate to about 2 ulp and several times faster
// than going through float64 math.Exp: Cody–Waite range
// reduction x = n·ln2 + r, |r| ≤ ln2/2, then Cephes' expf polynomial for
// e^r, scaled by 2^n through the exponent bits. Exp(-Inf) = 0, results
// below 2^-126 flush to 0, and x > 88.72 gives +Inf; NaN stays NaN.
func Exp(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2Hi = 0.693359375
		ln2Lo = -2.12194440e-4
	)
	switch {
	case x != x:
		return x
	case x < -87.33654:
		return 0
	case x > 88.72283:
		return float32(math.Inf(1))
	}
	// Round x·log2e to nearest by truncating after adding ±0.5.
	t := x * log2e
	if t < 0 {
		t -= 0.5
	} else {
		t += 0.5
	}
	ni := int32(t)
	n := float32(ni)
	r := x - n*ln2Hi - n*ln2Lo
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	p = p*r*r + r + 1
	if ni > 127 { // 2^128 has no float32 exponent: take one factor 2 aside
		p *= 2
		ni--
	}
	return p * math.Float32frombits(uint32(ni+127)<<23)
}

func expGo(dst, src []float32) {
	for i, x := range src {
		dst[i] = Exp(x)
	}
}

func sigmoidGo(dst, src []float32) {
	for i, x := range src {
		dst[i] = 1 / (1 + Exp(-x))
	}
}

// softmaxRowGo turns the raw scores of one attention row into
// probabilities in place: v = row·scale, m = max v, e = Exp(v − m),
// row = e·float32(1/sum) with sum = Σ e in float64, and returns m and sum.
// If m is −Inf (no key visible) it stops after scaling and returns sum 0.
// The sum is expSumGo's: sixteen lanes folded in a fixed order, exactly as
// the AVX-512 version adds them.
func softmaxRowGo(row []float32, scale float32) (m float32, sum float64) {
	m = float32(math.Inf(-1))
	for j, v := range row {
		v *= scale
		row[j] = v
		if v > m { // a NaN score is not the max, but makes its row NaN below
			m = v
		}
	}
	if math.IsInf(float64(m), -1) {
		return m, 0
	}
	sum = expSumGo(row, row, m)
	inv := float32(1 / sum)
	for j := range row {
		row[j] *= inv
	}
	return m, sum
}

// addLanes adds x, widened to float64, into sixteen lane sums: element j
// into lane j mod 16 (so a caller going by blocks of a multiple of 16 keeps
// each element's lane), as the AVX-512 kernels add them.
func addLanes(lane *[16]float64, x []float32) {
	for j, e := range x {
		lane[j%16] += float64(e)
	}
}

// foldLanes adds the sixteen lane sums in the AVX-512 kernels' fixed order:
// ((u0+u4)+(u2+u6)) + ((u1+u5)+(u3+u7)) with u_i = lane i + lane i+8.
func foldLanes(lane *[16]float64) float64 {
	var u [8]float64
	for i := range u {
		u[i] = lane[i] + lane[i+8]
	}
	return ((u[0] + u[4]) + (u[2] + u[6])) + ((u[1] + u[5]) + (u[3] + u[7]))
}

// rowMaxGo is the largest element of x (−Inf for an empty row); a NaN is
// never the maximum.
func rowMaxGo(x []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range x {
		if v > m {
			m = v
		}
	}
	return m
}

// expSumGo returns Σ Exp(v − m) over x in float64, by sixteen lanes folded
// in a fixed order (addLanes, foldLanes); with dst (len(x) long, which may
// be x) the exponentials are stored there too.
func expSumGo(dst, x []float32, m float32) float64 {
	var buf [expBlock]float32
	var lane [16]float64
	for b := 0; b < len(x); b += expBlock { // expBlock is a multiple of 16
		n := min(expBlock, len(x)-b)
		e := buf[:n]
		if dst != nil {
			e = dst[b : b+n]
		}
		for j := range e {
			e[j] = x[b+j] - m
		}
		ExpTo(e, e)
		addLanes(&lane, e)
	}
	return foldLanes(&lane)
}
