package kernels

import "github.com/gopeft/gopeft/tensor/parallel"

// gemvGrain is the number of output columns per parallel chunk: enough work
// (grain·k weights) to amortise a hand-off, and a multiple of 4 and 128.
const gemvGrain = 128

// gemv is the M=1 path (decoding): c[0:n] (+)= x·op(B), with x the single
// row of op(A). It streams B once, without packing.
func gemv(im *impl, transA bool, n, k int, a []float32, lda int, b bMat, c []float32, accumulate bool) {
	x := a[:k]
	if transA && lda != 1 { // A stored k×1: gather the column
		buf := getBuf(k)
		defer putBuf(buf)
		x = *buf
		for p := range x {
			x[p] = a[p*lda]
		}
	}
	serial := 2*n*k < serialFlops || parallel.Threads() == 1
	if !b.trans {
		forPar(serial, n, gemvGrain, func(lo, hi int) {
			if b.h != nil {
				im.axpyh(k, hi-lo, x, b.h[lo:], b.ld, c[lo:hi], accumulate)
			} else {
				im.axpy(k, hi-lo, x, b.f[lo:], b.ld, c[lo:hi], accumulate)
			}
		})
		return
	}
	// B stored n×k: one dot product per output, four rows at a time.
	forPar(serial, n, gemvGrain, func(lo, hi int) {
		var y [4]float32
		for j := lo; j < hi; j += 4 {
			rows := min(4, hi-j)
			if rows == 4 {
				if b.h != nil {
					im.dot4h(k, x, b.h[j*b.ld:], b.ld, &y)
				} else {
					im.dot4(k, x, b.f[j*b.ld:], b.ld, &y)
				}
			} else {
				for r := 0; r < rows; r++ {
					y[r] = dot1(im, k, x, b, j+r)
				}
			}
			storeRow(c[j:j+rows], y[:rows], accumulate)
		}
	})
}

// dot1 is one output of the transposed GEMV for leftover rows; it uses the
// same kernel (with the row repeated) so every output has one rounding.
func dot1(im *impl, k int, x []float32, b bMat, j int) float32 {
	var y [4]float32
	if b.h != nil {
		im.dot4h(k, x, b.h[j*b.ld:], 0, &y)
	} else {
		im.dot4(k, x, b.f[j*b.ld:], 0, &y)
	}
	return y[0]
}
