//go:build openblas && cgo

package kernels

import (
	"fmt"
	"testing"
	"time"

	"github.com/gopeft/gopeft/tensor/kernels/internal/openblas"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// BenchmarkOpenBLAS runs cblas_sgemm on BenchmarkGemm's shapes, with the
// same sub-benchmark names so benchstat can compare the two.
func BenchmarkOpenBLAS(b *testing.B) {
	openblas.SetThreads(parallel.Threads())
	b.Logf("OpenBLAS %s, threads %d", openblas.Config(), parallel.Threads())
	forEachBench(b, benchLayouts, func(b *testing.B, l benchLayout, m, n, k, lda, ldb int) {
		a, w, c := benchRand(m*k), benchRand(k*n), make([]float32, m*n)
		cc := startCPU(b)
		for b.Loop() {
			openblas.Sgemm(l.transA, l.transB, m, n, k, a, lda, w, ldb, c, n, l.acc)
		}
		cc.report(b, gemmFlops(m, n, k), gemvBytes(m, 4*k*n))
	})
}

// TestOpenBLASAgrees checks the cgo binding against gemmRef, so a wrong
// binding cannot pass for a fast one.
func TestOpenBLASAgrees(t *testing.T) {
	for layout := 0; layout < 4; layout++ {
		g := gemmCase{transA: layout&1 != 0, transB: layout&2 != 0, acc: layout == 1, m: 37, n: 29, k: 53, pad: 3}
		_, _, _, br, bc, ldb, ldc := g.dims()
		w := randSlice(benchRandSrc(), (br-1)*ldb+bc)
		checkGemmCase(t, g, benchRandSrc(), w, func(a []float32, lda int, c []float32) {
			openblas.Sgemm(g.transA, g.transB, g.m, g.n, g.k, a, lda, w, ldb, c, ldc, g.acc)
		})
	}
}

// A BenchmarkVsOpenBLAS trial starts from the same state on either side:
// the other side's threads parked (settle), then its own cores brought up
// to speed by running it (warm). OpenBLAS's idle threads spin for about
// 0.1 s after a call: a 2-thread trial of gopeft that started meanwhile ran
// at a quarter to a half of its speed for tens of milliseconds (at full
// speed after a 100 ms pause). After any pause, though, the first calls run
// slow until the cores clock up again.
const (
	settle = 200 * time.Millisecond
	warm   = 50 * time.Millisecond
	timed  = 100 * time.Millisecond
)

// BenchmarkVsOpenBLAS times gopeft and OpenBLAS on each shape in alternating
// trials, on 1 and on all threads, and reports each side's best trial and
// their ratio. On a machine shared with other jobs the best of interleaved
// trials is the fairest figure: both sides get the same quiet moments.
// Run with -benchtime=1x (the trials are the repetitions).
func BenchmarkVsOpenBLAS(b *testing.B) {
	for _, th := range []int{1, parallel.Threads()} {
		b.Run(fmt.Sprintf("threads=%d", th), func(b *testing.B) { vsOpenBLAS(b, th) })
	}
}

func vsOpenBLAS(b *testing.B, th int) {
	const rounds = 5
	forEachBench(b, benchLayouts, func(b *testing.B, l benchLayout, m, n, k, lda, ldb int) {
		if m == 1 || k == 1 {
			b.Skip("GEMV")
		}
		old := parallel.SetThreads(th)
		defer parallel.SetThreads(old)
		openblas.SetThreads(th)
		a, w, c := benchRand(m*k), benchRand(k*n), make([]float32, m*n)
		ours := func() { Gemm(l.transA, l.transB, m, n, k, a, lda, w, ldb, c, n, l.acc) }
		theirs := func() { openblas.Sgemm(l.transA, l.transB, m, n, k, a, lda, w, ldb, c, n, l.acc) }
		flops := gemmFlops(m, n, k)
		var best [2]float64
		for range b.N {
			for r := 0; r < rounds; r++ {
				for i, f := range []func(){ours, theirs} {
					time.Sleep(settle)
					for start := time.Now(); time.Since(start) < warm; {
						f()
					}
					reps, start := 0, time.Now()
					for time.Since(start) < timed || reps < 2 {
						f()
						reps++
					}
					best[i] = max(best[i], flops*float64(reps)/time.Since(start).Seconds()/1e9)
				}
			}
		}
		b.ReportMetric(best[0], "gopeft-GFLOP/s")
		b.ReportMetric(best[1], "openblas-GFLOP/s")
		b.ReportMetric(best[0]/best[1], "ratio")
		b.ReportMetric(0, "ns/op")
	})
}
