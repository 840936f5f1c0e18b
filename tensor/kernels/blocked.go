package kernels

import (
	"sync"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// Block sizes shared by every path. K is cut into blocks of im.kc; each C
// element receives one block's sum at a time, in K order, so the summation
// order depends only on k and im.kc — never on threads or tiling.
const (
	// bBlockCols bounds how many columns of B are packed at once (kc×bBlockCols
	// float32s), so a huge N (LM head) does not need a K×N copy.
	bBlockCols = 4096
	// serialFlops: below this many flops a multiply runs on one thread; the
	// fork/join would cost more than it saves.
	serialFlops = 1 << 21
)

// bufPool recycles packing buffers between calls.
var bufPool sync.Pool

func getBuf(n int) *[]float32 {
	if p, ok := bufPool.Get().(*[]float32); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	s := make([]float32, n)
	return &s
}

func putBuf(p *[]float32) { bufPool.Put(p) }

// forPar runs fn over [0,n) in chunks of grain, on one thread when serial.
func forPar(serial bool, n, grain int, fn func(lo, hi int)) {
	if serial {
		fn(0, n)
		return
	}
	parallel.For(n, grain, fn)
}

// gemmBlocked is the packed path: for each K block, pack all of op(A) into
// mr-row slivers, then for each group of columns pack op(B) into nr-column
// micro-panels and compute C in tasks of mc×nc tiles.
func gemmBlocked(im *impl, transA bool, m, n, k int, a []float32, lda int, b bMat, c []float32, ldc int, accumulate bool) {
	mr, nr := im.mr, im.nr
	kcMax := min(im.kc, k)
	serial := 2*float64(m)*float64(n)*float64(k) < serialFlops || parallel.Threads() == 1
	slivers := (m + mr - 1) / mr
	ncb := min(n, bBlockCols)
	panelsMax := (ncb + nr - 1) / nr

	apBuf := getBuf(slivers * mr * kcMax)
	bpBuf := getBuf(panelsMax * nr * kcMax)
	defer putBuf(apBuf)
	defer putBuf(bpBuf)
	ap, bp := *apBuf, *bpBuf

	for p0 := 0; p0 < k; p0 += kcMax {
		kc := min(kcMax, k-p0)
		acc := accumulate || p0 > 0
		forPar(serial, slivers, 8, func(lo, hi int) {
			for s := lo; s < hi; s++ {
				packA(transA, a, lda, s*mr, min(mr, m-s*mr), p0, kc, mr, ap[s*mr*kc:(s+1)*mr*kc])
			}
		})
		for j0 := 0; j0 < n; j0 += ncb {
			nb := min(ncb, n-j0)
			panels := (nb + nr - 1) / nr
			forPar(serial, panels, 8, func(lo, hi int) {
				for q := lo; q < hi; q++ {
					packB(b, j0+q*nr, min(nr, nb-q*nr), p0, kc, nr, bp[q*nr*kc:(q+1)*nr*kc])
				}
			})
			// Tasks: row blocks of mc × column blocks of nc within this group.
			rowBlocks := (m + im.mc - 1) / im.mc
			colBlocks := (nb + im.nc - 1) / im.nc
			forPar(serial, rowBlocks*colBlocks, 1, func(lo, hi int) {
				var tmp []float32
				for t := lo; t < hi; t++ {
					i0 := (t % rowBlocks) * im.mc
					jb := (t / rowBlocks) * im.nc
					i1, jb1 := min(i0+im.mc, m), min(jb+im.nc, nb)
					for jj := jb; jj < jb1; jj += nr {
						cols := min(nr, nb-jj)
						bq := bp[(jj/nr)*nr*kc : (jj/nr+1)*nr*kc]
						for i := i0; i < i1; i += mr {
							rows := min(mr, m-i)
							as := ap[(i/mr)*mr*kc : (i/mr+1)*mr*kc]
							ci := i*ldc + j0 + jj
							if rows == mr && cols == nr {
								im.micro(kc, as, bq, c[ci:], ldc, acc)
								continue
							}
							// Edge tile: compute the full tile aside, copy
							// the part inside C. Same arithmetic as above.
							if tmp == nil {
								tmp = make([]float32, mr*nr)
							}
							im.micro(kc, as, bq, tmp, nr, false)
							for r := 0; r < rows; r++ {
								dst := c[ci+r*ldc : ci+r*ldc+cols]
								src := tmp[r*nr : r*nr+cols]
								if acc {
									for j, v := range src {
										dst[j] += v
									}
								} else {
									copy(dst, src)
								}
							}
						}
					}
				}
			})
		}
	}
}

// packA copies rows [i0, i0+rows) × columns [p0, p0+kc) of op(A) into dst
// k-major (mr values per k), padding missing rows with zeros.
func packA(transA bool, a []float32, lda, i0, rows, p0, kc, mr int, dst []float32) {
	dst = dst[:mr*kc]
	if rows < mr {
		clear(dst)
	}
	if transA { // A stored k×m: each k gives rows contiguous values
		for p := 0; p < kc; p++ {
			copy(dst[p*mr:p*mr+rows], a[(p0+p)*lda+i0:])
		}
		return
	}
	for r := 0; r < rows; r++ {
		src := a[(i0+r)*lda+p0 : (i0+r)*lda+p0+kc]
		for p, v := range src {
			dst[p*mr+r] = v
		}
	}
}

// packB copies rows [p0, p0+kc) × columns [j0, j0+cols) of op(B) into dst
// k-major (nr values per k), widening bf16 and padding with zeros.
func packB(b bMat, j0, cols, p0, kc, nr int, dst []float32) {
	dst = dst[:nr*kc]
	if cols < nr {
		clear(dst)
	}
	ld := b.ld
	switch {
	case b.h == nil && !b.trans: // stored k×n: rows are contiguous
		for p := 0; p < kc; p++ {
			copy(dst[p*nr:p*nr+cols], b.f[(p0+p)*ld+j0:])
		}
	case b.h == nil: // stored n×k: transpose
		if cols == nr && nr%8 == 0 && packBTrans != nil {
			packBTrans(kc, nr, b.f[j0*ld+p0:], ld, dst)
			return
		}
		for j := 0; j < cols; j++ {
			src := b.f[(j0+j)*ld+p0 : (j0+j)*ld+p0+kc]
			for p, v := range src {
				dst[p*nr+j] = v
			}
		}
	case !b.trans:
		for p := 0; p < kc; p++ {
			BF16ToF32(dst[p*nr:p*nr+cols], b.h[(p0+p)*ld+j0:(p0+p)*ld+j0+cols])
		}
	default:
		if cols == nr && nr%8 == 0 && packBTransH != nil {
			packBTransH(kc, nr, b.h[j0*ld+p0:], ld, dst)
			return
		}
		for j := 0; j < cols; j++ {
			src := b.h[(j0+j)*ld+p0 : (j0+j)*ld+p0+kc]
			for p, v := range src {
				dst[p*nr+j] = FromBF16(v)
			}
		}
	}
}
