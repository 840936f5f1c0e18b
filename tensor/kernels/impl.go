package kernels

// impl is one instruction-set path: a micro-kernel with its block sizes and
// the GEMV row kernels. The package picks the fastest the CPU supports at
// start-up (active); tests swap it to check every path.
type impl struct {
	name string
	blockKernel

	// bf16, when set, is the blocked path GemmBF16 takes instead of
	// widening B to float32: both operands packed as bf16 pairs.
	bf16 *blockKernel

	// dot4 sets y[r] = Σ_p x[p]·w[r*ldw+p] for r < 4, p < k. dot4h is the
	// same with bf16 w.
	dot4  func(k int, x, w []float32, ldw int, y *[4]float32)
	dot4h func(k int, x []float32, w []BF16, ldw int, y *[4]float32)
	// dot4p, when set, is dot4h with x already rounded to bf16 (the
	// AVX512_BF16 path: pairs of products summed by VDPBF16PS).
	dot4p func(k int, x []BF16, w []BF16, ldw int, y *[4]float32)
	// dot4x3, when set, sets y[i*4+r] to dot4's y[r] for rows i < 3 of x
	// (row stride ldx), bit for bit, reading w once for the three; dot4hx3
	// is the same with bf16 w.
	dot4x3  func(k int, x []float32, ldx int, w []float32, ldw int, y *[12]float32)
	dot4hx3 func(k int, x []float32, ldx int, w []BF16, ldw int, y *[12]float32)
	// axpy sets y[j] = Σ_p x[p]·b[p*ldb+j] for j < n, p < k, or adds it to
	// y[j] when accumulate is set; axpyh is the same with bf16 b.
	axpy  func(k, n int, x, b []float32, ldb int, y []float32, accumulate bool)
	axpyh func(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool)
}

// blockKernel is what the blocked path (gemmBlocked) needs: the tile and
// block sizes, the packing of A and B and the micro-kernel.
type blockKernel struct {
	mr, nr int // micro-tile of C computed in registers
	kc     int // K block: a packed mr×kc A sliver stays in L1
	nc     int // columns per task (multiple of nr): its kc×nc B block stays in L2

	// pairs: operands are packed as bf16 pairs, two consecutive k of one
	// row (A) or column (B) in each 32-bit slot, an odd k padded with zero
	// (kc must then be even). Otherwise one float32 per k.
	pairs bool
	// kstep, when set (with pairs), rounds each block's packed k up to a
	// multiple of kstep, zero-padded in both operands (the AMX tiles take 32
	// k at a time).
	kstep int

	// micro sets (or with accumulate adds to) the mr×nr tile at c, row
	// stride ldc, the product of a packed mr×kc A sliver (k-major: mr slots
	// per k or k pair) and a packed kc×nr B micro-panel (nr slots per k or k
	// pair). Each element is summed over k in order from zero, then stored
	// or added to C once.
	micro func(kc int, a, b, c []float32, ldc int, accumulate bool)
	// microRows, when set, is micro for an edge tile of full width and
	// only rows < mr rows (the first rows of the packed sliver), written
	// straight to C with the same arithmetic; it reports false for a row
	// count it has no kernel for.
	microRows func(rows, kc int, a, b, c []float32, ldc int, accumulate bool) bool

	// packA and packB fill one sliver / micro-panel (see packA and packB,
	// the float32 defaults used when these are nil).
	packA func(transA bool, a []float32, lda, i0, rows, p0, kc, mr int, dst []float32)
	packB func(b bMat, j0, cols, p0, kc, nr int, dst []float32)
}

// slots is the packed length per row or column of a kc block.
func (bk *blockKernel) slots(kc int) int {
	if bk.pairs {
		if bk.kstep > 0 {
			kc = (kc + bk.kstep - 1) / bk.kstep * bk.kstep
		}
		return (kc + 1) / 2
	}
	return kc
}

// active is the path Gemm uses; impls lists every path this CPU can run,
// fastest first (the last is always pure Go).
var (
	active *impl
	impls  []*impl
)

func init() {
	impls = append(archImpls(), goImpl)
	active = impls[0]
}
