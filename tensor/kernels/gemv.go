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
	// B stored n×k: one dot product per output.
	gemvT(im, 1, n, k, x, k, b, c, n, accumulate)
}

// RowInvariantRows is the most rows of A for which a product with B stored
// n×k (a Linear's weight [out, in], transB) takes the GEMV path: every row
// of C is then computed by exactly the arithmetic of the one-row product,
// so it does not depend, to the last bit, on the other rows of A. Decoding
// a batch of sequences (one row each) therefore gives each sequence the
// logits it gets decoded alone. Above it, the blocked path sums in another
// order (and is faster: the GEMV path keeps four weight rows in L1 and
// reads each row of A from L2 for them, at about two thirds of the blocked
// kernel's rate once the product is compute-bound).
const RowInvariantRows = 64

// gemvT is C (+)= A·op(B) for B stored n×k and m ≤ RowInvariantRows rows
// of A (row stride lda): one dot product per output and row, four outputs
// at a time (dot4), the same kernel and the same k order for every row and
// every m. Four rows of B are read once for all the rows of A, while they
// are in L1.
func gemvT(im *impl, m, n, k int, a []float32, lda int, b bMat, c []float32, ldc int, accumulate bool) {
	serial := 2*m*n*k < serialFlops || parallel.Threads() == 1
	// dot4 sets y to the outputs of rows j..j+3 of B (at stride ldw; 0
	// repeats row j: leftover rows use the same kernel, so every output
	// has the same rounding) for row r of A.
	var dot4 func(r, j, ldw int, y *[4]float32)
	switch {
	case b.h != nil && im.dot4p != nil: // A rounded to bf16 once, VDPBF16PS
		xbuf := bf16Bufs.get(m * k)
		defer bf16Bufs.put(xbuf)
		xh := *xbuf
		for r := 0; r < m; r++ {
			roundBF16(xh[r*k:(r+1)*k], a[r*lda:r*lda+k])
		}
		dot4 = func(r, j, ldw int, y *[4]float32) { im.dot4p(k, xh[r*k:], b.h[j*b.ld:], ldw, y) }
	case b.h != nil:
		dot4 = func(r, j, ldw int, y *[4]float32) { im.dot4h(k, a[r*lda:], b.h[j*b.ld:], ldw, y) }
	default:
		dot4 = func(r, j, ldw int, y *[4]float32) { im.dot4(k, a[r*lda:], b.f[j*b.ld:], ldw, y) }
	}
	// dot4x3 is dot4 for rows r..r+2 of A at once, where the path has it.
	var dot4x3 func(r, j int, y *[12]float32)
	switch {
	case m < 3:
	case b.h == nil && im.dot4x3 != nil:
		dot4x3 = func(r, j int, y *[12]float32) { im.dot4x3(k, a[r*lda:], lda, b.f[j*b.ld:], b.ld, y) }
	case b.h != nil && im.dot4p == nil && im.dot4hx3 != nil:
		dot4x3 = func(r, j int, y *[12]float32) { im.dot4hx3(k, a[r*lda:], lda, b.h[j*b.ld:], b.ld, y) }
	}
	forPar(serial, n, gemvGrain, func(lo, hi int) {
		var y [4]float32
		var y3 [12]float32
		for j := lo; j < hi; j += 4 {
			cols := min(4, hi-j)
			r := 0
			if cols == 4 && dot4x3 != nil {
				for ; r+3 <= m; r += 3 {
					dot4x3(r, j, &y3)
					for i := 0; i < 3; i++ {
						storeRow(c[(r+i)*ldc+j:(r+i)*ldc+j+4], y3[4*i:4*i+4], accumulate)
					}
				}
			}
			for ; r < m; r++ {
				if cols == 4 {
					dot4(r, j, b.ld, &y)
				} else {
					for q := 0; q < cols; q++ {
						var y1 [4]float32
						dot4(r, j+q, 0, &y1)
						y[q] = y1[0]
					}
				}
				storeRow(c[r*ldc+j:r*ldc+j+cols], y[:cols], accumulate)
			}
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
