// Command asmgen writes gopeft's amd64 GEMM and GEMV kernels (Go assembly)
// with avo. Run it through `go generate ./tensor/kernels`.
//
// Every kernel comes in an AVX-512 and an AVX2+FMA flavour from the same
// generator function, parameterised by vector width.
package main

import (
	"fmt"
	"math/bits"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// isa is one vector instruction set: its name, lanes per vector and a
// constructor for virtual vector registers.
type isa struct {
	name  string
	lanes int
	vec   func() reg.VecVirtual
}

// prefetchSteps is how many k steps ahead the micro-kernels prefetch.
const prefetchSteps = 16

func (v isa) bytes() int { return 4 * v.lanes }

var (
	avx512 = isa{"AVX512", 16, ZMM}
	avx2   = isa{"AVX2", 8, YMM}
)

func main() {
	ConstraintExpr("amd64,!purego")
	micro(avx512, 12, 2, 12)
	micro(avx2, 6, 2, 6)
	// Edge slivers of 4 and 8 rows, reading the first rows of 12-row
	// packed A slivers.
	micro(avx512, 4, 2, 12)
	micro(avx512, 8, 2, 12)
	for _, v := range []isa{avx512, avx2} {
		dot4(v, false)
		dot4(v, true)
		axpy(v, false)
		axpy(v, true)
	}
	// Three rows of x against four rows of w: dot4's arithmetic for each
	// (24 accumulators: AVX-512 only).
	dot4x(avx512, 3, false)
	dot4x(avx512, 3, true)
	for _, w := range []int{32, 16, 12, 6} {
		copyRows(w)
	}
	for _, w := range []int{32, 16} {
		copyRowsH(w)
	}
	transpose8(tF32)
	transpose8(tWiden)
	fmaPeak(avx512, 24)
	fmaPeak(avx2, 12)
	// AVX512_BF16 kernels (bf16.go).
	microBF16(12)
	dot4BF16()
	cvtBF16()
	transpose8(tPairs)
	pairRowsH32()
	peakBF16()
	// AMX kernels (amx.go).
	microAMX()
	// 4-bit kernels (q4.go).
	q4Dot()
	q4Decode()
	q4DotBF16()
	Generate()
}

// micro writes the mr×(nv·lanes) GEMM micro-kernel: acc[i][j] are mr×nv
// accumulator vectors; each k step loads nv vectors of the packed B panel,
// broadcasts mr values of the packed A sliver (as slots per k, as ≥ mr: the
// first mr rows of a wider sliver) and issues mr·nv FMAs.
func micro(v isa, mr, nv, as int) {
	nr := nv * v.lanes
	name := fmt.Sprintf("micro%dx%d%s", mr, nr, v.name)
	if as != mr {
		name = fmt.Sprintf("micro%dx%d%sA%d", mr, nr, v.name, as)
	}
	TEXT(name, NOSPLIT, "func(kc int, a, b, c *float32, ldc int, accumulate bool)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets (or adds to) the %d×%d tile at c the product of a packed A sliver (%d slots per k) and a packed B panel (kc ≥ 1).", name, mr, nr, as))
	kc := Load(Param("kc"), GP64())
	pa := Load(Param("a"), GP64())
	pb := Load(Param("b"), GP64())
	// Bring this call's C tile into L1 now (the previous call brought it to
	// L2): its rows are a stride apart and would otherwise miss, one by
	// one, after the loop.
	pc := Load(Param("c"), GP64())
	ldcb := Load(Param("ldc"), GP64())
	SHLQ(U8(2), ldcb)
	next := GP64()
	MOVQ(pc, next)
	for i := 0; i < mr; i++ {
		prefetchCRow(PREFETCHT0, pc, nr)
		ADDQ(ldcb, pc)
	}
	acc := make([][]reg.VecVirtual, mr)
	for i := range acc {
		acc[i] = make([]reg.VecVirtual, nv)
		for j := range acc[i] {
			acc[i][j] = v.vec()
			VXORPS(acc[i][j], acc[i][j], acc[i][j])
		}
	}
	// The k loop runs microUnroll steps at a time. Each round also brings
	// one row of the next tile into L2: the driver walks a row sliver, so
	// that is the tile nr columns on, on the same rows (a task of only a
	// few panels walks a column instead; the guess is then wasted, not
	// harmful). Spread out like
	// this, its misses to memory never crowd out the refills of A and B as
	// a burst of them would.
	ADDQ(U32(4*nr), next)
	rows := GP64()
	MOVQ(U32(mr), rows)
	Label(name + "_loop")
	CMPQ(kc, U8(microUnroll))
	JL(LabelRef(name + "_tail"))
	TESTQ(rows, rows)
	JZ(LabelRef(name + "_steps"))
	prefetchCRow(PREFETCHT1, next, nr)
	ADDQ(ldcb, next)
	DECQ(rows)
	Label(name + "_steps")
	// Software prefetch a few k steps ahead: B panels stream from L2, and
	// so does A on the first call of a sliver.
	for off := 0; off < 4*as*microUnroll; off += 64 {
		PREFETCHT0(Mem{Base: pa, Disp: 4*as*prefetchSteps + off})
	}
	for off := 0; off < 4*nr*microUnroll; off += 64 {
		PREFETCHT0(Mem{Base: pb, Disp: 4*nr*prefetchSteps + off})
	}
	for s := 0; s < microUnroll; s++ {
		microStep(v, mr, nv, as, pa, pb, acc, s)
	}
	ADDQ(U32(4*as*microUnroll), pa)
	ADDQ(U32(4*nr*microUnroll), pb)
	SUBQ(U8(microUnroll), kc)
	JMP(LabelRef(name + "_loop"))
	Label(name + "_tail")
	TESTQ(kc, kc)
	JZ(LabelRef(name + "_done"))
	Label(name + "_one")
	microStep(v, mr, nv, as, pa, pb, acc, 0)
	ADDQ(U32(4*as), pa)
	ADDQ(U32(4*nr), pb)
	DECQ(kc)
	JNZ(LabelRef(name + "_one"))
	Label(name + "_done")

	pc = Load(Param("c"), GP64())
	flag := Load(Param("accumulate"), GP8())
	TESTB(flag, flag)
	JZ(LabelRef(name + "_store"))
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			VADDPS(Mem{Base: pc, Disp: j * v.bytes()}, acc[i][j], acc[i][j])
			VMOVUPS(acc[i][j], Mem{Base: pc, Disp: j * v.bytes()})
		}
		ADDQ(ldcb, pc)
	}
	VZEROUPPER()
	RET()
	Label(name + "_store")
	for i := 0; i < mr; i++ {
		for j := 0; j < nv; j++ {
			VMOVUPS(acc[i][j], Mem{Base: pc, Disp: j * v.bytes()})
		}
		ADDQ(ldcb, pc)
	}
	VZEROUPPER()
	RET()
}

// microUnroll is how many k steps one round of the micro-kernel loop runs.
const microUnroll = 8

// microStep issues k step s (counted from pa, pb) of the micro-kernel.
func microStep(v isa, mr, nv, as int, pa, pb reg.Register, acc [][]reg.VecVirtual, s int) {
	nr := nv * v.lanes
	bv := make([]reg.VecVirtual, nv)
	for j := range bv {
		bv[j] = v.vec()
		VMOVUPS(Mem{Base: pb, Disp: s*4*nr + j*v.bytes()}, bv[j])
	}
	for i := 0; i < mr; i++ {
		t := v.vec()
		VBROADCASTSS(Mem{Base: pa, Disp: s*4*as + 4*i}, t)
		for j := 0; j < nv; j++ {
			VFMADD231PS(bv[j], t, acc[i][j])
		}
	}
}

// prefetchCRow prefetches the nr float32s of one C row at p: its first
// and last byte, two lines for the 128-byte rows of the AVX-512 tiles.
func prefetchCRow(pf func(Op), p reg.Register, nr int) {
	pf(Mem{Base: p})
	if nr*4 > 64 {
		pf(Mem{Base: p, Disp: nr*4 - 4})
	}
}

// loadB loads lanes values of B at m into dst, widening bf16 (the high half
// of a float32) when half is set.
func loadB(v isa, half bool, m Mem, dst reg.VecVirtual) {
	if !half {
		VMOVUPS(m, dst)
		return
	}
	VPMOVZXWD(m, dst)
	VPSLLD(U8(16), dst, dst)
}

// dot4 writes y[r] = Σ_p x[p]·w[r·ldw+p] for four rows, p < k rounded down
// to a whole vector; the caller adds the remaining products.
func dot4(v isa, half bool) {
	name := "dot4" + v.name
	sig := "func(k int, x, w *float32, ldw int, y *[4]float32)"
	es := 4
	if half {
		name = "dot4h" + v.name
		sig = "func(k int, x *float32, w *uint16, ldw int, y *[4]float32)"
		es = 2
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets y[r] to the dot product of x and row r of w, over k rounded down to %d.", name, v.lanes))
	k := Load(Param("k"), GP64())
	px := Load(Param("x"), GP64())
	ldw := Load(Param("ldw"), GP64())
	if half {
		SHLQ(U8(1), ldw)
	} else {
		SHLQ(U8(2), ldw)
	}
	w := make([]reg.Register, 4)
	w[0] = Load(Param("w"), GP64())
	for r := 1; r < 4; r++ {
		w[r] = GP64()
		LEAQ(Mem{Base: w[r-1], Index: ldw, Scale: 1}, w[r])
	}
	// ahead is four rows on: the rows the next call will read, prefetched
	// while these are summed, since a decode step streams every weight
	// once from memory.
	ahead := GP64()
	LEAQ(Mem{Base: ldw, Index: ldw, Scale: 1}, ahead)
	SHLQ(U8(1), ahead)
	acc := make([][2]reg.VecVirtual, 4)
	for r := range acc {
		for u := 0; u < 2; u++ {
			acc[r][u] = v.vec()
			VXORPS(acc[r][u], acc[r][u], acc[r][u])
		}
	}
	step := func(u int) {
		x := v.vec()
		VMOVUPS(Mem{Base: px, Disp: u * v.bytes()}, x)
		for r := 0; r < 4; r++ {
			t := v.vec()
			loadB(v, half, Mem{Base: w[r], Disp: u * v.lanes * es}, t)
			VFMADD231PS(t, x, acc[r][u])
		}
	}
	Label(name + "_loop2")
	CMPQ(k, U32(2*v.lanes))
	JL(LabelRef(name + "_one"))
	for r := 0; r < 4; r++ {
		for off := 0; off < 2*v.lanes*es; off += 64 {
			PREFETCHT0(Mem{Base: w[r], Index: ahead, Scale: 1, Disp: off})
		}
	}
	step(0)
	step(1)
	ADDQ(U32(2*v.bytes()), px)
	for r := 0; r < 4; r++ {
		ADDQ(U32(2*v.lanes*es), w[r])
	}
	SUBQ(U32(2*v.lanes), k)
	JMP(LabelRef(name + "_loop2"))
	Label(name + "_one")
	CMPQ(k, U32(v.lanes))
	JL(LabelRef(name + "_reduce"))
	step(0)
	Label(name + "_reduce")
	py := Load(Param("y"), GP64())
	for r := 0; r < 4; r++ {
		VADDPS(acc[r][1], acc[r][0], acc[r][0])
		hsum(v, acc[r][0], Mem{Base: py, Disp: 4 * r})
	}
	VZEROUPPER()
	RET()
}

// dot4x writes y[i·4+r] = Σ_p x[i·ldx+p]·w[r·ldw+p] for nx rows of x and
// four rows of w, p < k rounded down to a whole vector: for every row of x
// exactly the arithmetic of dot4 (two accumulators per output, even and odd
// vectors of k, a last single vector into the even one, the same lane sum),
// so each output has dot4's bits while every vector of w, loaded once,
// serves nx rows.
func dot4x(v isa, nx int, half bool) {
	name := fmt.Sprintf("dot4x%d%s", nx, v.name)
	sig := fmt.Sprintf("func(k int, x *float32, ldx int, w *float32, ldw int, y *[%d]float32)", 4*nx)
	es := 4
	if half {
		name = fmt.Sprintf("dot4hx%d%s", nx, v.name)
		sig = fmt.Sprintf("func(k int, x *float32, ldx int, w *uint16, ldw int, y *[%d]float32)", 4*nx)
		es = 2
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets y[i*4+r] to the dot product of row i of x and row r of w, over k rounded down to %d, with dot4's arithmetic.", name, v.lanes))
	k := Load(Param("k"), GP64())
	ldx := Load(Param("ldx"), GP64())
	SHLQ(U8(2), ldx)
	px := make([]reg.Register, nx)
	px[0] = Load(Param("x"), GP64())
	for i := 1; i < nx; i++ {
		px[i] = GP64()
		LEAQ(Mem{Base: px[i-1], Index: ldx, Scale: 1}, px[i])
	}
	ldw := Load(Param("ldw"), GP64())
	if half {
		SHLQ(U8(1), ldw)
	} else {
		SHLQ(U8(2), ldw)
	}
	w := make([]reg.Register, 4)
	w[0] = Load(Param("w"), GP64())
	for r := 1; r < 4; r++ {
		w[r] = GP64()
		LEAQ(Mem{Base: w[r-1], Index: ldw, Scale: 1}, w[r])
	}
	acc := make([][][2]reg.VecVirtual, nx)
	for i := range acc {
		acc[i] = make([][2]reg.VecVirtual, 4)
		for r := range acc[i] {
			for u := 0; u < 2; u++ {
				acc[i][r][u] = v.vec()
				VXORPS(acc[i][r][u], acc[i][r][u], acc[i][r][u])
			}
		}
	}
	step := func(u int) {
		wv := make([]reg.VecVirtual, 4)
		for r := range wv {
			wv[r] = v.vec()
			loadB(v, half, Mem{Base: w[r], Disp: u * v.lanes * es}, wv[r])
		}
		for i := 0; i < nx; i++ {
			x := v.vec()
			VMOVUPS(Mem{Base: px[i], Disp: u * v.bytes()}, x)
			for r := 0; r < 4; r++ {
				VFMADD231PS(wv[r], x, acc[i][r][u])
			}
		}
	}
	Label(name + "_loop2")
	CMPQ(k, U32(2*v.lanes))
	JL(LabelRef(name + "_one"))
	step(0)
	step(1)
	for i := 0; i < nx; i++ {
		ADDQ(U32(2*v.bytes()), px[i])
	}
	for r := 0; r < 4; r++ {
		ADDQ(U32(2*v.lanes*es), w[r])
	}
	SUBQ(U32(2*v.lanes), k)
	JMP(LabelRef(name + "_loop2"))
	Label(name + "_one")
	CMPQ(k, U32(v.lanes))
	JL(LabelRef(name + "_reduce"))
	step(0)
	Label(name + "_reduce")
	py := Load(Param("y"), GP64())
	for i := 0; i < nx; i++ {
		for r := 0; r < 4; r++ {
			VADDPS(acc[i][r][1], acc[i][r][0], acc[i][r][0])
			hsumEVEX(acc[i][r][0], Mem{Base: py, Disp: 4 * (4*i + r)})
		}
	}
	VZEROUPPER()
	RET()
}

// hsum stores the sum of the lanes of x at m (a fixed pairwise order).
func hsum(v isa, x reg.VecVirtual, m Mem) {
	y := x.AsY()
	if v.lanes == 16 {
		hi := YMM()
		VEXTRACTF64X4(U8(1), x, hi)
		VADDPS(hi, y, y)
	}
	hx := XMM()
	VEXTRACTF128(U8(1), y, hx)
	xx := x.AsX()
	VADDPS(hx, xx, xx)
	VHADDPS(xx, xx, xx)
	VHADDPS(xx, xx, xx)
	VMOVSS(xx, m)
}

// hsumEVEX is hsum for an AVX-512 register of any number (VHADDPS and
// VEXTRACTF128 have no EVEX form, so cannot reach Z16-Z31): the same sums
// in the same pairs, as permutes and adds. hsum's two VHADDPS give lane 0
// (x0+x1)+(x2+x3); here s = x + [x1,x0,x3,x2] has s0 = x0+x1 and s2 = x2+x3,
// and s + [s2,s3,s0,s1] has lane 0 s0+s2 (IEEE addition commutes exactly).
func hsumEVEX(x reg.VecVirtual, m Mem) {
	y := x.AsY()
	hi := YMM()
	VEXTRACTF64X4(U8(1), x, hi)
	VADDPS(hi, y, y)
	hx := XMM()
	VEXTRACTF32X4(U8(1), y, hx)
	xx := x.AsX()
	VADDPS(hx, xx, xx)
	t := XMM()
	VPERMILPS(U8(0xB1), xx, t)
	VADDPS(t, xx, xx)
	VPERMILPS(U8(0x4E), xx, t)
	VADDPS(t, xx, xx)
	VMOVSS(xx, m)
}

// axpy writes y[j] += Σ_p x[p]·b[p·ldb+j] for j < w (a multiple of the
// vector width), one FMA per product in p order, so a column's bits do not
// depend on w. Four rows of b stream at a time, sequentially, while y stays
// in L1.
func axpy(v isa, half bool) {
	name := "axpy" + v.name
	sig := "func(k int, x, b *float32, ldb int, y *float32, w int)"
	es := 4
	if half {
		name = "axpyh" + v.name
		sig = "func(k int, x *float32, b *uint16, ldb int, y *float32, w int)"
		es = 2
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(fmt.Sprintf("%s adds to y[0:w] the sum over k rows of b scaled by x (w a multiple of %d).", name, v.lanes))
	k := Load(Param("k"), GP64())
	px := Load(Param("x"), GP64())
	pb := Load(Param("b"), GP64())
	ldb := Load(Param("ldb"), GP64())
	py := Load(Param("y"), GP64())
	w := Load(Param("w"), GP64())
	if half {
		SHLQ(U8(1), ldb)
	} else {
		SHLQ(U8(2), ldb)
	}
	ld3 := GP64()
	LEAQ(Mem{Base: ldb, Index: ldb, Scale: 2}, ld3)
	j, yj, bj := GP64(), GP64(), GP64()

	// rows emits the loop over column vectors for nrows rows starting at pb.
	rows := func(label string, nrows int) {
		xs := make([]reg.VecVirtual, nrows)
		for r := range xs {
			xs[r] = v.vec()
			VBROADCASTSS(Mem{Base: px, Disp: 4 * r}, xs[r])
		}
		MOVQ(py, yj)
		MOVQ(pb, bj)
		MOVQ(w, j)
		Label(label)
		acc := v.vec()
		VMOVUPS(Mem{Base: yj}, acc)
		src := []Mem{{Base: bj}, {Base: bj, Index: ldb, Scale: 1}, {Base: bj, Index: ldb, Scale: 2}, {Base: bj, Index: ld3, Scale: 1}}
		for r := 0; r < nrows; r++ {
			t := v.vec()
			loadB(v, half, src[r], t)
			VFMADD231PS(t, xs[r], acc)
		}
		VMOVUPS(acc, Mem{Base: yj})
		ADDQ(U32(v.bytes()), yj)
		ADDQ(U32(v.lanes*es), bj)
		SUBQ(U32(v.lanes), j)
		JNZ(LabelRef(label))
	}
	Label(name + "_four")
	CMPQ(k, U32(4))
	JL(LabelRef(name + "_one"))
	rows(name+"_four_cols", 4)
	ADDQ(U32(16), px)
	LEAQ(Mem{Base: pb, Index: ldb, Scale: 4}, pb)
	SUBQ(U32(4), k)
	JMP(LabelRef(name + "_four"))
	Label(name + "_one")
	TESTQ(k, k)
	JZ(LabelRef(name + "_done"))
	rows(name+"_one_cols", 1)
	ADDQ(U32(4), px)
	ADDQ(ldb, pb)
	DECQ(k)
	JMP(LabelRef(name + "_one"))
	Label(name + "_done")
	VZEROUPPER()
	RET()
}

// fmaPeak writes a loop of n iterations of chains independent FMAs on
// registers only: the machine's arithmetic ceiling.
func fmaPeak(v isa, chains int) {
	name := "fmaPeak" + v.name
	TEXT(name, NOSPLIT, "func(n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s runs n×%d independent %d-lane FMAs (%d flops each iteration).", name, chains, v.lanes, 2*chains*v.lanes))
	n := Load(Param("n"), GP64())
	acc := make([]reg.VecVirtual, chains)
	for i := range acc {
		acc[i] = v.vec()
		VXORPS(acc[i], acc[i], acc[i])
	}
	x := v.vec()
	VXORPS(x, x, x)
	Label(name + "_loop")
	for i := range acc {
		VFMADD231PS(x, x, acc[i])
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}

// Kinds of transpose8: float32, bf16 widened to float32, and bf16 pairs
// (each dword two adjacent bf16 of a row, moved as one 32-bit value).
const (
	tF32 = iota
	tWiden
	tPairs
)

// transpose8 writes the 8-row transpose used to pack a stored-n×k B: dst
// row p (stride ldd dwords) gets column p of the 8 rows of b (stride ldb
// elements), for p < kc (a multiple of 8). With tWiden b is bf16 and is
// widened; with tPairs b is bf16 and its columns are pairs of values (ldb
// still counts bf16 values). Needs AVX2 only (ymm), so every path shares it.
func transpose8(kind int) {
	name := "transpose8"
	sig := "func(kc int, b *float32, ldb int, dst *float32, ldd int)"
	es := 4
	half := kind == tWiden
	doc := fmt.Sprintf("%s stores the transpose of an 8×kc block of b at dst (kc a multiple of 8).", name)
	switch kind {
	case tWiden:
		name = "transpose8h"
		sig = "func(kc int, b *uint16, ldb int, dst *float32, ldd int)"
		es = 2
		doc = fmt.Sprintf("%s stores the transpose of an 8×kc block of b at dst (kc a multiple of 8).", name)
	case tPairs:
		name = "transpose8w"
		sig = "func(kp int, b *uint16, ldb int, dst *float32, ldd int)"
		doc = name + " stores the transpose of 8 rows × kp bf16 pairs of b (stride ldb bf16s) at dst as dwords (kp a multiple of 8)."
	}
	TEXT(name, NOSPLIT, sig)
	Pragma("noescape")
	Doc(doc)
	kcName := "kc"
	if kind == tPairs {
		kcName = "kp"
	}
	kc := Load(Param(kcName), GP64())
	b := Load(Param("b"), GP64())
	ldb := Load(Param("ldb"), GP64())
	d := Load(Param("dst"), GP64())
	ldd := Load(Param("ldd"), GP64())
	if kind != tF32 {
		SHLQ(U8(1), ldb)
	} else {
		SHLQ(U8(2), ldb)
	}
	SHLQ(U8(2), ldd)
	ld3, b4, ldd3, d4 := GP64(), GP64(), GP64(), GP64()
	LEAQ(Mem{Base: ldb, Index: ldb, Scale: 2}, ld3)
	LEAQ(Mem{Base: b, Index: ldb, Scale: 4}, b4)
	LEAQ(Mem{Base: ldd, Index: ldd, Scale: 2}, ldd3)
	step := GP64()
	MOVQ(ldd, step)
	SHLQ(U8(3), step)
	Label(name + "_loop")
	LEAQ(Mem{Base: d, Index: ldd, Scale: 4}, d4)
	src := []Mem{
		{Base: b}, {Base: b, Index: ldb, Scale: 1}, {Base: b, Index: ldb, Scale: 2}, {Base: b, Index: ld3, Scale: 1},
		{Base: b4}, {Base: b4, Index: ldb, Scale: 1}, {Base: b4, Index: ldb, Scale: 2}, {Base: b4, Index: ld3, Scale: 1},
	}
	r := make([]reg.VecVirtual, 8)
	for i := range r {
		r[i] = YMM()
		if half {
			VPMOVZXWD(src[i], r[i])
			VPSLLD(U8(16), r[i], r[i])
		} else {
			VMOVUPS(src[i], r[i])
		}
	}
	t := make([]reg.VecVirtual, 8)
	for i := 0; i < 8; i += 2 {
		t[i], t[i+1] = YMM(), YMM()
		VUNPCKLPS(r[i+1], r[i], t[i])
		VUNPCKHPS(r[i+1], r[i], t[i+1])
	}
	s := make([]reg.VecVirtual, 8)
	for _, q := range []int{0, 4} {
		for h := 0; h < 2; h++ { // t pairs (0,2) and (1,3) within each half
			lo, hi := t[q+h], t[q+h+2]
			s[q+2*h], s[q+2*h+1] = YMM(), YMM()
			VSHUFPS(U8(0x44), hi, lo, s[q+2*h])
			VSHUFPS(U8(0xEE), hi, lo, s[q+2*h+1])
		}
	}
	dst := []Mem{
		{Base: d}, {Base: d, Index: ldd, Scale: 1}, {Base: d, Index: ldd, Scale: 2}, {Base: d, Index: ldd3, Scale: 1},
		{Base: d4}, {Base: d4, Index: ldd, Scale: 1}, {Base: d4, Index: ldd, Scale: 2}, {Base: d4, Index: ldd3, Scale: 1},
	}
	for p := 0; p < 4; p++ {
		o := YMM()
		VPERM2F128(U8(0x20), s[4+p], s[p], o)
		VMOVUPS(o, dst[p])
		o2 := YMM()
		VPERM2F128(U8(0x31), s[4+p], s[p], o2)
		VMOVUPS(o2, dst[4+p])
	}
	ADDQ(U32(8*es), b)
	ADDQ(U32(8*es), b4)
	ADDQ(step, d)
	SUBQ(U32(8), kc)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}

// copyRows writes the packing copy for operands already in k-major order:
// kc rows of w float32s, from stride ld (elements) to stride w. It uses
// ymm, xmm and scalar moves only, so both paths share it.
func copyRows(w int) {
	name := fmt.Sprintf("copyRows%d", w)
	TEXT(name, NOSPLIT, "func(kc int, src *float32, ld int, dst *float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s copies kc rows of %d float32s from stride ld to a packed panel (kc ≥ 1).", name, w))
	kc := Load(Param("kc"), GP64())
	src := Load(Param("src"), GP64())
	ld := Load(Param("ld"), GP64())
	dst := Load(Param("dst"), GP64())
	SHLQ(U8(2), ld)
	ahead := prefetchRows(ld)
	Label(name + "_loop")
	prefetchRow(src, ahead, 4*w)
	for off := 0; off < w; {
		switch {
		case w-off >= 8:
			t := YMM()
			VMOVUPS(Mem{Base: src, Disp: 4 * off}, t)
			VMOVUPS(t, Mem{Base: dst, Disp: 4 * off})
			off += 8
		case w-off >= 4:
			t := XMM()
			VMOVUPS(Mem{Base: src, Disp: 4 * off}, t)
			VMOVUPS(t, Mem{Base: dst, Disp: 4 * off})
			off += 4
		case w-off >= 2:
			t := GP64()
			MOVQ(Mem{Base: src, Disp: 4 * off}, t)
			MOVQ(t, Mem{Base: dst, Disp: 4 * off})
			off += 2
		default:
			t := GP32()
			MOVL(Mem{Base: src, Disp: 4 * off}, t)
			MOVL(t, Mem{Base: dst, Disp: 4 * off})
			off++
		}
	}
	ADDQ(ld, src)
	ADDQ(U32(4*w), dst)
	DECQ(kc)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}

// copyAhead is how many rows ahead the packing copies prefetch: their
// source rows are a stride apart, a pattern the hardware prefetchers do not
// follow, so each row would otherwise miss.
const copyAhead = 16 // a power of two

// prefetchRows returns copyAhead rows of stride ld (bytes) in a register.
func prefetchRows(ld reg.Register) reg.Register {
	ahead := GP64()
	MOVQ(ld, ahead)
	SHLQ(U8(bits.TrailingZeros(copyAhead)), ahead)
	return ahead
}

// prefetchRow prefetches the n bytes at src+ahead: every cache line they
// touch when they start on a line (packed panels of 16 or 32 columns do),
// and at most two lines' worth otherwise (the first and the last byte).
func prefetchRow(src, ahead reg.Register, n int) {
	for off := 0; off < n; off += 64 {
		PREFETCHT0(Mem{Base: src, Index: ahead, Scale: 1, Disp: off})
	}
	if n%64 != 0 {
		PREFETCHT0(Mem{Base: src, Index: ahead, Scale: 1, Disp: n - 1})
	}
}

// copyRowsH is copyRows for a bf16 source (w a multiple of 8): each value is
// widened exactly to float32 on the way.
func copyRowsH(w int) {
	name := fmt.Sprintf("copyRowsH%d", w)
	TEXT(name, NOSPLIT, "func(kc int, src *uint16, ld int, dst *float32)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s widens kc rows of %d bf16 values from stride ld to a packed float32 panel (kc ≥ 1).", name, w))
	kc := Load(Param("kc"), GP64())
	src := Load(Param("src"), GP64())
	ld := Load(Param("ld"), GP64())
	dst := Load(Param("dst"), GP64())
	SHLQ(U8(1), ld)
	ahead := prefetchRows(ld)
	Label(name + "_loop")
	prefetchRow(src, ahead, 2*w)
	for off := 0; off < w; off += 8 {
		t := YMM()
		VPMOVZXWD(Mem{Base: src, Disp: 2 * off}, t)
		VPSLLD(U8(16), t, t)
		VMOVUPS(t, Mem{Base: dst, Disp: 4 * off})
	}
	ADDQ(ld, src)
	ADDQ(U32(4*w), dst)
	DECQ(kc)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}
