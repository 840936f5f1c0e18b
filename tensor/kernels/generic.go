package kernels

// goImpl is the portable path: plain Go loops the compiler keeps in
// registers. It is the only path off amd64 or with -tags purego.
var goImpl = &impl{
	name: "go",
	blockKernel: blockKernel{
		mr: 4, nr: 4,
		kc: 256, nc: 256,
		micro: microGo,
	},
	dot4:  dot4Go,
	dot4h: dot4hGo,
	axpy:  axpyGo,
	axpyh: axpyhGo,
}

// microGo is the 4×4 micro-kernel: 16 scalar accumulators.
func microGo(kc int, a, b, c []float32, ldc int, accumulate bool) {
	var c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33 float32
	a, b = a[:4*kc], b[:4*kc]
	for len(a) >= 4 && len(b) >= 4 {
		b0, b1, b2, b3 := b[0], b[1], b[2], b[3]
		a0 := a[0]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		a1 := a[1]
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		a2 := a[2]
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		a3 := a[3]
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
		a, b = a[4:], b[4:]
	}
	rows := [4][4]float32{{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}}
	for r := range rows {
		dst := c[r*ldc : r*ldc+4]
		if accumulate {
			dst[0] += rows[r][0]
			dst[1] += rows[r][1]
			dst[2] += rows[r][2]
			dst[3] += rows[r][3]
		} else {
			copy(dst, rows[r][:])
		}
	}
}

func dot4Go(k int, x, w []float32, ldw int, y *[4]float32) {
	x = x[:k]
	w0, w1, w2, w3 := w[:k], w[ldw:ldw+k], w[2*ldw:2*ldw+k], w[3*ldw:3*ldw+k]
	var s0, s1, s2, s3 float32
	for p, v := range x {
		s0 += v * w0[p]
		s1 += v * w1[p]
		s2 += v * w2[p]
		s3 += v * w3[p]
	}
	*y = [4]float32{s0, s1, s2, s3}
}

func dot4hGo(k int, x []float32, w []BF16, ldw int, y *[4]float32) {
	x = x[:k]
	w0, w1, w2, w3 := w[:k], w[ldw:ldw+k], w[2*ldw:2*ldw+k], w[3*ldw:3*ldw+k]
	var s0, s1, s2, s3 float32
	for p, v := range x {
		s0 += v * FromBF16(w0[p])
		s1 += v * FromBF16(w1[p])
		s2 += v * FromBF16(w2[p])
		s3 += v * FromBF16(w3[p])
	}
	*y = [4]float32{s0, s1, s2, s3}
}

// axpyGo sums rows of b scaled by x into y, for columns blocked so the
// partial sums stay in L1.
func axpyGo(k, n int, x, b []float32, ldb int, y []float32, accumulate bool) {
	var acc [256]float32
	for j0 := 0; j0 < n; j0 += len(acc) {
		s := acc[:min(len(acc), n-j0)]
		clear(s)
		for p, v := range x[:k] {
			row := b[p*ldb+j0 : p*ldb+j0+len(s)]
			for j, bv := range row {
				s[j] += v * bv
			}
		}
		storeRow(y[j0:j0+len(s)], s, accumulate)
	}
}

func axpyhGo(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool) {
	var acc [256]float32
	for j0 := 0; j0 < n; j0 += len(acc) {
		s := acc[:min(len(acc), n-j0)]
		clear(s)
		for p, v := range x[:k] {
			row := b[p*ldb+j0 : p*ldb+j0+len(s)]
			for j, bv := range row {
				s[j] += v * FromBF16(bv)
			}
		}
		storeRow(y[j0:j0+len(s)], s, accumulate)
	}
}

// storeRow sets dst = src, or dst += src when accumulate is set.
func storeRow(dst, src []float32, accumulate bool) {
	if !accumulate {
		copy(dst, src)
		return
	}
	dst = dst[:len(src)]
	for j, v := range src {
		dst[j] += v
	}
}
