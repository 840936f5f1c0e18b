package kernels

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// benchShape is one Linear layer of a published model: W is [out, in].
type benchShape struct {
	model, layer string
	in, out      int
}

// benchShapes: stories110M (dim 768, hidden 2048) and tinyllama-1.1B (dim
// 2048, hidden 5632, kv dim 256), vocab 32000. Layers of equal shape are
// listed once (q/k/v/o in stories110M, gate/up everywhere).
var benchShapes = []benchShape{
	{"stories110M", "qkvo", 768, 768},
	{"stories110M", "gateup", 768, 2048},
	{"stories110M", "down", 2048, 768},
	{"stories110M", "lmhead", 768, 32000},
	{"tinyllama", "qo", 2048, 2048},
	{"tinyllama", "kv", 2048, 256},
	{"tinyllama", "gateup", 2048, 5632},
	{"tinyllama", "down", 5632, 2048},
	{"tinyllama", "lmhead", 2048, 32000},
}

var benchTokens = []int{1, 256, 1024}

// benchLayout is how a layer uses Gemm: forward y = x·Wᵀ, backward to the
// input dx = dy·W, backward to the weight dW += dyᵀ·x.
type benchLayout struct {
	name           string
	transA, transB bool
	acc            bool
}

var benchLayouts = []benchLayout{{"fwd", false, true, false}, {"dx", false, false, false}, {"dW", true, false, true}}

// dims returns m, n, k and the leading dimensions for tokens t.
func (l benchLayout) dims(s benchShape, t int) (m, n, k, lda, ldb int) {
	switch l.name {
	case "fwd":
		return t, s.out, s.in, s.in, s.in
	case "dx":
		return t, s.in, s.out, s.out, s.in
	default: // dW [out,in] += dyᵀ [out,t] · x [t,in]
		return s.out, s.in, t, s.out, s.in
	}
}

// forEachBench calls fn for every shape, token count and layout, as a
// sub-benchmark named model/layer/M=t/layout. dW with one token is skipped
// (an outer product, not a GEMM).
func forEachBench(b *testing.B, layouts []benchLayout, fn func(b *testing.B, l benchLayout, m, n, k, lda, ldb int)) {
	for _, s := range benchShapes {
		for _, t := range benchTokens {
			for _, l := range layouts {
				if l.name == "dW" && t == 1 {
					continue
				}
				m, n, k, lda, ldb := l.dims(s, t)
				b.Run(fmt.Sprintf("%s/%s/M=%d/%s", s.model, s.layer, t, l.name), func(b *testing.B) {
					fn(b, l, m, n, k, lda, ldb)
				})
			}
		}
	}
}

func benchRand(n int) []float32 {
	return randSlice(rand.New(rand.NewPCG(uint64(n), 7)), n)
}

// cpuClock measures the process CPU time a benchmark loop uses; start it
// right before the loop.
type cpuClock struct{ start float64 }

func startCPU(b *testing.B) cpuClock {
	b.ResetTimer()
	return cpuClock{processCPU()}
}

// report sets flops (and, when bytes > 0, weight bytes) per second of wall
// time, plus GFLOP/cpu-s: flops per CPU-second of this process, which other
// jobs on the machine disturb much less (per core, so ×threads for the
// machine).
func (cc cpuClock) report(b *testing.B, flops, bytes float64) {
	wall := b.Elapsed().Seconds()
	cpu := processCPU() - cc.start
	n := float64(b.N)
	if flops > 0 {
		b.ReportMetric(flops*n/wall/1e9, "GFLOP/s")
		if cpu > 0 {
			b.ReportMetric(flops*n/cpu/1e9, "GFLOP/cpu-s")
		}
	}
	if bytes > 0 {
		b.ReportMetric(bytes*n/wall/1e9, "GB/s")
		if cpu > 0 {
			b.ReportMetric(bytes*n/cpu/1e9, "GB/cpu-s")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// gemvBytes is the weight traffic of a one-row problem (0 otherwise).
func gemvBytes(m, bytes int) float64 {
	if m != 1 {
		return 0
	}
	return float64(bytes)
}

func gemmFlops(m, n, k int) float64 { return 2 * float64(m) * float64(n) * float64(k) }

// BenchmarkGemm: float32 Gemm on model shapes (set GOPEFT_KERNELS-free:
// the fastest path this CPU has).
func BenchmarkGemm(b *testing.B) {
	forEachBench(b, benchLayouts, func(b *testing.B, l benchLayout, m, n, k, lda, ldb int) {
		a, w, c := benchRand(m*k), benchRand(k*n), make([]float32, m*n)
		cc := startCPU(b)
		for b.Loop() {
			Gemm(l.transA, l.transB, m, n, k, a, lda, w, ldb, c, n, l.acc)
		}
		cc.report(b, gemmFlops(m, n, k), gemvBytes(m, 4*k*n))
	})
}

// BenchmarkGemmBF16: the weight stored as bf16, forward and dx layouts.
func BenchmarkGemmBF16(b *testing.B) {
	forEachBench(b, benchLayouts[:2], func(b *testing.B, l benchLayout, m, n, k, lda, ldb int) {
		a, c := benchRand(m*k), make([]float32, m*n)
		w := make([]BF16, k*n)
		F32ToBF16(w, benchRand(k*n))
		cc := startCPU(b)
		for b.Loop() {
			GemmBF16(l.transB, m, n, k, a, lda, w, ldb, c, n, l.acc)
		}
		cc.report(b, gemmFlops(m, n, k), gemvBytes(m, 2*k*n))
	})
}

// BenchmarkGemmPath compares the paths on one square-ish shape.
func BenchmarkGemmPath(b *testing.B) {
	const m, n, k = 256, 2048, 768
	a, w, c := benchRand(m*k), benchRand(k*n), make([]float32, m*n)
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			old := active
			active = im
			defer func() { active = old }()
			cc := startCPU(b)
			for b.Loop() {
				Gemm(false, true, m, n, k, a, k, w, k, c, n, false)
			}
			cc.report(b, gemmFlops(m, n, k), 0)
		})
	}
}

// BenchmarkFMAPeak runs a register-only loop of independent FMAs on every
// worker thread: the arithmetic ceiling the GEMM figures are compared to.
func BenchmarkFMAPeak(b *testing.B) {
	for _, name := range fmaPeakNames() {
		for _, th := range []int{1, parallel.Threads()} {
			b.Run(fmt.Sprintf("%s/threads=%d", name, th), func(b *testing.B) {
				fmaPeakBench(b, name, th)
			})
		}
	}
}

func fmaPeakBench(b *testing.B, name string, th int) {
	old := parallel.SetThreads(th)
	defer parallel.SetThreads(old)
	const iters = 1 << 20
	cc := startCPU(b)
	for b.Loop() {
		parallel.For(th, 1, func(lo, hi int) {
			for range hi - lo {
				fmaPeak(name, iters)
			}
		})
	}
	cc.report(b, float64(fmaPeak(name, 0))*iters*float64(th), 0)
}

// BenchmarkMemCopy copies a 256 MiB buffer (far beyond the caches), split
// over the worker threads; GB/s counts bytes read plus bytes written, as
// STREAM's Copy does.
func BenchmarkMemCopy(b *testing.B) {
	for _, th := range []int{1, parallel.Threads()} {
		b.Run(fmt.Sprintf("threads=%d", th), func(b *testing.B) {
			old := parallel.SetThreads(th)
			defer parallel.SetThreads(old)
			memCopyBench(b)
		})
	}
}

func memCopyBench(b *testing.B) {
	const n = 64 << 20 // float32s
	src, dst := make([]float32, n), make([]float32, n)
	for i := range src { // touch every page before timing
		src[i], dst[i] = float32(i), 1
	}
	grain := n / parallel.Threads()
	cc := startCPU(b)
	for b.Loop() {
		parallel.For(n, grain, func(lo, hi int) { copy(dst[lo:hi], src[lo:hi]) })
	}
	cc.report(b, 0, 2*4*n)
}

// BenchmarkThreadsOverhead measures one parallel.For fork/join.
func BenchmarkThreadsOverhead(b *testing.B) {
	var mu sync.Mutex
	for b.Loop() {
		parallel.For(2, 1, func(lo, hi int) { mu.Lock(); mu.Unlock() })
	}
}

func benchRandSrc() *rand.Rand { return rand.New(rand.NewPCG(11, 12)) }

// BenchmarkGemmBF16Path compares the paths for a bf16 weight (on AVX512_BF16
// CPUs: VDPBF16PS against widening to float32) in the forward layout, for a
// prompt (M=256) and a decode step (M=1, GB/s of weights).
func BenchmarkGemmBF16Path(b *testing.B) {
	const n, k = 2048, 768
	for _, m := range []int{256, 1} {
		a, c := benchRand(m*k), make([]float32, m*n)
		w := make([]BF16, k*n)
		F32ToBF16(w, benchRand(k*n))
		for _, im := range impls {
			b.Run(fmt.Sprintf("M=%d/%s", m, im.name), func(b *testing.B) {
				old := active
				active = im
				defer func() { active = old }()
				cc := startCPU(b)
				for b.Loop() {
					GemmBF16(true, m, n, k, a, k, w, k, c, n, false)
				}
				cc.report(b, gemmFlops(m, n, k), gemvBytes(m, 2*k*n))
			})
		}
	}
}

// BenchmarkRowInvariant compares, on decode-batch shapes (m sequences of
// one token through a Linear's weight [n, k]), the row-invariant GEMV path
// Gemm takes up to RowInvariantRows rows with the blocked path it took
// before. Run it with -count 2 or more: the two alternate.
func BenchmarkRowInvariant(b *testing.B) {
	shapes := []struct{ n, k int }{{768, 288}, {2304, 768}, {768, 2048}, {32000, 768}}
	for _, s := range shapes {
		for _, m := range []int{4, 16, 32, 64} {
			a, w, c := benchRand(m*s.k), benchRand(s.n*s.k), make([]float32, m*s.n)
			bm := bMat{f: w, ld: s.k, trans: true}
			for _, path := range []string{"gemv", "blocked"} {
				b.Run(fmt.Sprintf("%s/m=%d/n=%d/k=%d", path, m, s.n, s.k), func(b *testing.B) {
					for b.Loop() {
						if path == "gemv" {
							gemvT(active, m, s.n, s.k, a, s.k, bm, c, s.n, false)
						} else {
							gemmBlocked(active, false, m, s.n, s.k, a, s.k, bm, c, s.n, false)
						}
					}
					b.ReportMetric(gemmFlops(m, s.n, s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
