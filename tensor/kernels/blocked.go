package kernels

import (
	"sync"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// Block sizes shared by every path. K is cut into blocks of the path's kc;
// each C element receives one block's sum at a time, in K order, so the
// summation order depends only on k and kc — never on threads or tiling.
const (
	// serialFlops: below this many flops a multiply runs on one thread; the
	// fork/join would cost more than it saves.
	serialFlops = 1 << 21
	// taskRowsMin is the fewest rows a parallel task gets when rows are
	// split (see gemmBlocked).
	taskRowsMin = 384
	// rowFirstCols: a task with at least this many B panels walks C a row
	// sliver at a time, fewer a panel at a time (see gemmBlocked).
	rowFirstCols = 4
)

// packedABudget bounds the packed copy of A (float32 slots) that one
// parallel phase prepares: 8M slots, 32 MiB. A variable so tests can force
// one K block per group.
var packedABudget = 8 << 20

// packAInTasks lets a task with all of N pack its own slivers of A (see
// gemmBlocked). A variable so tests can compare it with the packing phase.
var packAInTasks = true

// scratch recycles buffers of T between calls.
type scratch[T any] struct{ pool sync.Pool }

// get returns a buffer of length n (contents undefined).
func (s *scratch[T]) get(n int) *[]T {
	if p, ok := s.pool.Get().(*[]T); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]T, n)
	return &b
}

func (s *scratch[T]) put(p *[]T) { s.pool.Put(p) }

// f32Bufs holds packing buffers; bf16Bufs activations rounded for the bf16
// GEMV.
var (
	f32Bufs  scratch[float32]
	bf16Bufs scratch[BF16]
)

// forPar runs fn over [0,n) in chunks of grain, on one thread when serial.
func forPar(serial bool, n, grain int, fn func(lo, hi int)) {
	if serial {
		fn(0, n)
		return
	}
	parallel.For(n, grain, fn)
}

// gemmBlocked is the packed path. For each K block (in order) it packs all
// of op(A) into mr-row slivers, then runs tasks over column blocks of C (and
// row blocks when columns alone give too few tasks). Each task packs its own
// nr-column micro-panels of op(B) — so one worker's packing, which waits on
// memory, overlaps another's arithmetic — and computes its tile of C.
//
// The path's blockKernel says how: float32 panels, or for a bf16 B on a path
// with im.bf16, bf16-pair panels of both operands.
func gemmBlocked(im *impl, transA bool, m, n, k int, a []float32, lda int, b bMat, c []float32, ldc int, accumulate bool) {
	bk := &im.blockKernel
	if b.h != nil && im.bf16 != nil {
		bk = im.bf16
	}
	pA, pB := bk.packA, bk.packB
	if pA == nil {
		pA = packA
	}
	if pB == nil {
		pB = packB
	}
	mr, nr := bk.mr, bk.nr
	kcMax := min(bk.kc, k)
	threads := parallel.Threads()
	serial := 2*float64(m)*float64(n)*float64(k) < serialFlops || threads == 1
	slivers := (m + mr - 1) / mr

	// Task shape. Tiling C never changes the arithmetic, only who does it.
	// A task streams its rows of packed A once per column block and packs
	// its columns of B once per row block, so prefer wide column blocks (up
	// to bk.nc: a kc×nc B block stays in L2) and split rows for parallelism;
	// narrow the columns only when rows alone give too few tasks.
	want := 1
	if !serial {
		want = 4 * threads
	}
	nc := min((n+nr-1)/nr*nr, bk.nc)
	// Row tasks keep at least taskRowsMin rows, so the B packing each one
	// repeats stays small next to its arithmetic.
	maxRowTasks := max(1, m/taskRowsMin)
	colTasks := (n + nc - 1) / nc
	rowTasks := min(maxRowTasks, (want+colTasks-1)/colTasks)
	for nc > nr && colTasks*rowTasks < want {
		nc = max(nr, (nc/2+nr-1)/nr*nr)
		colTasks = (n + nc - 1) / nc
		rowTasks = min(maxRowTasks, (want+colTasks-1)/colTasks)
	}
	sliversPerTask := (slivers + rowTasks - 1) / rowTasks
	rowTasks = (slivers + sliversPerTask - 1) / sliversPerTask

	// A is packed for a group of K blocks in one parallel phase, then one
	// parallel phase computes the group: each task walks its K blocks in
	// order, packing its own B micro-panels for each. That is two fork/joins
	// per group instead of two per K block, and no worker idles at a barrier
	// between K blocks. A group is as many K blocks as fit packedABudget
	// (usually all of K).
	//
	// With a single column block, though, the task that computes a sliver
	// is the only one that reads it. It then packs the sliver itself, just
	// before use, into a buffer that stays in L1: no phase writes a packed
	// copy of all of A to memory only to read it back. (Such a task has at
	// least rowFirstCols panels, so it walks row slivers, where it packs.)
	inTask := packAInTasks && colTasks == 1 && n >= rowFirstCols*nr
	blockSlots := 0 // packed A of one K block
	groupBlocks := (k + kcMax - 1) / kcMax
	if !inTask {
		blockSlots = slivers * mr * bk.slots(kcMax)
		groupBlocks = max(1, min(groupBlocks, packedABudget/blockSlots))
	}
	apBuf := f32Bufs.get(blockSlots * groupBlocks)
	defer f32Bufs.put(apBuf)
	ap := *apBuf

	for g0 := 0; g0 < k; g0 += groupBlocks * kcMax {
		blocks := min(groupBlocks, (k-g0+kcMax-1)/kcMax)
		// Packed A of the group's K block q starts at q*blockSlots; sliver
		// s within it at s*mr*ks. A stored m×k is packed a sliver at a time,
		// all its K blocks in turn, so each of its rows is read from start
		// to end in one stream (K block by K block, every row was read in
		// kc-long pieces, each a fresh start for the prefetchers: 1–5% of an
		// M=1024 product); A stored k×m a K block at a time, whose rows all
		// its slivers share.
		packed := slivers * blocks
		if inTask {
			packed = 0
		}
		forPar(serial || packed == 0, packed, 8, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				q, s := i/slivers, i%slivers
				if !transA {
					q, s = i%blocks, i/blocks
				}
				p0 := g0 + q*kcMax
				kc := min(kcMax, k-p0)
				ks := bk.slots(kc)
				apq := ap[q*blockSlots:]
				pA(transA, a, lda, s*mr, min(mr, m-s*mr), p0, kc, mr, apq[s*mr*ks:(s+1)*mr*ks])
			}
		})
		forPar(serial, colTasks*rowTasks, 1, func(lo, hi int) {
			bpBuf := f32Bufs.get(nc * bk.slots(kcMax))
			defer f32Bufs.put(bpBuf)
			bp := *bpBuf
			var tmp, sliver []float32
			if inTask {
				sliverBuf := f32Bufs.get(mr * bk.slots(kcMax))
				defer f32Bufs.put(sliverBuf)
				sliver = *sliverBuf
			}
			for t := lo; t < hi; t++ {
				j0 := (t / rowTasks) * nc
				nb := min(nc, n-j0)
				s0 := (t % rowTasks) * sliversPerTask
				s1 := min(slivers, s0+sliversPerTask)
				for q := 0; q < blocks; q++ {
					p0 := g0 + q*kcMax
					kc := min(kcMax, k-p0)
					ks := bk.slots(kc) // packed slots per row of A or column of B
					acc := accumulate || p0 > 0
					apq := ap[q*blockSlots:]
					for jq := 0; jq*nr < nb; jq++ {
						pB(b, j0+jq*nr, min(nr, nb-jq*nr), p0, kc, nr, bp[jq*nr*ks:(jq+1)*nr*ks])
					}
					// tile computes the mr×nr tile of C at row i, column jj of
					// the task's block.
					tile := func(i, jj int, as []float32) {
						rows, cols := min(mr, m-i), min(nr, nb-jj)
						bq := bp[(jj/nr)*nr*ks : (jj/nr+1)*nr*ks]
						ci := i*ldc + j0 + jj
						if rows == mr && cols == nr {
							bk.micro(kc, as, bq, c[ci:], ldc, acc)
							return
						}
						if cols == nr && bk.microRows != nil && bk.microRows(rows, kc, as, bq, c[ci:], ldc, acc) {
							return
						}
						// Edge tile: compute the full tile aside, copy the
						// part inside C. Same arithmetic as above.
						if tmp == nil {
							tmp = make([]float32, mr*nr)
						}
						bk.micro(kc, as, bq, tmp, nr, false)
						for r := 0; r < rows; r++ {
							storeRow(c[ci+r*ldc:ci+r*ldc+cols], tmp[r*nr:r*nr+cols], acc)
						}
					}
					i0, i1 := s0*mr, min(s1*mr, m)
					if nb < rowFirstCols*nr {
						// Few panels: each stays in L1 for all the rows.
						for jj := 0; jj < nb; jj += nr {
							for i := i0; i < i1; i += mr {
								tile(i, jj, apq[(i/mr)*mr*ks:(i/mr+1)*mr*ks])
							}
						}
						continue
					}
					// Row slivers outermost: a sliver of A stays in L1 while
					// the task's B panels stream from L2, and consecutive tiles
					// of C sit side by side on the same rows (and pages), so
					// the kernel's prefetch of the next tile finds them. Walking
					// a column of tiles instead touched mr new pages of C per
					// call and cost a tenth of the time when C is out of cache.
					for i := i0; i < i1; i += mr {
						var as []float32
						if inTask {
							as = sliver[:mr*ks]
							pA(transA, a, lda, i, min(mr, m-i), p0, kc, mr, as)
						} else {
							as = apq[(i/mr)*mr*ks : (i/mr+1)*mr*ks]
						}
						for jj := 0; jj < nb; jj += nr {
							tile(i, jj, as)
						}
					}
				}
			}
		})
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
		if rows == mr && copyPanel(kc, mr, a[p0*lda+i0:], lda, dst) {
			return
		}
		for p := 0; p < kc; p++ {
			copy(dst[p*mr:p*mr+rows], a[(p0+p)*lda+i0:])
		}
		return
	}
	if rows == mr && mr >= 8 && haveAsm {
		// Full sliver: 8×8 transposes of rows 0-7, 8-15, ..., the last
		// group shifted back to end at mr (overlapping rows are rewritten
		// with the same values).
		k8 := kc &^ 7
		for r0 := 0; r0 < mr; r0 += 8 {
			r0 = min(r0, mr-8)
			if k8 > 0 {
				transposeBlock(k8, a[(i0+r0)*lda+p0:], lda, dst[r0:], mr)
			}
			for r := r0; r < r0+8; r++ {
				for p := k8; p < kc; p++ {
					dst[p*mr+r] = a[(i0+r)*lda+p0+p]
				}
			}
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
		if cols == nr && copyPanel(kc, nr, b.f[p0*ld+j0:], ld, dst) {
			return
		}
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
		if cols == nr && copyPanelH(kc, nr, b.h[p0*ld+j0:], ld, dst) {
			return
		}
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
