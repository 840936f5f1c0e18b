package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	"github.com/mmcloughlin/avo/reg"
)

// AMX kernels. Neither the Go assembler nor avo knows the tile
// instructions, so they are written as BYTE lines by the VEX encoder below.
// All are VEX.128 (L=0), W0, opcode map 0F38:
//
//	LDTILECFG m512              NP 49 /0 (memory)
//	TILERELEASE                 NP 49 C0
//	TILEZERO tmm                F2 49 11:rrr:000
//	TILELOADD tmm, [b+i*1+d]    F2 4B !(11):rrr:100 + SIB
//	TILESTORED [b+i*1+d], tmm   F3 4B !(11):rrr:100 + SIB
//	TDPBF16PS tmm1, tmm2, tmm3  F3 5C 11:rrr:bbb, tmm3 in VEX.vvvv
//
// TDPBF16PS: for each row m of tmm1 and each k pair q of tmm2's row,
// tmm1[m][n] += tmm2[m].bf16[2q]·tmm3[q].bf16[2n] + tmm2[m].bf16[2q+1]·
// tmm3[q].bf16[2n+1] (float32; denormals flushed, round to nearest even).
// So tmm2 holds A rows (32 consecutive k each) and tmm3 B as k-pair rows of
// 16 columns: the bf16-pair panel layout.

// VEX pp field.
const (
	ppNP = 0
	ppF3 = 2
	ppF2 = 3
)

// vex3 encodes a three-byte VEX instruction of map 0F38, W0, L0:
//
//	C4 [R̄ X̄ B̄ 00010] [0 v̄v̄v̄v̄ 0 pp] opcode ModRM [SIB] [disp]
//
// r is ModRM.reg, v the VEX.vvvv register (0 when unused: encoded 1111).
// rm is a tile register number (mod 11) or a memory operand [base +
// index*1 + disp] (index may be nil).
func vex3(pp, opcode byte, r, v int, rm any) []byte {
	b1 := byte(0x80 | 0x40 | 0x20 | 0x02) // R̄ X̄ B̄ set: no extension
	b2 := byte((^v&15)<<3) | pp
	switch x := rm.(type) {
	case int:
		return []byte{0xC4, b1, b2, opcode, 0xC0 | byte(r&7)<<3 | byte(x&7)}
	case Mem:
		base, ok := x.Base.(reg.Physical)
		if !ok || x.Symbol.Name != "" {
			panic("vex3: memory operand must have a physical base")
		}
		bi := int(base.PhysicalIndex())
		if bi&7 == 4 || bi&7 == 5 {
			panic("vex3: RSP/RBP/R12/R13 bases not supported")
		}
		if bi&8 != 0 {
			b1 &^= 0x20
		}
		mod := byte(0)
		var disp []byte
		switch {
		case x.Disp == 0:
		case x.Disp >= -128 && x.Disp <= 127:
			mod = 1
			disp = []byte{byte(int8(x.Disp))}
		default:
			mod = 2
			u := uint32(int32(x.Disp))
			disp = []byte{byte(u), byte(u >> 8), byte(u >> 16), byte(u >> 24)}
		}
		code := []byte{0xC4, b1, b2, opcode}
		if x.Index == nil {
			code = append(code, mod<<6|byte(r&7)<<3|byte(bi&7))
		} else {
			idx, ok := x.Index.(reg.Physical)
			if !ok || x.Scale > 1 {
				panic("vex3: index must be a physical register, scale 1")
			}
			ii := int(idx.PhysicalIndex())
			if ii == 4 {
				panic("vex3: RSP cannot be an index")
			}
			if ii&8 != 0 {
				code[1] &^= 0x40
			}
			code = append(code, mod<<6|byte(r&7)<<3|4, byte(ii&7)<<3|byte(bi&7))
		}
		return append(code, disp...)
	}
	panic("vex3: bad operand")
}

var amxISA = []string{"AMX_TILE", "AMX_BF16"}

func memRegs(m Mem) []Op {
	l := []Op{m.Base}
	if m.Index != nil {
		l = append(l, m.Index)
	}
	return l
}

func memAsm(m Mem) string {
	s := m.Base.Asm()
	if m.Index != nil {
		s += "+" + m.Index.Asm()
	}
	if m.Disp != 0 {
		s += fmt.Sprintf("+%d", m.Disp)
	}
	return "[" + s + "]"
}

func ldtilecfg(m Mem) {
	rawInstISA("LDTILECFG "+memAsm(m), amxISA, memRegs(m), nil, vex3(ppNP, 0x49, 0, 0, m))
}

func tilerelease() {
	rawInstISA("TILERELEASE", amxISA, nil, nil, []byte{0xC4, 0xE2, 0x78, 0x49, 0xC0})
}

func tilezero(t int) {
	rawInstISA(fmt.Sprintf("TILEZERO tmm%d", t), amxISA, nil, nil, vex3(ppF2, 0x49, t, 0, 0))
}

func tileloadd(t int, m Mem) {
	rawInstISA(fmt.Sprintf("TILELOADD tmm%d, %s", t, memAsm(m)), amxISA, memRegs(m), nil, vex3(ppF2, 0x4B, t, 0, m))
}

func tilestored(m Mem, t int) {
	rawInstISA(fmt.Sprintf("TILESTORED %s, tmm%d", memAsm(m), t), amxISA, memRegs(m), nil, vex3(ppF3, 0x4B, t, 0, m))
}

// tdpbf16ps emits acc += a·b (Intel operand order: TDPBF16PS acc, a, b).
func tdpbf16ps(acc, a, b int) {
	rawInstISA(fmt.Sprintf("TDPBF16PS tmm%d, tmm%d, tmm%d", acc, a, b), amxISA, nil, nil, vex3(ppF3, 0x5C, acc, b, a))
}

// microAMX writes the 32×32 AMX micro-kernel. All tile work of one call is
// inside this one function (LDTILECFG … TILERELEASE): Go never preempts an
// assembly function asynchronously, and the kernel saves the tile state
// across signals and context switches.
//
// Tiles (palette 1, every tile 16 rows × 64 bytes): tmm0-3 accumulate the
// four 16×16 float32 quarters of C (rows 0-15 / 16-31 × columns 0-15 /
// 16-31), tmm4-5 hold A rows 0-15 and 16-31 (32 bf16 of consecutive k per
// row: the packed A sliver is row-major, lda bytes per row), tmm6-7 B
// columns 0-15 and 16-31 (16 k pairs × 16 columns of bf16 pairs: the packed
// bf16-pair B panel, 128 bytes per k pair).
func microAMX() {
	const name = "micro32x32AMX"
	TEXT(name, 0, "func(ks int, a *float32, lda int, b *float32, c *float32, ldc int, accumulate bool, cfg *byte)")
	Pragma("noescape")
	Doc(name + " sets (or adds to) the 32×32 tile at c the product of a packed row-major bf16 A sliver (lda bytes per row) and a bf16-pair B panel, over ks ≥ 1 steps of 32 k; cfg is the 64-byte tile configuration.")
	scratch := AllocLocal(32 * 32 * 4)
	ks, pa, lda, pb, pc, ldc, bstride, cfg := reg.RCX, reg.RSI, reg.R8, reg.RDI, reg.RDX, reg.RBX, reg.R9, reg.RAX
	pa2, t := reg.R10, reg.R11
	Load(Param("ks"), ks)
	Load(Param("a"), pa)
	Load(Param("lda"), lda)
	Load(Param("b"), pb)
	Load(Param("c"), pc)
	Load(Param("ldc"), ldc)
	SHLQ(U8(2), ldc)
	Load(Param("cfg"), cfg)
	MOVQ(U32(128), bstride)
	MOVQ(lda, pa2)
	SHLQ(U8(4), pa2)
	ADDQ(pa, pa2)
	ldtilecfg(Mem{Base: cfg})
	for i := 0; i < 4; i++ {
		tilezero(i)
	}
	Label(name + "_loop")
	tileloadd(4, Mem{Base: pa, Index: lda, Scale: 1})
	tileloadd(6, Mem{Base: pb, Index: bstride, Scale: 1})
	tileloadd(7, Mem{Base: pb, Index: bstride, Scale: 1, Disp: 64})
	tdpbf16ps(0, 4, 6)
	tdpbf16ps(1, 4, 7)
	tileloadd(5, Mem{Base: pa2, Index: lda, Scale: 1})
	tdpbf16ps(2, 5, 6)
	tdpbf16ps(3, 5, 7)
	ADDQ(U8(64), pa)
	ADDQ(U8(64), pa2)
	ADDQ(U32(16*128), pb)
	DECQ(ks)
	JNZ(LabelRef(name + "_loop"))

	Load(Param("accumulate"), reg.AL)
	TESTB(reg.AL, reg.AL)
	JNZ(LabelRef(name + "_acc"))
	MOVQ(ldc, t)
	SHLQ(U8(4), t)
	ADDQ(pc, t)
	tilestored(Mem{Base: pc, Index: ldc, Scale: 1}, 0)
	tilestored(Mem{Base: pc, Index: ldc, Scale: 1, Disp: 64}, 1)
	tilestored(Mem{Base: t, Index: ldc, Scale: 1}, 2)
	tilestored(Mem{Base: t, Index: ldc, Scale: 1, Disp: 64}, 3)
	tilerelease()
	RET()

	// Accumulate: the tile's sums (from zero) go to scratch, then are added
	// to C once, as the other micro-kernels do.
	Label(name + "_acc")
	sp := reg.R10
	LEAQ(scratch, sp)
	tilestored(Mem{Base: sp, Index: bstride, Scale: 1}, 0)
	tilestored(Mem{Base: sp, Index: bstride, Scale: 1, Disp: 64}, 1)
	tilestored(Mem{Base: sp, Index: bstride, Scale: 1, Disp: 16 * 128}, 2)
	tilestored(Mem{Base: sp, Index: bstride, Scale: 1, Disp: 16*128 + 64}, 3)
	tilerelease()
	for i := 0; i < 32; i++ {
		for j := 0; j < 2; j++ {
			z := zmm(j)
			VMOVUPS(Mem{Base: sp, Disp: 128*i + 64*j}, z)
			VADDPS(Mem{Base: pc, Disp: 64 * j}, z, z)
			VMOVUPS(z, Mem{Base: pc, Disp: 64 * j})
		}
		ADDQ(ldc, pc)
	}
	VZEROUPPER()
	RET()
}
