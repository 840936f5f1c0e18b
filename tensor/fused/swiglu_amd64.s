//go:build amd64 && !purego

#include "textflag.h"
#include "lanes_amd64.h"

// func swigluMulAVX512(out, gate, up, s *float32, n int)
//
// out[i] = (gate[i]·s[i])·up[i]: swigluMulGo's operations, one rounding each.
TEXT ·swigluMulAVX512(SB), NOSPLIT, $0-40
	MOVQ out+0(FP), DI
	MOVQ gate+8(FP), R10
	MOVQ up+16(FP), R11
	MOVQ s+24(FP), SI
	MOVQ n+32(FP), CX
	MOVQ $0xffff, BX
	KMOVW BX, K1

smloop:
	CMPQ CX, $0
	JLE smdone
	TAIL_MASK(smfull)

smfull:
	VMOVUPS.Z (R10), K1, Z0
	VMOVUPS.Z (SI), K1, Z1
	VMOVUPS.Z (R11), K1, Z2
	VMULPS Z1, Z0, Z0
	VMULPS Z2, Z0, Z0
	VMOVUPS Z0, K1, (DI)
	ADDQ $64, DI
	ADDQ $64, R10
	ADDQ $64, R11
	ADDQ $64, SI
	SUBQ $16, CX
	JMP smloop

smdone:
	VZEROUPPER
	RET

// func swigluGradAVX512(dgate, dup, dout, gate, up, s *float32, n int)
//
// dgate[i] += ((dout·up)·s)·(1 + g·(1−s)) and dup[i] += (dout·g)·s, with
// g = gate[i] and s = s[i]: swigluGradGo's operations, one rounding each.
// A nil dgate or dup is skipped.
TEXT ·swigluGradAVX512(SB), NOSPLIT, $0-56
	MOVQ dgate+0(FP), DI
	MOVQ dup+8(FP), R8
	MOVQ dout+16(FP), R9
	MOVQ gate+24(FP), R10
	MOVQ up+32(FP), R11
	MOVQ s+40(FP), SI
	MOVQ n+48(FP), CX
	MOVL $0x3f800000, BX
	VMOVD BX, X7
	VBROADCASTSS X7, Z7 // 1
	MOVQ $0xffff, BX
	KMOVW BX, K1

sgloop:
	CMPQ CX, $0
	JLE sgdone
	TAIL_MASK(sgfull)

sgfull:
	VMOVUPS.Z (SI), K1, Z0  // s
	VMOVUPS.Z (R9), K1, Z1  // dout
	VMOVUPS.Z (R10), K1, Z2 // g
	TESTQ DI, DI
	JZ sgup
	VMOVUPS.Z (R11), K1, Z3 // up
	VSUBPS Z0, Z7, Z4       // 1 − s
	VMULPS Z4, Z2, Z4       // g·(1 − s)
	VADDPS Z4, Z7, Z4       // 1 + g·(1 − s)
	VMULPS Z3, Z1, Z5       // dout·up
	VMULPS Z0, Z5, Z5       // ·s
	VMULPS Z4, Z5, Z5
	VMOVUPS.Z (DI), K1, Z6
	VADDPS Z5, Z6, Z6
	VMOVUPS Z6, K1, (DI)
	ADDQ $64, DI

sgup:
	TESTQ R8, R8
	JZ sgnext
	VMULPS Z2, Z1, Z5 // dout·g
	VMULPS Z0, Z5, Z5 // ·s
	VMOVUPS.Z (R8), K1, Z6
	VADDPS Z5, Z6, Z6
	VMOVUPS Z6, K1, (R8)
	ADDQ $64, R8

sgnext:
	ADDQ $64, R9
	ADDQ $64, R10
	ADDQ $64, R11
	ADDQ $64, SI
	SUBQ $16, CX
	JMP sgloop

sgdone:
	VZEROUPPER
	RET
