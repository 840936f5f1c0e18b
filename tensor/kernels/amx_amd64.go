//go:build amd64 && !purego

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// The AMX path. GemmBF16 with M > 1 rounds A to bf16 (nearest even, as
// the AVX512_BF16 path does) and multiplies 16×32 bf16 tiles of A by 32×16
// tiles of B into 16×16 float32 tiles of C with TDPBF16PS: 16·16·32
// multiply-adds per instruction, several times the AVX-512 FMA rate.
//
// amxBlock: 32×32 micro-tiles, four 16×16 accumulator tiles. K blocks of
// kc = 1024 (a multiple of 32; the last block is zero-padded to one): a
// packed A sliver is 32 rows × 2 KiB (row-major, 32 consecutive k per tile
// row), a B micro-panel 512 k pairs × 128 bytes = 64 KiB, the bf16-pair
// layout of packBPairs; a 64 KiB A sliver feeds a task's 1 MiB B block
// (nc = 512 columns), which stays in L2 (2 MiB).

// amxCfg is the tile configuration micro32x32AMX loads: palette 1, tiles 0
// to 7 of 16 rows × 64 bytes. Only read (by LDTILECFG), so shared.
var amxCfg = func() (c [64]byte) {
	c[0] = 1 // palette
	for t := 0; t < 8; t++ {
		c[16+2*t] = 64 // colsb, little-endian uint16
		c[48+t] = 16   // rows
	}
	return c
}()

var amxBlock = &blockKernel{
	mr: 32, nr: 32,
	kc: 1024, nc: 512,
	pairs: true, kstep: 32,
	micro: func(kc int, a, b, c []float32, ldc int, accumulate bool) {
		ks := (kc + 31) / 32 // 32-k steps
		_, _, _ = a[32*16*ks-1], b[32*16*ks-1], c[31*ldc+31]
		micro32x32AMX(ks, &a[0], 64*ks, &b[0], &c[0], ldc, accumulate, &amxCfg[0])
	},
	packA: packARowsBF16,
	packB: func(b bMat, j0, cols, p0, kc, nr int, dst []float32) {
		kp := (kc + 1) / 2
		packBPairs(b, j0, cols, p0, kc, nr, dst)
		clear(dst[kp*nr : (kc+31)/32*16*nr]) // k pairs up to the 32-k step
	},
}

// packARowsBF16 packs rows [i0, i0+rows) × k [p0, p0+kc) of A (stored m×k)
// rounded to bf16, row-major: row r holds kc rounded up to 32 bf16 values
// (zero-padded) in dst slots [r·ks, (r+1)·ks), ks = that /2. Missing rows
// are zero.
func packARowsBF16(transA bool, a []float32, lda, i0, rows, p0, kc, mr int, dst []float32) {
	if transA {
		panic("kernels: bf16 row packing of a transposed A")
	}
	ks := (kc + 31) / 32 * 16
	dst = dst[:mr*ks]
	h := unsafe.Slice((*BF16)(unsafe.Pointer(&dst[0])), 2*len(dst))
	for r := 0; r < rows; r++ {
		row := h[r*2*ks : (r+1)*2*ks]
		roundBF16(row[:kc], a[(i0+r)*lda+p0:(i0+r)*lda+p0+kc])
		clear(row[kc:])
	}
	clear(dst[rows*ks:])
}

// amxImpl is avx512bf16GemvImpl (VDPBF16PS GEMV for decoding, AVX-512
// float32 kernels) with the blocked GemmBF16 on AMX.
var amxImpl = func() *impl {
	im := *avx512bf16GemvImpl
	im.name = "amx"
	im.bf16 = amxBlock
	return &im
}()

// haveAMX reports whether the AMX kernels can run: the CPU has AMX-TILE
// and AMX-BF16 (with AVX512_BF16 for the rest of the path) and the OS
// granted this process the tile state (amxPermit, once at start-up).
var haveAMX = haveBF16 && cpu.X86.HasAMXTile && cpu.X86.HasAMXBF16 && amxPermit()
