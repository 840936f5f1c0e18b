package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// AVX512_BF16 kernels. Neither the Go assembler nor avo knows VDPBF16PS or
// VCVTNE2PS2BF16, so they are written as BYTE lines by the small EVEX
// encoder below. The encoding needs the register numbers, so these kernels
// use physical registers only (avo allocates nothing in them).
//
// VDPBF16PS zmm1, zmm2, zmm3/m512/m32bcst is EVEX.512.F3.0F38.W0 52 /r:
// for each of the 16 float32 lanes, zmm1 += zmm2.bf16[2i+1]·zmm3.bf16[2i+1]
// + zmm2.bf16[2i]·zmm3.bf16[2i] (products exact; denormal inputs and
// outputs flushed to zero; round to nearest even).
//
// VCVTNE2PS2BF16 zmm1, zmm2, zmm3/m512 is EVEX.512.F2.0F38.W0 72 /r: the 32
// words of zmm1 are the 16 floats of zmm3 (low half) then the 16 of zmm2
// (high half), each rounded to bf16 (nearest even, denormals flushed).

// evex encodes an EVEX instruction of opcode map 0F38 with W0, no masking,
// 512-bit vectors: op zmm(d), zmm(v), rm, where rm is a zmm register or a
// memory operand [base+disp] (base a GP register, no index). With bcst the
// memory operand is one dword broadcast to 16 lanes ({1to16}).
//
// Layout: 62 P0 P1 P2 opcode ModRM [disp8|disp32], with
//
//	P0 = R̄ X̄ B̄ R̄' 0 0 m m  (mm = 10: map 0F38; R,R' extend ModRM.reg; B,X
//	                         extend ModRM.rm: register bits 3 and 4, or the
//	                         base register's bit 3 and no index)
//	P1 = W v̄ v̄ v̄ v̄ 1 p p   (W = 0; vvvv is the second operand, inverted;
//	                         pp: 10 = F3, 11 = F2)
//	P2 = z L' L b V̄' a a a  (L'L = 10: 512 bits; b: broadcast; V' extends
//	                         vvvv; aaa = 000: no mask)
//
// A memory displacement is compressed (disp8·N) when it fits: N = 4 with a
// dword broadcast, else 64 (the full vector); otherwise it takes 32 bits.
func evex(pp, opcode byte, d, v reg.Physical, rm Op, bcst bool) []byte {
	di, vi := int(d.PhysicalIndex()), int(v.PhysicalIndex())
	p0 := byte(0x02)
	if di&8 == 0 {
		p0 |= 0x80
	}
	if di&16 == 0 {
		p0 |= 0x10
	}
	p1 := byte((^vi&15)<<3) | 0x04 | pp
	p2 := byte(0x40)
	if vi&16 == 0 {
		p2 |= 0x08
	}
	var modrm byte
	var tail []byte
	switch x := rm.(type) {
	case reg.Physical:
		ri := int(x.PhysicalIndex())
		if ri&16 == 0 {
			p0 |= 0x40
		}
		if ri&8 == 0 {
			p0 |= 0x20
		}
		modrm = 0xC0 | byte(di&7)<<3 | byte(ri&7)
	case Mem:
		base, ok := x.Base.(reg.Physical)
		if !ok || x.Index != nil || x.Symbol.Name != "" {
			panic("evex: memory operand must be [base+disp] with a physical base")
		}
		bi := int(base.PhysicalIndex())
		if bi&7 == 4 { // RSP and R12 need a SIB byte; not supported
			panic("evex: base register needs SIB")
		}
		p0 |= 0x40 // no index
		if bi&8 == 0 {
			p0 |= 0x20
		}
		if bcst {
			p2 |= 0x10
		}
		n := 64
		if bcst {
			n = 4
		}
		mod := byte(0)
		switch {
		case x.Disp == 0 && bi&7 != 5: // RBP/R13 with mod 00 means RIP-relative
		case x.Disp%n == 0 && x.Disp/n >= -128 && x.Disp/n <= 127:
			mod = 1
			tail = []byte{byte(int8(x.Disp / n))}
		default:
			mod = 2
			u := uint32(int32(x.Disp))
			tail = []byte{byte(u), byte(u >> 8), byte(u >> 16), byte(u >> 24)}
		}
		modrm = mod<<6 | byte(di&7)<<3 | byte(bi&7)
	default:
		panic("evex: bad operand")
	}
	return append([]byte{0x62, p0, p1, p2, opcode, modrm}, tail...)
}

// rawInst emits an instruction as BYTE lines preceded by a comment with its
// assembly, declaring its register inputs and outputs for avo's liveness
// analysis and its ISA for the function's "Requires" line.
func rawInst(asm string, in, out []Op, code []byte) {
	rawInstISA(asm, []string{"AVX512_BF16"}, in, out, code)
}

// rawInstISA is rawInst with the instruction's ISA list given.
func rawInstISA(asm string, isa []string, in, out []Op, code []byte) {
	Comment(asm)
	for i, b := range code {
		inst := &ir.Instruction{Opcode: "BYTE", Operands: []Op{U8(b)}}
		if i == 0 {
			inst.Inputs, inst.Outputs, inst.ISA = in, out, isa
		}
		Instruction(inst)
	}
}

func opAsm(o Op, bcst bool) string {
	if bcst {
		return o.Asm() + ".BCST"
	}
	return o.Asm()
}

// VDPBF16PS emits acc += pairs(a)·pairs(b): a a zmm register, b a zmm
// register or memory ([base+disp], or one broadcast dword with bcst).
// Operands in Go order (sources first, destination last).
func vdpbf16ps(b Op, a, acc reg.VecPhysical, bcst bool) {
	in := []Op{a, acc}
	if r, ok := b.(reg.Register); ok {
		in = append(in, r)
	} else {
		in = append(in, b.(Mem).Base)
	}
	rawInst(fmt.Sprintf("VDPBF16PS %s, %s, %s", opAsm(b, bcst), a.Asm(), acc.Asm()),
		in, []Op{acc}, evex(0x02, 0x52, acc, a, b, bcst))
}

// VCVTNE2PS2BF16 emits dst = bf16(hi):bf16(lo): the 16 floats of lo round
// to words 0-15 of dst, those of hi to words 16-31. Go operand order.
func vcvtne2ps2bf16(lo, hi, dst reg.VecPhysical) {
	rawInst(fmt.Sprintf("VCVTNE2PS2BF16 %s, %s, %s", lo.Asm(), hi.Asm(), dst.Asm()),
		[]Op{lo, hi}, []Op{dst}, evex(0x03, 0x72, dst, hi, lo, false))
}

var zmms = []reg.VecPhysical{
	reg.Z0, reg.Z1, reg.Z2, reg.Z3, reg.Z4, reg.Z5, reg.Z6, reg.Z7,
	reg.Z8, reg.Z9, reg.Z10, reg.Z11, reg.Z12, reg.Z13, reg.Z14, reg.Z15,
	reg.Z16, reg.Z17, reg.Z18, reg.Z19, reg.Z20, reg.Z21, reg.Z22, reg.Z23,
	reg.Z24, reg.Z25, reg.Z26, reg.Z27, reg.Z28, reg.Z29, reg.Z30, reg.Z31,
}

func zmm(i int) reg.VecPhysical { return zmms[i] }

// microBF16 writes the mr×32 bf16 micro-kernel: kp k-pairs of a packed A
// sliver (mr dwords per pair: two bf16 of one row) and a packed B panel (32
// dwords per pair: two bf16 of one column). Accumulators Z0..Z(2mr-1), the
// two B vectors Z30, Z31; each A pair is a broadcast memory operand.
func microBF16(mr int) {
	const nr = 32
	name := fmt.Sprintf("micro%dx%dBF16", mr, nr)
	TEXT(name, NOSPLIT, "func(kp int, a, b *float32, c *float32, ldc int, accumulate bool)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s sets (or adds to) the %d×%d tile at c the product of a packed bf16-pair A sliver and B panel over kp ≥ 1 k pairs.", name, mr, nr))
	kp, pa, pb, pc, ldc, t := reg.RCX, reg.RSI, reg.RDI, reg.RDX, reg.RBX, reg.R8
	Load(Param("kp"), kp)
	Load(Param("a"), pa)
	Load(Param("b"), pb)
	Load(Param("c"), pc)
	Load(Param("ldc"), ldc)
	SHLQ(U8(2), ldc)
	MOVQ(pc, t)
	for i := 0; i < mr; i++ {
		PREFETCHT0(Mem{Base: t})
		PREFETCHT0(Mem{Base: t, Disp: nr*4 - 4})
		ADDQ(ldc, t)
	}
	acc := func(i, j int) reg.VecPhysical { return zmm(2*i + j) }
	for i := 0; i < mr; i++ {
		for j := 0; j < 2; j++ {
			VXORPS(acc(i, j), acc(i, j), acc(i, j))
		}
	}
	bv := []reg.VecPhysical{reg.Z30, reg.Z31}
	Label(name + "_loop")
	PREFETCHT0(Mem{Base: pa, Disp: 4 * mr * prefetchSteps})
	PREFETCHT0(Mem{Base: pb, Disp: 4 * nr * prefetchSteps})
	PREFETCHT0(Mem{Base: pb, Disp: 4*nr*prefetchSteps + 64})
	for j := range bv {
		VMOVUPS(Mem{Base: pb, Disp: 64 * j}, bv[j])
	}
	for i := 0; i < mr; i++ {
		for j := range bv {
			vdpbf16ps(Mem{Base: pa, Disp: 4 * i}, bv[j], acc(i, j), true)
		}
	}
	ADDQ(U32(4*mr), pa)
	ADDQ(U32(4*nr), pb)
	DECQ(kp)
	JNZ(LabelRef(name + "_loop"))

	flag := reg.AL
	Load(Param("accumulate"), flag)
	TESTB(flag, flag)
	JZ(LabelRef(name + "_store"))
	for i := 0; i < mr; i++ {
		for j := 0; j < 2; j++ {
			VADDPS(Mem{Base: pc, Disp: 64 * j}, acc(i, j), acc(i, j))
			VMOVUPS(acc(i, j), Mem{Base: pc, Disp: 64 * j})
		}
		ADDQ(ldc, pc)
	}
	VZEROUPPER()
	RET()
	Label(name + "_store")
	for i := 0; i < mr; i++ {
		for j := 0; j < 2; j++ {
			VMOVUPS(acc(i, j), Mem{Base: pc, Disp: 64 * j})
		}
		ADDQ(ldc, pc)
	}
	VZEROUPPER()
	RET()
}

// dot4BF16 writes the GEMV dot kernel for bf16 x and bf16 rows of w: y[r] =
// Σ_p x[p]·w[r·ldw+p] over k (a multiple of 32), by VDPBF16PS with the rows
// as memory operands. Like dot4, it prefetches the four rows after these.
func dot4BF16() {
	name := "dot4BF16"
	TEXT(name, NOSPLIT, "func(k int, x *uint16, w *uint16, ldw int, y *[4]float32)")
	Pragma("noescape")
	Doc(name + " sets y[r] to the dot product of bf16 x and row r of w, over k a multiple of 32.")
	k, px, ldw, ahead, py := reg.RCX, reg.RSI, reg.RBX, reg.R11, reg.RDX
	w := []reg.Physical{reg.RDI, reg.R8, reg.R9, reg.R10}
	Load(Param("k"), k)
	Load(Param("x"), px)
	Load(Param("ldw"), ldw)
	SHLQ(U8(1), ldw)
	Load(Param("w"), w[0])
	for r := 1; r < 4; r++ {
		LEAQ(Mem{Base: w[r-1], Index: ldw, Scale: 1}, w[r])
	}
	LEAQ(Mem{Base: ldw, Index: ldw, Scale: 1}, ahead)
	SHLQ(U8(1), ahead)
	acc := func(r, u int) reg.VecPhysical { return zmm(2*r + u) }
	xv := []reg.VecPhysical{reg.Z8, reg.Z9}
	for r := 0; r < 4; r++ {
		for u := 0; u < 2; u++ {
			VXORPS(acc(r, u), acc(r, u), acc(r, u))
		}
	}
	step := func(u int) {
		VMOVUPS(Mem{Base: px, Disp: 64 * u}, xv[u])
		for r := 0; r < 4; r++ {
			vdpbf16ps(Mem{Base: w[r], Disp: 64 * u}, xv[u], acc(r, u), false)
		}
	}
	Label(name + "_loop2")
	CMPQ(k, U32(64))
	JL(LabelRef(name + "_one"))
	for r := 0; r < 4; r++ {
		for off := 0; off < 128; off += 64 {
			PREFETCHT0(Mem{Base: w[r], Index: ahead, Scale: 1, Disp: off})
		}
	}
	step(0)
	step(1)
	ADDQ(U32(128), px)
	for r := 0; r < 4; r++ {
		ADDQ(U32(128), w[r])
	}
	SUBQ(U32(64), k)
	JMP(LabelRef(name + "_loop2"))
	Label(name + "_one")
	CMPQ(k, U32(32))
	JL(LabelRef(name + "_reduce"))
	step(0)
	Label(name + "_reduce")
	Load(Param("y"), py)
	for r := 0; r < 4; r++ {
		a := acc(r, 0)
		VADDPS(acc(r, 1), a, a)
		// The same pairwise order as hsum.
		ay, ax := a.AsY(), a.AsX()
		VEXTRACTF64X4(U8(1), a, reg.Y10)
		VADDPS(reg.Y10, ay, ay)
		VEXTRACTF128(U8(1), ay, reg.X11)
		VADDPS(reg.X11, ax, ax)
		VHADDPS(ax, ax, ax)
		VHADDPS(ax, ax, ax)
		VMOVSS(ax, Mem{Base: py, Disp: 4 * r})
	}
	VZEROUPPER()
	RET()
}

// cvtBF16 writes the float32 → bf16 rounding loop (n a multiple of 32) used
// to pack activations for the bf16 kernels.
func cvtBF16() {
	name := "cvtBF16"
	TEXT(name, NOSPLIT, "func(n int, src *float32, dst *uint16)")
	Pragma("noescape")
	Doc(name + " rounds n float32s (a multiple of 32) to bf16, nearest even, denormals flushed to zero.")
	n, src, dst := reg.RCX, reg.RSI, reg.RDI
	Load(Param("n"), n)
	Load(Param("src"), src)
	Load(Param("dst"), dst)
	Label(name + "_loop")
	VMOVUPS(Mem{Base: src}, reg.Z0)
	VMOVUPS(Mem{Base: src, Disp: 64}, reg.Z1)
	vcvtne2ps2bf16(reg.Z0, reg.Z1, reg.Z2)
	VMOVUPS(reg.Z2, Mem{Base: dst})
	ADDQ(U32(128), src)
	ADDQ(U32(64), dst)
	SUBQ(U32(32), n)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}

// pairRowsH32 writes the packing of a stored-k×n bf16 B for the bf16
// kernels: for each of kp row pairs (p, p+1), 32 dwords b[p][j] | b[p+1][j]<<16.
func pairRowsH32() {
	name := "pairRowsH32"
	TEXT(name, NOSPLIT, "func(kp int, src *uint16, ld int, dst *float32)")
	Pragma("noescape")
	Doc(name + " interleaves kp pairs of rows of 32 bf16 values (stride ld) into a packed bf16-pair panel (kp ≥ 1).")
	kp := Load(Param("kp"), GP64())
	src := Load(Param("src"), GP64())
	ld := Load(Param("ld"), GP64())
	dst := Load(Param("dst"), GP64())
	SHLQ(U8(1), ld)
	Label(name + "_loop")
	for h := 0; h < 2; h++ {
		lo, hi := ZMM(), ZMM()
		VPMOVZXWD(Mem{Base: src, Disp: 32 * h}, lo)
		VPMOVZXWD(Mem{Base: src, Index: ld, Scale: 1, Disp: 32 * h}, hi)
		VPSLLD(U8(16), hi, hi)
		VPORD(hi, lo, lo)
		VMOVUPS(lo, Mem{Base: dst, Disp: 64 * h})
	}
	LEAQ(Mem{Base: src, Index: ld, Scale: 2}, src)
	ADDQ(U32(128), dst)
	DECQ(kp)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}

// peakBF16 writes fmaPeak's loop with VDPBF16PS: 24 independent chains of
// 16 lanes × 2 products.
func peakBF16() {
	const chains = 24
	name := "fmaPeakBF16"
	TEXT(name, NOSPLIT, "func(n int)")
	Pragma("noescape")
	Doc(fmt.Sprintf("%s runs n×%d independent VDPBF16PS (%d flops each iteration).", name, chains, 2*2*16*chains))
	n := reg.RCX
	Load(Param("n"), n)
	for i := 0; i < chains; i++ {
		VXORPS(zmm(i), zmm(i), zmm(i))
	}
	VXORPS(reg.Z30, reg.Z30, reg.Z30)
	Label(name + "_loop")
	for i := 0; i < chains; i++ {
		vdpbf16ps(reg.Z30, reg.Z30, zmm(i), false)
	}
	DECQ(n)
	JNZ(LabelRef(name + "_loop"))
	VZEROUPPER()
	RET()
}
