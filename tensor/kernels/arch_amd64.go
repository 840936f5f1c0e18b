//go:build amd64 && !purego

package kernels

//go:generate go run ./internal/asmgen -out gemm_amd64.s -stubs gemm_amd64_stubs.go

import (
	"golang.org/x/sys/cpu"
)

// archImpls returns the assembly paths this CPU (and OS) supports.
func archImpls() []*impl {
	var l []*impl
	if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL {
		l = append(l, avx512Impl)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		l = append(l, avx2Impl)
	}
	return l
}

// packBTrans and packBTransH pack nr full rows of a stored-n×k B (nr a
// multiple of 8) with 8×8 register transposes; the last kc%8 columns in Go.
var (
	packBTrans = func(kc, nr int, b []float32, ldb int, dst []float32) {
		_, _ = b[(nr-1)*ldb+kc-1], dst[nr*kc-1]
		k8 := kc &^ 7
		for j := 0; j < nr; j += 8 {
			if k8 > 0 {
				transpose8(k8, &b[j*ldb], ldb, &dst[j], nr)
			}
			for r := j; r < j+8; r++ {
				for p := k8; p < kc; p++ {
					dst[p*nr+r] = b[r*ldb+p]
				}
			}
		}
	}
	packBTransH = func(kc, nr int, b []BF16, ldb int, dst []float32) {
		_, _ = b[(nr-1)*ldb+kc-1], dst[nr*kc-1]
		k8 := kc &^ 7
		for j := 0; j < nr; j += 8 {
			if k8 > 0 {
				transpose8h(k8, &b[j*ldb], ldb, &dst[j], nr)
			}
			for r := j; r < j+8; r++ {
				for p := k8; p < kc; p++ {
					dst[p*nr+r] = FromBF16(b[r*ldb+p])
				}
			}
		}
	}
)

// avx512Impl: 12×32 tiles in 24 zmm accumulators. A kc×32 B micro-panel is
// 32 KiB at kc=256 (L1 is 48 KiB); a 144×256 A block is 144 KiB (L2 2 MiB).
var avx512Impl = &impl{
	name: "avx512",
	mr:   12, nr: 32,
	kc: 192, mc: 144, nc: 256,
	micro: func(kc int, a, b, c []float32, ldc int, accumulate bool) {
		_, _, _ = a[12*kc-1], b[32*kc-1], c[11*ldc+31]
		micro12x32AVX512(kc, &a[0], &b[0], &c[0], ldc, accumulate)
	},
	dot4: func(k int, x, w []float32, ldw int, y *[4]float32) {
		dotTail(k, 16, x, w, ldw, y, dot4AVX512)
	},
	dot4h: func(k int, x []float32, w []BF16, ldw int, y *[4]float32) {
		dotTailH(k, 16, x, w, ldw, y, dot4hAVX512)
	},
	axpy: func(k, n int, x, b []float32, ldb int, y []float32, accumulate bool) {
		axpyStrips(k, n, x, b, ldb, y, accumulate, 128, axpy128AVX512, 16, axpy16AVX512)
	},
	axpyh: func(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool) {
		axpyStripsH(k, n, x, b, ldb, y, accumulate, 128, axpyh128AVX512, 16, axpyh16AVX512)
	},
}

// avx2Impl: 6×16 tiles in 12 ymm accumulators (16 registers in all).
var avx2Impl = &impl{
	name: "avx2",
	mr:   6, nr: 16,
	kc: 256, mc: 72, nc: 256,
	micro: func(kc int, a, b, c []float32, ldc int, accumulate bool) {
		_, _, _ = a[6*kc-1], b[16*kc-1], c[5*ldc+15]
		micro6x16AVX2(kc, &a[0], &b[0], &c[0], ldc, accumulate)
	},
	dot4: func(k int, x, w []float32, ldw int, y *[4]float32) {
		dotTail(k, 8, x, w, ldw, y, dot4AVX2)
	},
	dot4h: func(k int, x []float32, w []BF16, ldw int, y *[4]float32) {
		dotTailH(k, 8, x, w, ldw, y, dot4hAVX2)
	},
	axpy: func(k, n int, x, b []float32, ldb int, y []float32, accumulate bool) {
		axpyStrips(k, n, x, b, ldb, y, accumulate, 64, axpy64AVX2, 8, axpy8AVX2)
	},
	axpyh: func(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool) {
		axpyStripsH(k, n, x, b, ldb, y, accumulate, 64, axpyh64AVX2, 8, axpyh8AVX2)
	},
}

type (
	dotKernel   func(k int, x, w *float32, ldw int, y *[4]float32)
	dotKernelH  func(k int, x *float32, w *uint16, ldw int, y *[4]float32)
	axpyKernel  func(k int, x, b *float32, ldb int, y *float32, accumulate bool)
	axpyKernelH func(k int, x *float32, b *uint16, ldb int, y *float32, accumulate bool)
)

// dotTail runs the vector kernel over whole vectors of k, then adds the
// leftover products in order.
func dotTail(k, lanes int, x, w []float32, ldw int, y *[4]float32, kern dotKernel) {
	_, _ = x[k-1], w[3*ldw+k-1]
	kv := k &^ (lanes - 1)
	if kv > 0 {
		kern(kv, &x[0], &w[0], ldw, y)
	} else {
		*y = [4]float32{}
	}
	for p := kv; p < k; p++ {
		for r := range y {
			y[r] += x[p] * w[r*ldw+p]
		}
	}
}

func dotTailH(k, lanes int, x []float32, w []BF16, ldw int, y *[4]float32, kern dotKernelH) {
	_, _ = x[k-1], w[3*ldw+k-1]
	kv := k &^ (lanes - 1)
	if kv > 0 {
		kern(kv, &x[0], &w[0], ldw, y)
	} else {
		*y = [4]float32{}
	}
	for p := kv; p < k; p++ {
		for r := range y {
			y[r] += x[p] * FromBF16(w[r*ldw+p])
		}
	}
}

// axpyStrips covers n columns with wide strips, then narrow ones, then the
// last few columns in Go. A column's path depends only on its offset from
// the start of the call, which GEMV aligns to its fixed grain.
func axpyStrips(k, n int, x, b []float32, ldb int, y []float32, accumulate bool, wide int, kw axpyKernel, narrow int, kn axpyKernel) {
	_, _, _ = x[k-1], b[(k-1)*ldb+n-1], y[n-1]
	j := 0
	for ; j+wide <= n; j += wide {
		kw(k, &x[0], &b[j], ldb, &y[j], accumulate)
	}
	for ; j+narrow <= n; j += narrow {
		kn(k, &x[0], &b[j], ldb, &y[j], accumulate)
	}
	if j < n {
		axpyGo(k, n-j, x, b[j:], ldb, y[j:], accumulate)
	}
}

func axpyStripsH(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool, wide int, kw axpyKernelH, narrow int, kn axpyKernelH) {
	_, _, _ = x[k-1], b[(k-1)*ldb+n-1], y[n-1]
	j := 0
	for ; j+wide <= n; j += wide {
		kw(k, &x[0], &b[j], ldb, &y[j], accumulate)
	}
	for ; j+narrow <= n; j += narrow {
		kn(k, &x[0], &b[j], ldb, &y[j], accumulate)
	}
	if j < n {
		axpyhGo(k, n-j, x, b[j:], ldb, y[j:], accumulate)
	}
}

// fmaPeakNames lists the FMA-peak loops this CPU can run.
func fmaPeakNames() []string {
	var l []string
	for _, im := range archImpls() {
		l = append(l, im.name)
	}
	return l
}

// fmaPeak runs the named peak loop for iters iterations and returns the
// flops of one iteration.
func fmaPeak(name string, iters int) int {
	if name == "avx512" {
		if iters > 0 {
			fmaPeakAVX512(iters)
		}
		return 24 * 16 * 2
	}
	if iters > 0 {
		fmaPeakAVX2(iters)
	}
	return 12 * 8 * 2
}
