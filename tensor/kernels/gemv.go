package kernels

import "github.com/gopeft/gopeft/tensor/parallel"

// gemvGrain is the number of output columns per parallel chunk: enough work
// (grain·k weights) to amortise a hand-off, and a multiple of 4 and 128.
const gemvGrain = 128

// gemvRowBlock is how many rows of a stored-k×n B the GEMV sums into one
// partial result. It is fixed (never derived from the thread count), so the
// summation order, and hence every bit of the result, is too.
const gemvRowBlock = 512

// gemv is the M=1 path (decoding): c[0:n] (+)= x·op(B), with x the single
// row of op(A). It streams B once, without packing.
func gemv(im *impl, transA bool, n, k int, a []float32, lda int, b bMat, c []float32, accumulate bool) {
	x := a[:k]
	if transA && lda != 1 { // A stored k×1: gather the column
		buf := f32Bufs.get(k)
		defer f32Bufs.put(buf)
		x = *buf
		for p := range x {
			x[p] = a[p*lda]
		}
	}
	serial := 2*n*k < serialFlops || parallel.Threads() == 1
	if !b.trans && k > gemvRowBlock {
		gemvRowBlocks(im, serial, n, k, x, b, c, accumulate)
		return
	}
	if !b.trans {
		// Wide column chunks (each streams every row of B), a multiple of
		// gemvGrain so vector/tail splits never move with the thread count.
		th := parallel.Threads()
		grain := ((n+th-1)/th + gemvGrain - 1) / gemvGrain * gemvGrain
		forPar(serial, n, grain, func(lo, hi int) {
			if b.h != nil {
				im.axpyh(k, hi-lo, x, b.h[lo:], b.ld, c[lo:hi], accumulate)
			} else {
				im.axpy(k, hi-lo, x, b.f[lo:], b.ld, c[lo:hi], accumulate)
			}
		})
		return
	}
	// B stored n×k: one dot product per output, four rows at a time.
	// dot4 sets y to the outputs of rows j..j+3 at stride ldw (0 repeats
	// row j: leftover rows use the same kernel, so every output has the
	// same rounding).
	var dot4 func(j, ldw int, y *[4]float32)
	switch {
	case b.h != nil && im.dot4p != nil: // x rounded to bf16 once, VDPBF16PS
		xbuf := bf16Bufs.get(k)
		defer bf16Bufs.put(xbuf)
		xh := *xbuf
		roundBF16(xh, x)
		dot4 = func(j, ldw int, y *[4]float32) { im.dot4p(k, xh, b.h[j*b.ld:], ldw, y) }
	case b.h != nil:
		dot4 = func(j, ldw int, y *[4]float32) { im.dot4h(k, x, b.h[j*b.ld:], ldw, y) }
	default:
		dot4 = func(j, ldw int, y *[4]float32) { im.dot4(k, x, b.f[j*b.ld:], ldw, y) }
	}
	forPar(serial, n, gemvGrain, func(lo, hi int) {
		var y [4]float32
		for j := lo; j < hi; j += 4 {
			rows := min(4, hi-j)
			if rows == 4 {
				dot4(j, b.ld, &y)
			} else {
				for r := 0; r < rows; r++ {
					var y1 [4]float32
					dot4(j+r, 0, &y1)
					y[r] = y1[0]
				}
			}
			storeRow(c[j:j+rows], y[:rows], accumulate)
		}
	})
}

// gemvRowBlocks is the stored-k×n GEMV for many rows: workers take blocks of
// gemvRowBlock whole rows, each one long sequential stream of B, into
// partial sums, which are then added in block order.
func gemvRowBlocks(im *impl, serial bool, n, k int, x []float32, b bMat, c []float32, accumulate bool) {
	blocks := (k + gemvRowBlock - 1) / gemvRowBlock
	buf := f32Bufs.get(blocks * n)
	defer f32Bufs.put(buf)
	part := *buf
	forPar(serial, blocks, 1, func(lo, hi int) {
		for q := lo; q < hi; q++ {
			p0 := q * gemvRowBlock
			kb := min(gemvRowBlock, k-p0)
			if b.h != nil {
				im.axpyh(kb, n, x[p0:], b.h[p0*b.ld:], b.ld, part[q*n:(q+1)*n], false)
			} else {
				im.axpy(kb, n, x[p0:], b.f[p0*b.ld:], b.ld, part[q*n:(q+1)*n], false)
			}
		}
	})
	forPar(serial, n, max(gemvGrain, (n+3)/4), func(lo, hi int) {
		sum := part[lo:hi]
		for q := 1; q < blocks; q++ {
			for j, v := range part[q*n+lo : q*n+hi] {
				sum[j] += v
			}
		}
		storeRow(c[lo:hi], sum, accumulate)
	})
}
