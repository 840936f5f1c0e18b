package kernels

import (
	"fmt"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// Q4Block is the number of consecutive elements (of the flattened,
// row-major matrix) that share one scale in a Q4 matrix: bitsandbytes'
// 4-bit block size.
const Q4Block = 64

// Q4 is a Rows×Cols matrix stored as 4-bit codes, bitsandbytes' NF4/FP4
// layout: element e of the row-major matrix has code
// Packed[e/2]>>4 when e is even and Packed[e/2]&15 when odd, and the value
// Code[code]*Scales[e/Q4Block], one float32 multiply. Blocks may cross
// rows (when Cols is not a multiple of Q4Block).
type Q4 struct {
	Rows, Cols int
	Packed     []byte
	Scales     []float32
	Code       *[16]float32

	// BF16 is bitsandbytes' bnb_4bit_compute_dtype=bfloat16: products
	// through the blocked path round each dequantized weight to bf16
	// (Code[c]*scale in float32, then nearest even, as bitsandbytes'
	// dequantize_4bit writes a bf16 output) and multiply it as GemmBF16
	// multiplies a bf16 B (A rounded to bf16 and VDPBF16PS or AMX pairs
	// where the CPU has them, B widened otherwise). The transposed GEMV
	// (decoding, and up to RowInvariantRows rows) computes the same bf16
	// products where the CPU has AVX512_BF16 (q4DotBF16: the codes looked
	// up in a bf16 table, VDPBF16PS; within float32 summation rounding of
	// the blocked path), and float32 elsewhere or when K is not a multiple
	// of the block; the stored-k×n GEMV (the backward of up to 4 rows)
	// stays float32.
	BF16 bool
}

func (b *Q4) check(what string) {
	n := b.Rows * b.Cols
	if b.Rows < 0 || b.Cols < 0 || len(b.Packed) < (n+1)/2 || len(b.Scales) < (n+Q4Block-1)/Q4Block || b.Code == nil {
		panic(fmt.Sprintf("kernels.%s: bad Q4 %d×%d with %d bytes, %d scales", what, b.Rows, b.Cols, len(b.Packed), len(b.Scales)))
	}
}

// lut returns block blk's 16 values: Code[i]*scale, the exact products
// dequantization gives.
func (b *Q4) lut(blk int, l *[16]float32) {
	s := b.Scales[blk]
	for i, c := range b.Code {
		l[i] = float32(c * s)
	}
}

// decode writes the values of elements e0..e0+cnt-1 to out[0],
// out[stride], out[2*stride], ...
func (b *Q4) decode(e0, cnt int, out []float32, stride int) {
	var l [16]float32
	o := 0
	for e, end := e0, e0+cnt; e < end; {
		blk := e / Q4Block
		bend := min(end, (blk+1)*Q4Block)
		if q4DecodeChunks != nil && stride == 1 && e%32 == 0 && end-e >= 32 {
			// Whole 32-element chunks in assembly: all those left when e
			// starts a block, else the one that ends it.
			nc := (end - e) / 32
			if e%Q4Block != 0 {
				nc = 1
			}
			q4DecodeChunks(nc, b.Packed[e/2:e/2+16*nc], b.Scales[blk:], b.Code, out[o:o+32*nc])
			e += 32 * nc
			o += 32 * nc
			continue
		}
		b.lut(blk, &l)
		if e&1 == 1 {
			out[o] = l[b.Packed[e>>1]&15]
			o += stride
			e++
		}
		if stride == 1 {
			pk := b.Packed[e>>1 : (e>>1)+(bend-e)/2]
			dst := out[o : o+2*len(pk)]
			for i, v := range pk {
				dst[2*i] = l[v>>4]
				dst[2*i+1] = l[v&15]
			}
			o += 2 * len(pk)
			e += 2 * len(pk)
		} else {
			for ; e+1 < bend; e += 2 {
				v := b.Packed[e>>1]
				out[o] = l[v>>4]
				out[o+stride] = l[v&15]
				o += 2 * stride
			}
		}
		if e < bend {
			out[o] = l[b.Packed[e>>1]>>4]
			o += stride
			e++
		}
	}
}

// Dequantize writes the whole matrix (Rows×Cols floats) to dst. The kernels
// never need it; it is the reference they are tested against.
func (b *Q4) Dequantize(dst []float32) {
	b.check("Q4.Dequantize")
	b.decode(0, b.Rows*b.Cols, dst[:b.Rows*b.Cols], 1)
}

// DequantizeRows writes rows [r0, r1) (of the Rows×Cols matrix) to dst,
// (r1-r0)·Cols floats: what a method that reads a frozen weight's rows
// (DoRA's row norms) needs, without the whole layer in float32.
func (b *Q4) DequantizeRows(r0, r1 int, dst []float32) {
	b.check("Q4.DequantizeRows")
	if r0 < 0 || r1 > b.Rows || r0 > r1 {
		panic(fmt.Sprintf("kernels.Q4.DequantizeRows: rows [%d,%d) of %d", r0, r1, b.Rows))
	}
	n := (r1 - r0) * b.Cols
	b.decode(r0*b.Cols, n, dst[:n], 1)
}

// q4GemvRows: products with at most this many rows of A take the GEMV
// paths, which read the 4-bit weights directly; more rows go through the
// blocked GEMM, which dequantizes B panel by panel.
const q4GemvRows = 4

// GemmQ4 is Gemm with B a 4-bit matrix (a frozen NF4/FP4 weight): C = A·op(B)
// or C += A·op(B), A m×k row-major (stride lda), C m×n (stride ldc). With
// transB, B is n×k and op(B) its transpose — the forward of a Linear layer,
// y = x·Wᵀ; without, B is k×n — the backward to its input, dx = dy·W.
//
// No float32 copy of B is made. Above q4GemvRows rows (RowInvariantRows
// with transB, where the rows go through the GEMV a few at a time) the blocked path
// dequantizes each kc×nr micro-panel of B while packing it, into the
// buffer the float32 micro-kernel reads, so the result equals, bit for bit,
// Gemm on the dequantized B (same panels, same kernel, same order of
// sums). Few rows (decoding) take GEMV paths that read the packed codes
// directly: each weight is Code[c]*scale exactly as above, but the sums
// over k are grouped differently, so results match Gemm within float32
// rounding of the same sums.
func GemmQ4(transB bool, m, n, k int, a []float32, lda int, b *Q4, c []float32, ldc int, accumulate bool) {
	b.check("GemmQ4")
	br, bc := k, n
	if transB {
		br, bc = n, k
	}
	if b.Rows != br || b.Cols != bc {
		panic(fmt.Sprintf("kernels.GemmQ4: B is %d×%d, want %d×%d (transB=%v m=%d n=%d k=%d)", b.Rows, b.Cols, br, bc, transB, m, n, k))
	}
	checkGemm(false, transB, m, n, k, len(a), lda, br*bc, bc, len(c), ldc)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !accumulate {
			for i := 0; i < m; i++ {
				clear(c[i*ldc : i*ldc+n])
			}
		}
		return
	}
	switch {
	case m <= RowInvariantRows && transB:
		// q4GemvRows rows at a time: every row's dot products are the
		// one-row ones, whatever the other rows (see RowInvariantRows).
		for r0 := 0; r0 < m; r0 += q4GemvRows {
			gemvQ4T(min(q4GemvRows, m-r0), n, k, a[r0*lda:], lda, b, c[r0*ldc:], ldc, accumulate)
		}
	case m <= q4GemvRows:
		gemvQ4N(m, n, k, a, lda, b, c, ldc, accumulate)
	case b.BF16:
		// The path's bf16 blocked kernel (or, without one, its float32
		// kernel widening bf16), fed panels decoded to bf16 first: the
		// result equals GemmBF16 on the weights rounded to bf16.
		im := *active
		if im.bf16 != nil {
			im.blockKernel = *im.bf16
			im.bf16 = nil
		}
		pack := im.blockKernel.packB
		if pack == nil {
			pack = packB
		}
		im.blockKernel.packB = func(_ bMat, j0, cols, p0, kc, nr int, dst []float32) {
			packBQ4AsBF16(b, transB, j0, cols, p0, kc, nr, dst, pack)
		}
		gemmBlocked(&im, false, m, n, k, a, lda, bMat{}, c, ldc, accumulate)
	default:
		im := *active
		im.blockKernel.packB = func(_ bMat, j0, cols, p0, kc, nr int, dst []float32) {
			packBQ4(b, transB, j0, cols, p0, kc, nr, dst)
		}
		gemmBlocked(&im, false, m, n, k, a, lda, bMat{}, c, ldc, accumulate)
	}
}

// packBQ4AsBF16 is packB for a Q4 B computed in bf16: the block of B the
// micro-panel covers is decoded to float32, rounded to bf16 and handed to
// the path's bf16 packer (pack) as a bf16 B of its own.
func packBQ4AsBF16(b *Q4, transB bool, j0, cols, p0, kc, nr int, dst []float32, pack func(bMat, int, int, int, int, int, []float32)) {
	fb, hb := f32Bufs.get(cols*kc), bf16Bufs.get(cols*kc)
	defer f32Bufs.put(fb)
	defer bf16Bufs.put(hb)
	f, h := *fb, *hb
	ld := cols
	if transB { // stored n×k: cols rows of kc codes
		ld = kc
		for j := 0; j < cols; j++ {
			b.decode((j0+j)*b.Cols+p0, kc, f[j*kc:(j+1)*kc], 1)
		}
	} else {
		for p := 0; p < kc; p++ {
			b.decode((p0+p)*b.Cols+j0, cols, f[p*cols:(p+1)*cols], 1)
		}
	}
	roundBF16(h, f)
	pack(bMat{h: h, ld: ld, trans: transB}, 0, cols, 0, kc, nr, dst)
}

// packBQ4 is packB for a Q4 B: rows [p0, p0+kc) × columns [j0, j0+cols) of
// op(B), dequantized into dst k-major (nr values per k), zero-padded.
func packBQ4(b *Q4, transB bool, j0, cols, p0, kc, nr int, dst []float32) {
	dst = dst[:nr*kc]
	if cols < nr {
		clear(dst)
	}
	if transB { // B stored n×k: column j of op(B) is row j of B, scattered at stride nr
		if cols == nr && nr%8 == 0 && packBTrans != nil && q4DecodeChunks != nil {
			// Decode the nr rows (contiguous, in assembly), then transpose
			// them with the float32 packer's 8×8 register transposes.
			buf := f32Bufs.get(nr * kc)
			defer f32Bufs.put(buf)
			rows := *buf
			for j := 0; j < nr; j++ {
				b.decode((j0+j)*b.Cols+p0, kc, rows[j*kc:(j+1)*kc], 1)
			}
			packBTrans(kc, nr, rows, kc, dst)
			return
		}
		for j := 0; j < cols; j++ {
			b.decode((j0+j)*b.Cols+p0, kc, dst[j:], nr)
		}
		return
	}
	for p := 0; p < kc; p++ { // B stored k×n: rows are contiguous
		b.decode((p0+p)*b.Cols+j0, cols, dst[p*nr:p*nr+cols], 1)
	}
}

// gemvQ4T is C (+)= A·Bᵀ for few rows of A, B stored n×k: one dot product
// per output, the 4-bit weights read once per call (every row of A uses
// each decoded block while it is in registers or L1).
func gemvQ4T(m, n, k int, a []float32, lda int, b *Q4, c []float32, ldc int, accumulate bool) {
	serial := 2*m*n*k < serialFlops || parallel.Threads() == 1
	// Even-odd split copies of the rows of A, for q4Dot's layout.
	var xs [q4GemvRows][]float32
	var xh [q4GemvRows][]BF16
	pairs := b.BF16 && q4DotBF16 != nil && k%Q4Block == 0
	fast := !pairs && q4Dot != nil && k%Q4Block == 0
	if pairs { // rounded to bf16 and split for q4DotBF16
		buf := bf16Bufs.get(m * k)
		defer bf16Bufs.put(buf)
		for r := 0; r < m; r++ {
			xh[r] = (*buf)[r*k : (r+1)*k]
			splitEvenOdd64BF16(xh[r], a[r*lda:r*lda+k])
		}
	}
	if fast {
		buf := f32Bufs.get(m * k)
		defer f32Bufs.put(buf)
		for r := 0; r < m; r++ {
			xs[r] = (*buf)[r*k : (r+1)*k]
			splitEvenOdd(xs[r], a[r*lda:r*lda+k])
		}
	}
	forPar(serial, n, gemvGrain, func(lo, hi int) {
		var y [q4GemvRows]float32
		for j := lo; j < hi; j++ {
			if pairs {
				e := j * k
				for r := 0; r < m; r++ {
					y[r] = q4DotBF16(k/Q4Block, xh[r], b.Packed[e/2:(e+k)/2], b.Scales[e/Q4Block:(e+k)/Q4Block], b.Code)
				}
			} else if fast {
				e := j * k
				for r := 0; r < m; r++ {
					y[r] = q4Dot(k/Q4Block, xs[r], b.Packed[e/2:(e+k)/2], b.Scales[e/Q4Block:(e+k)/Q4Block], b.Code)
				}
			} else {
				dotQ4Row(m, k, a, lda, b, j*k, &y)
			}
			for r := 0; r < m; r++ {
				if accumulate {
					c[r*ldc+j] += y[r]
				} else {
					c[r*ldc+j] = y[r]
				}
			}
		}
	})
}

// splitEvenOdd copies x into dst by 32-element chunks, each as its 16
// even-indexed then its 16 odd-indexed elements: the order in which q4Dot
// meets the high and low nibbles of 16 bytes. len(x) is a multiple of 32.
func splitEvenOdd(dst, x []float32) {
	for c := 0; c+32 <= len(x); c += 32 {
		for i := 0; i < 16; i++ {
			dst[c+i] = x[c+2*i]
			dst[c+16+i] = x[c+2*i+1]
		}
	}
}

// splitEvenOdd64BF16 rounds x to bf16 into dst by 64-element blocks, each
// as its 32 even-indexed then its 32 odd-indexed elements: the order in
// which q4DotBF16 meets the high and low nibbles of a block's 32 bytes.
// len(x) is a multiple of 64.
func splitEvenOdd64BF16(dst []BF16, x []float32) {
	for c := 0; c+64 <= len(x); c += 64 {
		for i := 0; i < 32; i++ {
			dst[c+i] = ToBF16(x[c+2*i])
			dst[c+32+i] = ToBF16(x[c+2*i+1])
		}
	}
}

// q4DotBF16, where an assembly kernel exists, is q4Dot for a Q4 computed in
// bf16: Σ x·bf16(w) over nb whole blocks, x already bf16 in
// splitEvenOdd64BF16 order, each block's values Code[c]·scale rounded to
// bf16 (nearest even) and the exact products summed in float32.
var q4DotBF16 func(nb int, x []BF16, p []byte, scales []float32, code *[16]float32) float32

// q4DecodeChunks, where an assembly kernel exists, writes nc chunks of 32
// weights (from p, 16 bytes each) to dst in element order, chunk i scaled by
// scales[i/2].
var q4DecodeChunks func(nc int, p []byte, scales []float32, code *[16]float32, dst []float32)

// q4Dot, where an assembly kernel exists, returns Σ x·w over nb whole
// blocks of a row that starts on a block boundary: x in splitEvenOdd
// order, p the row's nb*32 bytes, scales its nb scales.
var q4Dot func(nb int, x []float32, p []byte, scales []float32, code *[16]float32) float32

// dotQ4Row sets y[r] = Σ_p a[r,p]·w[e0+p] for r < m, p < k: the
// portable dot product, block segment by block segment, two accumulators
// (even and odd elements) per row.
func dotQ4Row(m, k int, a []float32, lda int, b *Q4, e0 int, y *[q4GemvRows]float32) {
	*y = [q4GemvRows]float32{}
	var l [16]float32
	for e, end := e0, e0+k; e < end; {
		blk := e / Q4Block
		bend := min(end, (blk+1)*Q4Block)
		b.lut(blk, &l)
		for r := 0; r < m; r++ {
			x := a[r*lda+e-e0 : r*lda+bend-e0]
			var s0, s1 float32
			i := 0
			if e&1 == 1 {
				s1 = x[0] * l[b.Packed[e>>1]&15]
				i = 1
			}
			pk := b.Packed[(e+i)>>1:]
			for ; i+1 < len(x); i += 2 {
				v := pk[0]
				pk = pk[1:]
				s0 += x[i] * l[v>>4]
				s1 += x[i+1] * l[v&15]
			}
			if i < len(x) {
				s0 += x[i] * l[pk[0]>>4]
			}
			y[r] += s0 + s1
		}
		e = bend
	}
}

// gemvQ4N is C (+)= A·B for few rows of A, B stored k×n: workers take
// column ranges; each decodes its part of every row of B once and adds it,
// scaled by A[r,p], to its partial sums in k order (gemmRef's order).
func gemvQ4N(m, n, k int, a []float32, lda int, b *Q4, c []float32, ldc int, accumulate bool) {
	serial := 2*m*n*k < serialFlops || parallel.Threads() == 1
	const chunk = 512
	forPar(serial, (n+chunk-1)/chunk, 1, func(lo, hi int) {
		var w [chunk]float32
		var acc [q4GemvRows][chunk]float32
		for t := lo; t < hi; t++ {
			j0 := t * chunk
			cols := min(chunk, n-j0)
			for r := 0; r < m; r++ {
				clear(acc[r][:cols])
			}
			for p := 0; p < k; p++ {
				b.decode(p*n+j0, cols, w[:cols], 1)
				for r := 0; r < m; r++ {
					x := a[r*lda+p]
					s := acc[r][:cols]
					for j, v := range w[:cols] {
						s[j] += x * v
					}
				}
			}
			for r := 0; r < m; r++ {
				storeRow(c[r*ldc+j0:r*ldc+j0+cols], acc[r][:cols], accumulate)
			}
		}
	})
}
