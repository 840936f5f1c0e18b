package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// 4-bit (NF4/FP4) kernels. A 4-bit code indexes a block's 16 values, and
// the 16 values fit one zmm register: VPERMPS with the codes as indices is
// the table lookup, 16 weights an instruction, and each looked-up value is
// Code[c]*scale computed by one VMULPS, the exact product dequantization
// gives. Byte i of the packed codes holds element 2i in its high nibble and
// 2i+1 in its low one.

// q4Dot writes q4DotAVX512: the dot product of x and nb whole 64-element
// blocks of 4-bit weights. x comes split by 32-element chunks into 16 even
// then 16 odd elements (kernels.splitEvenOdd), so the high nibbles of 16
// bytes (zero-extended to dwords, shifted right by 4) line up with the even
// half and the low nibbles (the dword minus the high nibble shifted back)
// with the odd half, with no shuffle of the weights. Four accumulators
// (two chunks × even/odd) are summed pairwise at the end.
func q4Dot() {
	TEXT("q4DotAVX512", NOSPLIT, "func(nb int, x *float32, p *byte, scales *float32, code *[16]float32) float32")
	Pragma("noescape")
	Doc("q4DotAVX512 returns the dot product of x (even/odd split by 32) and nb blocks of 64 4-bit weights.")
	nb := Load(Param("nb"), GP64())
	px := Load(Param("x"), GP64())
	pp := Load(Param("p"), GP64())
	ps := Load(Param("scales"), GP64())
	pc := Load(Param("code"), GP64())
	code := ZMM()
	VMOVUPS(Mem{Base: pc}, code)
	acc := make([]reg.VecVirtual, 4)
	for i := range acc {
		acc[i] = ZMM()
		VXORPS(acc[i], acc[i], acc[i])
	}
	Label("q4dot_loop")
	TESTQ(nb, nb)
	JZ(LabelRef("q4dot_done"))
	lut := ZMM()
	VBROADCASTSS(Mem{Base: ps}, lut)
	VMULPS(code, lut, lut)
	PREFETCHT0(Mem{Base: pp, Disp: 512})
	for h := 0; h < 2; h++ {
		t, hi, lo, w := ZMM(), ZMM(), ZMM(), ZMM()
		VPMOVZXBD(Mem{Base: pp, Disp: 16 * h}, t)
		VPSRLD(U8(4), t, hi)
		VPSLLD(U8(4), hi, lo)
		VPSUBD(lo, t, lo)
		VPERMPS(lut, hi, w)
		VFMADD231PS(Mem{Base: px, Disp: 128 * h}, w, acc[2*h])
		w2 := ZMM()
		VPERMPS(lut, lo, w2)
		VFMADD231PS(Mem{Base: px, Disp: 128*h + 64}, w2, acc[2*h+1])
	}
	ADDQ(U32(256), px)
	ADDQ(U32(32), pp)
	ADDQ(U32(4), ps)
	DECQ(nb)
	JMP(LabelRef("q4dot_loop"))
	Label("q4dot_done")
	VADDPS(acc[1], acc[0], acc[0])
	VADDPS(acc[3], acc[2], acc[2])
	VADDPS(acc[2], acc[0], acc[0])
	returnLaneSum(acc[0], ZMM())
	RET()
}

// returnLaneSum stores the sum of x's 16 lanes, in hsum's pairwise order,
// as the function's float32 result; tmp is a scratch vector register
// (physical in kernels that allocate none).
func returnLaneSum(x, tmp reg.Vec) {
	y, hi := x.AsY(), tmp.AsY()
	VEXTRACTF64X4(U8(1), x.AsZ(), hi)
	VADDPS(hi, y, y)
	xx, hx := x.AsX(), tmp.AsX()
	VEXTRACTF128(U8(1), y, hx)
	VADDPS(hx, xx, xx)
	VHADDPS(xx, xx, xx)
	VHADDPS(xx, xx, xx)
	VZEROUPPER()
	Store(xx, ReturnIndex(0))
}

// q4Decode writes q4DecodeAVX512: nc chunks of 32 4-bit weights to dst in
// element order, chunk i scaled by scales[i/2] (so a call starts on a block
// boundary, or decodes one chunk of a block with scales pointing at that
// block's scale). Element order comes from the index vector: 8 bytes
// zero-extended to 8 qwords, each qword's low dword set to the byte's high
// nibble and its high dword to the low nibble — the two elements of the
// byte, in order, as dword indices for VPERMPS.
func q4Decode() {
	TEXT("q4DecodeAVX512", NOSPLIT, "func(nc int, p *byte, scales *float32, code *[16]float32, dst *float32)")
	Pragma("noescape")
	Doc("q4DecodeAVX512 writes nc chunks of 32 dequantized 4-bit weights to dst; chunk i uses scales[i/2].")
	nc := Load(Param("nc"), GP64())
	pp := Load(Param("p"), GP64())
	ps := Load(Param("scales"), GP64())
	pc := Load(Param("code"), GP64())
	pd := Load(Param("dst"), GP64())
	code := ZMM()
	VMOVUPS(Mem{Base: pc}, code)
	i := GP64()
	XORQ(i, i)
	Label("q4dec_loop")
	CMPQ(i, nc)
	JGE(LabelRef("q4dec_done"))
	s := GP64()
	MOVQ(i, s)
	SHRQ(U8(1), s)
	lut := ZMM()
	VBROADCASTSS(Mem{Base: ps, Index: s, Scale: 4}, lut)
	VMULPS(code, lut, lut)
	for h := 0; h < 2; h++ {
		t, hi, lo := ZMM(), ZMM(), ZMM()
		VPMOVZXBQ(Mem{Base: pp, Disp: 8 * h}, t)
		VPSRLQ(U8(4), t, hi)
		VPSLLQ(U8(60), t, lo)
		VPSRLQ(U8(28), lo, lo)
		VPORQ(lo, hi, hi)
		VPERMPS(lut, hi, t)
		VMOVUPS(t, Mem{Base: pd, Disp: 64 * h})
	}
	ADDQ(U32(16), pp)
	ADDQ(U32(128), pd)
	INCQ(i)
	JMP(LabelRef("q4dec_loop"))
	Label("q4dec_done")
	VZEROUPPER()
	RET()
}

// q4DotBF16 writes q4DotBF16AVX512, q4Dot for 4-bit weights computed in
// bf16 (kernels.Q4.BF16): a block's 16 values Code[c]·scale are rounded to
// bf16 (VCVTNE2PS2BF16, nearest even, as the blocked path rounds a decoded
// panel) into a word table that VPERMW looks 32 codes up in, and VDPBF16PS
// sums their exact products with x (already bf16) in float32: half the
// instructions of the float32 kernel per weight. x comes split by
// 64-element blocks into 32 even then 32 odd elements (the high nibbles of
// a block's 32 bytes, zero-extended to words and shifted right by 4, are
// the even elements in order; the low nibbles, masked, the odd ones).
// Physical registers only: VDPBF16PS and VCVTNE2PS2BF16 are hand-encoded.
func q4DotBF16() {
	TEXT("q4DotBF16AVX512", NOSPLIT, "func(nb int, x *uint16, p *byte, scales *float32, code *[16]float32) float32")
	Pragma("noescape")
	Doc("q4DotBF16AVX512 returns the dot product of x (bf16, even/odd split by 64) and nb blocks of 64 4-bit weights rounded to bf16.")
	nb, px, pp, ps, pc := reg.RCX, reg.RSI, reg.RDI, reg.RDX, reg.RAX
	Load(Param("nb"), nb)
	Load(Param("x"), px)
	Load(Param("p"), pp)
	Load(Param("scales"), ps)
	Load(Param("code"), pc)
	code, mask, acc0, acc1 := reg.Z0, reg.Z1, reg.Z2, reg.Z3
	lut, table, t, hi := reg.Z4, reg.Z5, reg.Z6, reg.Z7
	VMOVUPS(Mem{Base: pc}, code)
	MOVL(U32(0x000F000F), reg.R8L)
	VPBROADCASTD(reg.R8L, mask)
	VPXORD(acc0, acc0, acc0)
	VPXORD(acc1, acc1, acc1)
	TESTQ(nb, nb)
	JZ(LabelRef("q4dotbf16_done"))
	Label("q4dotbf16_loop")
	VBROADCASTSS(Mem{Base: ps}, lut)
	VMULPS(code, lut, lut)
	vcvtne2ps2bf16(lut, lut, table)
	VPMOVZXBW(Mem{Base: pp}, t)
	VPSRLW(U8(4), t, hi)
	VPANDD(mask, t, t)
	VPERMW(table, hi, hi)
	VPERMW(table, t, t)
	vdpbf16ps(Mem{Base: px}, hi, acc0, false)
	vdpbf16ps(Mem{Base: px, Disp: 64}, t, acc1, false)
	ADDQ(U32(128), px)
	ADDQ(U32(32), pp)
	ADDQ(U32(4), ps)
	DECQ(nb)
	JNZ(LabelRef("q4dotbf16_loop"))
	Label("q4dotbf16_done")
	VADDPS(acc1, acc0, acc0)
	returnLaneSum(acc0, reg.Z3)
	RET()
}
