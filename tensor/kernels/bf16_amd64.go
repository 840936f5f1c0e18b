//go:build amd64 && !purego

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// The AVX512_BF16 path. GemmBF16 rounds A (the activations) to bf16, nearest
// even, and sums pairs of bf16 products into float32 with VDPBF16PS: dst +=
// a[2i]·b[2i] + a[2i+1]·b[2i+1] per lane (products exact; denormal inputs
// and results flushed to zero). Both operands are packed as bf16 pairs: a
// 32-bit slot holds two consecutive k of one row of A or one column of B,
// an odd k padded with zero. Everything else (blocking, K order, threads)
// is the float32 path's.

// avx512bf16Impl is avx512Impl with GemmBF16 (blocked path and the
// transposed GEMV) on VDPBF16PS.
var avx512bf16Impl = func() *impl {
	im := *avx512Impl
	im.name = "avx512bf16"
	im.bf16 = bf16Block
	im.dot4p = dot4Pairs
	return &im
}()

// avx512bf16GemvImpl takes VDPBF16PS for the transposed GEMV only (decode,
// memory-bound: half the instructions of widening) and widens B for the
// blocked path. It comes first where AMX is unusable (amxImpl is this with
// the blocked path on AMX): on the CPU measured (an AMX-capable Xeon under
// a VM; BenchmarkFMAPeak) VDPBF16PS zmm issues once every two cycles,
// a quarter of the VFMADD231PS rate, so its 64 flops per instruction give
// half the float32 FMA peak (116 against 224 GFLOP/s per core) and the
// blocked bf16-pair GEMM, at 90% of its own peak, runs at about 0.67× the
// widening one (BenchmarkGemmBF16Path). Where VDPBF16PS issues as fast as
// an FMA, avx512bf16Impl should lead instead. (Choosing by timing at
// start-up would make results vary from run to run.)
var avx512bf16GemvImpl = func() *impl {
	im := *avx512Impl
	im.name = "avx512bf16gemv"
	im.dot4p = dot4Pairs
	return &im
}()

// dot4Pairs is dot4h with x already rounded to bf16: VDPBF16PS over whole
// 32-value blocks of k, the rest in Go (exact products, added in order).
func dot4Pairs(k int, x, w []BF16, ldw int, y *[4]float32) {
	_, _ = x[k-1], w[3*ldw+k-1]
	kv := k &^ 31
	if kv > 0 {
		dot4BF16(kv, &x[0], &w[0], ldw, y)
	} else {
		*y = [4]float32{}
	}
	for p := kv; p < k; p++ {
		xp := FromBF16(x[p])
		for r := range y {
			y[r] += xp * FromBF16(w[r*ldw+p])
		}
	}
}

// bf16Block: 12×32 tiles in 24 zmm accumulators, as avx512Impl, but kc is
// twice as deep for the same bytes: a 12×512 bf16 A sliver is 12 KiB (L1 48
// KiB) and a task's 512×1024 B block 1 MiB (L2 2 MiB). kc must be even
// (pairs never straddle K blocks).
var bf16Block = &blockKernel{
	mr: 12, nr: 32,
	kc: 512, nc: 1024,
	pairs: true,
	micro: func(kc int, a, b, c []float32, ldc int, accumulate bool) {
		kp := (kc + 1) / 2
		_, _, _ = a[12*kp-1], b[32*kp-1], c[11*ldc+31]
		micro12x32BF16(kp, &a[0], &b[0], &c[0], ldc, accumulate)
	},
	packA: packAPairs,
	packB: packBPairs,
}

// haveBF16 reports whether the AVX512_BF16 kernels can run.
var haveBF16 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512BF16

// asU32 views packed float32 slots as the uint32 bf16 pairs they hold.
func asU32(s []float32) []uint32 {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&s[0])), len(s))
}

func pairOf(lo, hi BF16) uint32 { return uint32(lo) | uint32(hi)<<16 }

// roundBF16 rounds src into dst like F32ToBF16, except that denormals may
// become zero (VDPBF16PS flushes them anyway).
func roundBF16(dst []BF16, src []float32) {
	n := len(src)
	dst = dst[:n]
	nv := n &^ 31
	if nv > 0 && haveBF16 {
		cvtBF16(nv, &src[0], &dst[0])
	} else {
		nv = 0
	}
	F32ToBF16(dst[nv:], src[nv:])
}

// packAPairs packs rows [i0, i0+rows) × k [p0, p0+kc) of A (stored m×k;
// GemmBF16 has no transA) rounded to bf16: dst slot q·mr+r holds a(r, 2q)
// and a(r, 2q+1). A full sliver is rounded row by row into a scratch block,
// then moved into place by 8-row dword transposes.
func packAPairs(transA bool, a []float32, lda, i0, rows, p0, kc, mr int, dst []float32) {
	if transA {
		panic("kernels: bf16-pair packing of a transposed A")
	}
	kp := (kc + 1) / 2
	d := asU32(dst[:mr*kp])
	if rows == mr && mr >= 8 && haveBF16 {
		buf := f32Bufs.get(mr * kp)
		defer f32Bufs.put(buf)
		scr := *buf
		for r := 0; r < mr; r++ {
			row := a[(i0+r)*lda+p0 : (i0+r)*lda+p0+kc]
			h := unsafe.Slice((*BF16)(unsafe.Pointer(&scr[r*kp])), 2*kp)
			roundBF16(h, row)
			if kc%2 != 0 {
				h[kc] = 0
			}
		}
		k8 := kp &^ 7
		for r0 := 0; r0 < mr; r0 += 8 {
			r0 = min(r0, mr-8)
			if k8 > 0 {
				transposeBlock(k8, scr[r0*kp:], kp, dst[r0:], mr)
			}
		}
		s := asU32(scr)
		for r := 0; r < mr; r++ {
			for q := k8; q < kp; q++ {
				d[q*mr+r] = s[r*kp+q]
			}
		}
		return
	}
	if rows < mr {
		clear(d)
	}
	for r := 0; r < rows; r++ {
		row := a[(i0+r)*lda+p0 : (i0+r)*lda+p0+kc]
		for q := 0; q < kc/2; q++ {
			d[q*mr+r] = pairOf(ToBF16(row[2*q]), ToBF16(row[2*q+1]))
		}
		if kc%2 != 0 {
			d[(kp-1)*mr+r] = pairOf(ToBF16(row[kc-1]), 0)
		}
	}
}

// packBPairs packs rows [p0, p0+kc) × columns [j0, j0+cols) of op(B) (bf16)
// as pairs: dst slot q·nr+j holds b(2q, j) and b(2q+1, j), zero-padded.
func packBPairs(b bMat, j0, cols, p0, kc, nr int, dst []float32) {
	kp := (kc + 1) / 2
	d := asU32(dst[:nr*kp])
	if cols < nr {
		clear(d)
	}
	h, ld := b.h, b.ld
	if b.trans { // stored n×k: a column of op(B) is a row, its pairs dwords
		q0 := 0
		if cols == nr && nr%8 == 0 && haveBF16 {
			q0 = (kc / 2) &^ 7
			_ = h[(j0+nr-1)*ld+p0+kc-1]
			if q0 > 0 {
				for j := 0; j < nr; j += 8 {
					transpose8w(q0, &h[(j0+j)*ld+p0], ld, &dst[j], nr)
				}
			}
		}
		for j := 0; j < cols; j++ {
			row := h[(j0+j)*ld+p0 : (j0+j)*ld+p0+kc]
			for q := q0; q < kc/2; q++ {
				d[q*nr+j] = pairOf(row[2*q], row[2*q+1])
			}
			if kc%2 != 0 {
				d[(kp-1)*nr+j] = pairOf(row[kc-1], 0)
			}
		}
		return
	}
	// Stored k×n: interleave rows 2q and 2q+1.
	q0 := 0
	if cols == 32 && nr == 32 && kc >= 2 && haveBF16 {
		q0 = kc / 2
		_ = h[(p0+2*q0-1)*ld+j0+31]
		pairRowsH32(q0, &h[p0*ld+j0], ld, &dst[0])
	}
	for q := q0; q < kc/2; q++ {
		r0 := h[(p0+2*q)*ld+j0 : (p0+2*q)*ld+j0+cols]
		r1 := h[(p0+2*q+1)*ld+j0 : (p0+2*q+1)*ld+j0+cols]
		for j := range r0 {
			d[q*nr+j] = pairOf(r0[j], r1[j])
		}
	}
	if kc%2 != 0 {
		r0 := h[(p0+kc-1)*ld+j0 : (p0+kc-1)*ld+j0+cols]
		for j, v := range r0 {
			d[(kp-1)*nr+j] = pairOf(v, 0)
		}
	}
}
