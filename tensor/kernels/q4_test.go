package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// nf4Book is bitsandbytes' NF4 code book (float32), for building test
// matrices; package quant owns the formats.
var nf4Book = [16]float32{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// randQ4 returns a random rows×cols Q4 matrix and its dequantized values.
func randQ4(r *rand.Rand, rows, cols int) (*Q4, []float32) {
	n := rows * cols
	q := &Q4{Rows: rows, Cols: cols, Packed: make([]byte, (n+1)/2), Scales: make([]float32, (n+Q4Block-1)/Q4Block), Code: &nf4Book}
	for i := range q.Packed {
		q.Packed[i] = byte(r.IntN(256))
	}
	for i := range q.Scales {
		q.Scales[i] = 0.01 + r.Float32()*0.05
	}
	w := make([]float32, n)
	q.Dequantize(w)
	return q, w
}

func TestQ4Dequantize(t *testing.T) {
	withQ4Kernels(t, testQ4Dequantize)
}

func testQ4Dequantize(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	q, w := randQ4(r, 7, 37) // odd count, blocks across rows
	for e := range w {
		c := q.Packed[e/2] >> 4
		if e%2 == 1 {
			c = q.Packed[e/2] & 15
		}
		if want := nf4Book[c] * q.Scales[e/Q4Block]; w[e] != want {
			t.Fatalf("element %d: %g, want %g", e, w[e], want)
		}
	}
	// decode at a stride, from odd and even starts, equals the plain copy.
	for _, e0 := range []int{0, 1, 32, 63, 64, 65, 96, 100} {
		cnt := len(w) - e0
		out := make([]float32, 3*cnt)
		q.decode(e0, cnt, out, 3)
		for i := 0; i < cnt; i++ {
			if out[3*i] != w[e0+i] {
				t.Fatalf("decode from %d at stride 3: element %d is %g, want %g", e0, i, out[3*i], w[e0+i])
			}
		}
	}
}

// q4Shapes: odd sizes, k and n not multiples of the block or of any
// micro-tile, a partial last block, and LLaMA-like multiples of 64.
var q4Shapes = []struct{ m, n, k int }{
	{1, 1, 1}, {1, 7, 37}, {2, 33, 65}, {3, 64, 128}, {4, 45, 129}, {1, 96, 256}, {2, 40, 320},
	{5, 31, 67}, {13, 50, 99}, {17, 129, 200}, {40, 64, 192}, {29, 33, 300}, {70, 40, 96},
}

// TestGemmQ4 checks GemmQ4, both layouts, on every path this CPU has:
// above q4GemvRows rows (RowInvariantRows with transB) the result equals Gemm on the dequantized matrix
// bit for bit; on the GEMV paths it is within the float32 rounding bound
// of gemmRef on it.
func TestGemmQ4(t *testing.T) {
	withQ4Kernels(t, func(t *testing.T) { withImpl(t, testGemmQ4) })
}

func testGemmQ4(t *testing.T, im *impl) {
	r := rand.New(rand.NewPCG(2, 3))
	eachQ4Case(r, q4Shapes, func(c q4Case) {
		g := gemmCase{transB: c.transB, acc: c.acc, m: c.m, n: c.n, k: c.k}
		checkGemmCase(t, g, r, c.w, func(a []float32, lda int, out []float32) {
			GemmQ4(c.transB, c.m, c.n, c.k, a, lda, c.q, out, c.n, c.acc)
		})
		if c.gemv() {
			return
		}
		// Bit-exact against Gemm, with padded leading dimensions.
		c.compare(t, r, "Gemm on the dequantized B", func(a []float32, lda int, out []float32, ldc int) {
			GemmQ4(c.transB, c.m, c.n, c.k, a, lda, c.q, out, ldc, c.acc)
		}, func(a []float32, lda int, out []float32, ldc int) {
			Gemm(false, c.transB, c.m, c.n, c.k, a, lda, c.w, c.bc, out, ldc, c.acc)
		})
	})
}

// TestGemmQ4BF16: with Q4.BF16 (bitsandbytes' bf16 compute dtype) the
// blocked path equals GemmBF16 on the dequantized weights rounded to bf16,
// bit for bit, on every path this CPU has (VDPBF16PS or AMX pairs, or
// widening). The transposed GEMV computes the same bf16 products where the
// CPU has q4DotBF16 (within float32 rounding of the exact sums of rounded
// operands); the other few-row paths keep GemmQ4's float32 result.
func TestGemmQ4BF16(t *testing.T) {
	withQ4Kernels(t, func(t *testing.T) { withImpl(t, testGemmQ4BF16) })
}

func testGemmQ4BF16(t *testing.T, im *impl) {
	r := rand.New(rand.NewPCG(4, 5))
	pairsSeen := false
	eachQ4Case(r, append(q4Shapes, struct{ m, n, k int }{67, 70, 1100}, struct{ m, n, k int }{3, 70, 1088}), func(c q4Case) {
		h := make([]BF16, len(c.w))
		F32ToBF16(h, c.w)
		qb := *c.q
		qb.BF16 = true
		if c.gemv() && c.transB && q4DotBF16 != nil && c.k%Q4Block == 0 {
			pairsSeen = true
			wr := make([]float32, len(h))
			BF16ToF32(wr, h)
			g := gemmCase{transB: true, acc: c.acc, m: c.m, n: c.n, k: c.k, roundA: true}
			checkGemmCase(t, g, r, wr, func(a []float32, lda int, out []float32) {
				GemmQ4(true, c.m, c.n, c.k, a, lda, &qb, out, c.n, c.acc)
			})
			return
		}
		c.compare(t, r, "want", func(a []float32, lda int, out []float32, ldc int) {
			GemmQ4(c.transB, c.m, c.n, c.k, a, lda, &qb, out, ldc, c.acc)
		}, func(a []float32, lda int, out []float32, ldc int) {
			if c.gemv() {
				GemmQ4(c.transB, c.m, c.n, c.k, a, lda, c.q, out, ldc, c.acc)
			} else {
				GemmBF16(c.transB, c.m, c.n, c.k, a, lda, h, c.bc, out, ldc, c.acc)
			}
		})
	})
	if q4DotBF16 != nil && !pairsSeen {
		t.Error("no case took the bf16 GEMV")
	}
}

// q4Case is one GemmQ4 product under test: a shape, a layout, accumulate
// or not, and a random B with its dequantized values (bc columns).
type q4Case struct {
	m, n, k     int
	transB, acc bool
	q           *Q4
	w           []float32
	bc          int
}

// eachQ4Case runs fn for every shape in both layouts, with and without
// accumulate.
func eachQ4Case(r *rand.Rand, shapes []struct{ m, n, k int }, fn func(q4Case)) {
	for _, s := range shapes {
		for _, transB := range []bool{true, false} {
			for _, acc := range []bool{false, true} {
				br, bc := s.k, s.n
				if transB {
					br, bc = s.n, s.k
				}
				q, w := randQ4(r, br, bc)
				fn(q4Case{m: s.m, n: s.n, k: s.k, transB: transB, acc: acc, q: q, w: w, bc: bc})
			}
		}
	}
}

// gemv reports whether the product takes GemmQ4's few-row paths.
func (c q4Case) gemv() bool { return c.m <= q4GemvRows || c.transB && c.m <= RowInvariantRows }

// compare runs got and want on the same A and C (padded leading
// dimensions) and fails at the first element whose bits differ.
func (c q4Case) compare(t *testing.T, r *rand.Rand, wantName string, got, want func(a []float32, lda int, out []float32, ldc int)) {
	t.Helper()
	lda, ldc := c.k+3, c.n+5
	a := randSlice(r, c.m*lda)
	c1 := randSlice(r, c.m*ldc)
	c2 := append([]float32(nil), c1...)
	got(a, lda, c1, ldc)
	want(a, lda, c2, ldc)
	for i := range c1 {
		if math.Float32bits(c1[i]) != math.Float32bits(c2[i]) {
			t.Fatalf("m=%d n=%d k=%d transB=%v acc=%v: C[%d] = %g, %s gives %g", c.m, c.n, c.k, c.transB, c.acc, i, c1[i], wantName, c2[i])
		}
	}
}

// withQ4Kernels runs fn with the assembly 4-bit kernels (where this CPU
// has them) and with the portable Go loops that other CPUs run.
func withQ4Kernels(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	dot, dec, dotH := q4Dot, q4DecodeChunks, q4DotBF16
	defer func() { q4Dot, q4DecodeChunks, q4DotBF16 = dot, dec, dotH }()
	for _, asm := range []bool{true, false} {
		if asm && dot == nil && dec == nil {
			continue
		}
		q4Dot, q4DecodeChunks, q4DotBF16 = dot, dec, dotH
		if !asm {
			q4Dot, q4DecodeChunks, q4DotBF16 = nil, nil, nil
		}
		t.Run(map[bool]string{true: "asm", false: "go"}[asm], fn)
	}
}

// TestGemmQ4GradFD: the backward to the activations, dx = dy·W through
// GemmQ4, matches central finite differences of L(x) = Σ dy ⊙ (x·Wᵀ) with
// the forward through GemmQ4 (L is linear in x, so the differences are
// exact up to float32 rounding of the forward).
func TestGemmQ4GradFD(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 7))
	for _, s := range []struct{ m, in, out int }{{1, 130, 70}, {6, 67, 33}} {
		q, _ := randQ4(r, s.out, s.in)
		x := randSlice(r, s.m*s.in)
		dy := randSlice(r, s.m*s.out)
		dx := make([]float32, s.m*s.in)
		GemmQ4(false, s.m, s.in, s.out, dy, s.out, q, dx, s.in, false)
		loss := func(x []float32) float64 {
			y := make([]float32, s.m*s.out)
			GemmQ4(true, s.m, s.out, s.in, x, s.in, q, y, s.out, false)
			var l float64
			for i := range y {
				l += float64(dy[i]) * float64(y[i])
			}
			return l
		}
		const h = 0.5
		for _, i := range []int{0, 1, s.in - 1, s.m*s.in - 1, s.m * s.in / 2} {
			xp := append([]float32(nil), x...)
			xm := append([]float32(nil), x...)
			xp[i] += h
			xm[i] -= h
			fd := (loss(xp) - loss(xm)) / (2 * h)
			if d := math.Abs(fd - float64(dx[i])); d > 1e-4*(1+math.Abs(fd)) {
				t.Errorf("%v: dx[%d] = %g, finite difference %g", s, i, dx[i], fd)
			}
		}
	}
}

// BenchmarkGemmQ4 compares, in one run, the NF4 kernels with Gemm (float32
// weights) and GemmBF16 (bf16 weights) on the forward of one Linear layer
// of stories110M and tinyllama-1.1B, decoding (M=1) and a batch of tokens;
// "dx" is the backward to the input. Ratios between sub-benchmarks of one
// run are what to read.
func BenchmarkGemmQ4(b *testing.B) {
	shapes := []benchShape{
		{"stories110M", "gateup", 768, 2048},
		{"tinyllama", "qo", 2048, 2048},
		{"tinyllama", "gateup", 2048, 5632},
		{"tinyllama", "down", 5632, 2048},
	}
	r := rand.New(rand.NewPCG(8, 9))
	for _, s := range shapes {
		q, w := randQ4(r, s.out, s.in)
		h := make([]BF16, len(w))
		F32ToBF16(h, w)
		for _, t := range []int{1, 128} {
			for _, layout := range []string{"fwd", "dx"} {
				if layout == "dx" && t == 1 {
					continue
				}
				x := randSlice(r, t*max(s.in, s.out))
				y := make([]float32, t*max(s.in, s.out))
				m, n, k, transB := t, s.out, s.in, true
				if layout == "dx" {
					n, k, transB = s.in, s.out, false
				}
				name := fmt.Sprintf("%s/%s/M=%d/%s", s.model, s.layer, t, layout)
				bytesOf := map[string]int64{"nf4": int64(len(q.Packed) + 4*len(q.Scales)), "nf4bf16": int64(len(q.Packed) + 4*len(q.Scales)), "f32": int64(4 * len(w)), "bf16": int64(2 * len(w))}
				run := func(kind string, f func()) {
					b.Run(name+"/"+kind, func(b *testing.B) {
						b.SetBytes(bytesOf[kind])
						for b.Loop() {
							f()
						}
						b.ReportMetric(2*float64(m*n*k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
					})
				}
				qb := *q
				qb.BF16 = true
				run("nf4", func() { GemmQ4(transB, m, n, k, x, k, q, y, n, false) })
				run("nf4bf16", func() { GemmQ4(transB, m, n, k, x, k, &qb, y, n, false) })
				run("f32", func() { Gemm(false, transB, m, n, k, x, k, w, map[bool]int{true: k, false: n}[transB], y, n, false) })
				run("bf16", func() { GemmBF16(transB, m, n, k, x, k, h, map[bool]int{true: k, false: n}[transB], y, n, false) })
			}
		}
	}
}
