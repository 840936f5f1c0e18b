package kernels

// impl is one instruction-set path: a micro-kernel with its block sizes and
// the GEMV row kernels. The package picks the fastest the CPU supports at
// start-up (active); tests swap it to check every path.
type impl struct {
	name   string
	mr, nr int // micro-tile of C computed in registers
	kc     int // K block: a packed kc×nr B micro-panel stays in L1
	mc     int // rows per task (multiple of mr): the packed A block stays in L2
	nc     int // columns per task (multiple of nr)

	// micro sets (or with accumulate adds to) the mr×nr tile at c, row
	// stride ldc, the product of a packed mr×kc A sliver (k-major: mr values
	// per k) and a packed kc×nr B micro-panel. Each element is summed over k
	// in order from zero, then stored or added to C once.
	micro func(kc int, a, b, c []float32, ldc int, accumulate bool)

	// dot4 sets y[r] = Σ_p x[p]·w[r*ldw+p] for r < 4, p < k. dot4h is the
	// same with bf16 w.
	dot4  func(k int, x, w []float32, ldw int, y *[4]float32)
	dot4h func(k int, x []float32, w []BF16, ldw int, y *[4]float32)
	// axpy sets y[j] = Σ_p x[p]·b[p*ldb+j] for j < n, p < k, or adds it to
	// y[j] when accumulate is set; axpyh is the same with bf16 b.
	axpy  func(k, n int, x, b []float32, ldb int, y []float32, accumulate bool)
	axpyh func(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool)
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
