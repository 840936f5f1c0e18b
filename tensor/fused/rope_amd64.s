//go:build amd64 && !purego

#include "textflag.h"
#include "lanes_amd64.h"

// func ropeHalfAVX512(out, x, cos, sin *float32, half int, sign float32, acc bool)
//
// One head of rope's half-rotate loop: with x0 = x[i], x1 = x[i+half],
// c = cos[i] and s = sign·sin[i], out[i] = x0·c − x1·s and
// out[i+half] = x0·s + x1·c, or += those with acc. The Go loop's
// operations, one rounding each (no FMA), so the bits are the same. out may
// alias x: a block reads both halves before it writes either.
TEXT ·ropeHalfAVX512(SB), NOSPLIT, $0-45
	MOVQ out+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ cos+16(FP), R8
	MOVQ sin+24(FP), R9
	MOVQ half+32(FP), CX
	VBROADCASTSS sign+40(FP), Z7
	MOVBLZX acc+44(FP), DX
	MOVQ CX, R10
	SHLQ $2, R10 // half in bytes: x1 and out[i+half] are R10 past x0 and out[i]
	MOVQ $0xffff, BX
	KMOVW BX, K1

rloop:
	CMPQ CX, $0
	JLE rdone
	TAIL_MASK(rfull)

rfull:
	VMOVUPS.Z (SI), K1, Z0      // x0
	VMOVUPS.Z (SI)(R10*1), K1, Z1 // x1
	VMOVUPS.Z (R8), K1, Z2      // c
	VMOVUPS.Z (R9), K1, Z3
	VMULPS Z7, Z3, Z3           // s = sign·sin
	VMULPS Z2, Z0, Z4           // x0·c
	VMULPS Z3, Z1, Z5           // x1·s
	VSUBPS Z5, Z4, Z4           // y0
	VMULPS Z3, Z0, Z5           // x0·s
	VMULPS Z2, Z1, Z6           // x1·c
	VADDPS Z6, Z5, Z5           // y1
	TESTQ DX, DX
	JZ rstore
	VMOVUPS.Z (DI), K1, Z0
	VADDPS Z4, Z0, Z4
	VMOVUPS.Z (DI)(R10*1), K1, Z1
	VADDPS Z5, Z1, Z5

rstore:
	VMOVUPS Z4, K1, (DI)
	VMOVUPS Z5, K1, (DI)(R10*1)
	ADDQ $64, DI
	ADDQ $64, SI
	ADDQ $64, R8
	ADDQ $64, R9
	SUBQ $16, CX
	JMP rloop

rdone:
	VZEROUPPER
	RET
