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
		if haveAMX {
			l = append(l, amxImpl)
		}
		if cpu.X86.HasAVX512BF16 {
			if vdpbf16FullRate {
				l = append(l, avx512bf16Impl, avx512bf16GemvImpl)
			} else {
				l = append(l, avx512bf16GemvImpl, avx512bf16Impl)
			}
		}
		l = append(l, avx512Impl)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		l = append(l, avx2Impl)
	}
	return l
}

// vdpbf16FullRate reports a CPU whose VDPBF16PS issues as fast as its
// float32 FMA, so that the blocked bf16-pair GEMM (avx512bf16Impl) has
// twice the widening path's peak: AVX512_BF16 without AMX in CPUID (AMD
// Zen 4 and later; Intel's Cooper Lake, not measured). The Xeons with AMX
// issue it at half rate (see avx512bf16GemvImpl) and take AMX or widening.
// Measured on a 2-vCPU AMD EPYC (Zen 4, session 7): BenchmarkFMAPeak and
// BenchmarkGemmBF16Path in docs/performance.md.
var vdpbf16FullRate = cpu.X86.HasAVX512BF16 && !cpu.X86.HasAMXBF16

// copyRowsF32 and copyRowsBF16 are the assembly row-copy loops by panel
// width (nil where a width has none).
var (
	copyRowsF32  = [33]func(kc int, src *float32, ld int, dst *float32){32: copyRows32, 16: copyRows16, 12: copyRows12, 6: copyRows6}
	copyRowsBF16 = [33]func(kc int, src *uint16, ld int, dst *float32){32: copyRowsH32, 16: copyRowsH16}
)

// copyPanel copies kc rows of w values (stride ld) to dst (stride w) with
// an assembly loop when w has one; it reports whether it did.
func copyPanel(kc, w int, src []float32, ld int, dst []float32) bool {
	return copyPanelWith(&copyRowsF32, kc, w, src, ld, dst)
}

// copyPanelH is copyPanel for a bf16 source, widening to float32.
func copyPanelH(kc, w int, src []BF16, ld int, dst []float32) bool {
	return copyPanelWith(&copyRowsBF16, kc, w, src, ld, dst)
}

func copyPanelWith[T any](loops *[33]func(int, *T, int, *float32), kc, w int, src []T, ld int, dst []float32) bool {
	if !haveAsm || w >= len(loops) || loops[w] == nil {
		return false
	}
	_, _ = src[(kc-1)*ld+w-1], dst[kc*w-1]
	loops[w](kc, &src[0], ld, &dst[0])
	return true
}

// transposeBlock stores the transpose of 8 rows × k8 columns of src (stride
// ld; k8 a multiple of 8) at dst with stride ldd.
func transposeBlock(k8 int, src []float32, ld int, dst []float32, ldd int) {
	_, _ = src[7*ld+k8-1], dst[(k8-1)*ldd+7]
	transpose8(k8, &src[0], ld, &dst[0], ldd)
}

// packBTrans and packBTransH pack nr full rows of a stored-n×k B (nr a
// multiple of 8) with 8×8 register transposes; the last kc%8 columns in Go.
// haveAsm reports whether the assembly packing helpers (ymm: AVX2) can run
// on this CPU; without them every path packs in Go.
var haveAsm = cpu.X86.HasAVX2

func init() {
	if !haveAsm {
		packBTrans, packBTransH = nil, nil
	}
}

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

// avx512Impl: 12×32 tiles in 24 zmm accumulators. A 12×kc A sliver is 12
// KiB at kc=256 (L1 is 48 KiB) and a task's 256×1024 B block 1 MiB (L2 is 2
// MiB), so each 32 KiB B micro-panel streams from L2.
var avx512Impl = &impl{
	name: "avx512",
	blockKernel: blockKernel{
		mr: 12, nr: 32,
		kc: 256, nc: 1024,
		micro: func(kc int, a, b, c []float32, ldc int, accumulate bool) {
			_, _, _ = a[12*kc-1], b[32*kc-1], c[11*ldc+31]
			micro12x32AVX512(kc, &a[0], &b[0], &c[0], ldc, accumulate)
		},
		microRows: func(rows, kc int, a, b, c []float32, ldc int, accumulate bool) bool {
			_, _ = a[12*kc-1], b[32*kc-1]
			switch rows {
			case 4:
				_ = c[3*ldc+31]
				micro4x32AVX512A12(kc, &a[0], &b[0], &c[0], ldc, accumulate)
			case 8:
				_ = c[7*ldc+31]
				micro8x32AVX512A12(kc, &a[0], &b[0], &c[0], ldc, accumulate)
			default:
				return false
			}
			return true
		},
	},
	dot4: func(k int, x, w []float32, ldw int, y *[4]float32) {
		dotTail(k, 16, x, w, ldw, y, dot4AVX512)
	},
	dot4h: func(k int, x []float32, w []BF16, ldw int, y *[4]float32) {
		dotTailH(k, 16, x, w, ldw, y, dot4hAVX512)
	},
	dot4x3: func(k int, x []float32, ldx int, w []float32, ldw int, y *[12]float32) {
		_, _ = x[2*ldx+k-1], w[3*ldw+k-1]
		kv := k &^ 15
		if kv > 0 {
			dot4x3AVX512(kv, &x[0], ldx, &w[0], ldw, y)
		} else {
			*y = [12]float32{}
		}
		for i := 0; i < 3; i++ {
			dotRest(kv, k, x[i*ldx:], w, ldw, (*[4]float32)(y[4*i:]))
		}
	},
	dot4hx3: func(k int, x []float32, ldx int, w []BF16, ldw int, y *[12]float32) {
		_, _ = x[2*ldx+k-1], w[3*ldw+k-1]
		kv := k &^ 15
		if kv > 0 {
			dot4hx3AVX512(kv, &x[0], ldx, &w[0], ldw, y)
		} else {
			*y = [12]float32{}
		}
		for i := 0; i < 3; i++ {
			dotRestH(kv, k, x[i*ldx:], w, ldw, (*[4]float32)(y[4*i:]))
		}
	},
	axpy: func(k, n int, x, b []float32, ldb int, y []float32, accumulate bool) {
		axpyVec(k, n, x, b, ldb, y, accumulate, 16, axpyAVX512)
	},
	axpyh: func(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool) {
		axpyVecH(k, n, x, b, ldb, y, accumulate, 16, axpyhAVX512)
	},
}

// avx2Impl: 6×16 tiles in 12 ymm accumulators (16 registers in all).
var avx2Impl = &impl{
	name: "avx2",
	blockKernel: blockKernel{
		mr: 6, nr: 16,
		kc: 256, nc: 1024,
		micro: func(kc int, a, b, c []float32, ldc int, accumulate bool) {
			_, _, _ = a[6*kc-1], b[16*kc-1], c[5*ldc+15]
			micro6x16AVX2(kc, &a[0], &b[0], &c[0], ldc, accumulate)
		},
	},
	dot4: func(k int, x, w []float32, ldw int, y *[4]float32) {
		dotTail(k, 8, x, w, ldw, y, dot4AVX2)
	},
	dot4h: func(k int, x []float32, w []BF16, ldw int, y *[4]float32) {
		dotTailH(k, 8, x, w, ldw, y, dot4hAVX2)
	},
	axpy: func(k, n int, x, b []float32, ldb int, y []float32, accumulate bool) {
		axpyVec(k, n, x, b, ldb, y, accumulate, 8, axpyAVX2)
	},
	axpyh: func(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool) {
		axpyVecH(k, n, x, b, ldb, y, accumulate, 8, axpyhAVX2)
	},
}

type (
	dotKernel   func(k int, x, w *float32, ldw int, y *[4]float32)
	dotKernelH  func(k int, x *float32, w *uint16, ldw int, y *[4]float32)
	axpyKernel  func(k int, x, b *float32, ldb int, y *float32, w int)
	axpyKernelH func(k int, x *float32, b *uint16, ldb int, y *float32, w int)
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
	dotRest(kv, k, x, w, ldw, y)
}

// dotRest adds the products of p in [kv, k) to y, in order: the tail of
// dotTail and of dot4x3, one function so both round alike.
func dotRest(kv, k int, x, w []float32, ldw int, y *[4]float32) {
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
	dotRestH(kv, k, x, w, ldw, y)
}

// dotRestH is dotRest with bf16 w.
func dotRestH(kv, k int, x []float32, w []BF16, ldw int, y *[4]float32) {
	for p := kv; p < k; p++ {
		for r := range y {
			y[r] += x[p] * FromBF16(w[r*ldw+p])
		}
	}
}

// axpyChunk is how many columns of partial sums axpyVec keeps in L1.
const axpyChunk = 1024

// axpyVec runs the vector kernel over whole vectors of columns, chunk by
// chunk, and the last n%lanes columns in Go. Callers start every call at a
// multiple of lanes (gemv's grain is one), so a column takes the same path
// whatever the split.
func axpyVec(k, n int, x, b []float32, ldb int, y []float32, accumulate bool, lanes int, kern axpyKernel) {
	_, _, _ = x[k-1], b[(k-1)*ldb+n-1], y[n-1]
	var tmp [axpyChunk]float32
	for j0 := 0; j0 < n; j0 += axpyChunk {
		cols := min(axpyChunk, n-j0)
		s := tmp[:cols]
		if !accumulate {
			s = y[j0 : j0+cols]
		}
		clear(s)
		if wv := cols &^ (lanes - 1); wv > 0 {
			kern(k, &x[0], &b[j0], ldb, &s[0], wv)
			if wv < cols {
				axpyGo(k, cols-wv, x, b[j0+wv:], ldb, s[wv:], false)
			}
		} else {
			axpyGo(k, cols, x, b[j0:], ldb, s, false)
		}
		if accumulate {
			storeRow(y[j0:j0+cols], s, true)
		}
	}
}

func axpyVecH(k, n int, x []float32, b []BF16, ldb int, y []float32, accumulate bool, lanes int, kern axpyKernelH) {
	_, _, _ = x[k-1], b[(k-1)*ldb+n-1], y[n-1]
	var tmp [axpyChunk]float32
	for j0 := 0; j0 < n; j0 += axpyChunk {
		cols := min(axpyChunk, n-j0)
		s := tmp[:cols]
		if !accumulate {
			s = y[j0 : j0+cols]
		}
		clear(s)
		if wv := cols &^ (lanes - 1); wv > 0 {
			kern(k, &x[0], &b[j0], ldb, &s[0], wv)
			if wv < cols {
				axpyhGo(k, cols-wv, x, b[j0+wv:], ldb, s[wv:], false)
			}
		} else {
			axpyhGo(k, cols, x, b[j0:], ldb, s, false)
		}
		if accumulate {
			storeRow(y[j0:j0+cols], s, true)
		}
	}
}

// fmaPeakNames lists the FMA-peak loops this CPU can run.
func fmaPeakNames() []string {
	var l []string
	for _, im := range archImpls() {
		if im != avx512bf16GemvImpl && im != amxImpl {
			l = append(l, im.name)
		}
	}
	return l
}

// fmaPeak runs the named peak loop for iters iterations and returns the
// flops of one iteration.
func fmaPeak(name string, iters int) int {
	if name == "avx512bf16" {
		if iters > 0 {
			fmaPeakBF16(iters)
		}
		return 24 * 16 * 2 * 2
	}
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
