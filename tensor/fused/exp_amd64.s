//go:build amd64 && !purego

#include "textflag.h"
#include "lanes_amd64.h"

// Constants, from a *[17]float32 in AX (bit patterns): 0 log2e, 1 ln2Hi,
// 2 ln2Lo, 3..8 the polynomial, 9 one, 10 two, 11 sign mask, 12 one half,
// 13 int 127, 14 low limit, 15 high limit, 16 +Inf. Z14 is zero.
#define LOAD_CONSTS \
	VBROADCASTSS 0(AX), Z16; \
	VBROADCASTSS 4(AX), Z17; \
	VBROADCASTSS 8(AX), Z18; \
	VBROADCASTSS 12(AX), Z19; \
	VBROADCASTSS 16(AX), Z20; \
	VBROADCASTSS 20(AX), Z21; \
	VBROADCASTSS 24(AX), Z22; \
	VBROADCASTSS 28(AX), Z23; \
	VBROADCASTSS 32(AX), Z24; \
	VBROADCASTSS 36(AX), Z25; \
	VBROADCASTSS 40(AX), Z26; \
	VBROADCASTSS 44(AX), Z27; \
	VBROADCASTSS 48(AX), Z28; \
	VBROADCASTSS 52(AX), Z29; \
	VBROADCASTSS 56(AX), Z30; \
	VBROADCASTSS 60(AX), Z31; \
	VBROADCASTSS 64(AX), Z15; \
	VPXORD Z14, Z14, Z14

// EXP_Z0 sets Z6 = Exp(Z0) lane by lane, through Exp's exact steps, each a
// separate multiply or add (no FMA), so every lane rounds as the scalar code
// does: n = round(x·log2e) (truncating x·log2e ± 0.5), r = x − n·ln2Hi −
// n·ln2Lo, Cephes' polynomial, scaled by 2^n (n > 127: one factor 2 aside);
// then 0 below the low limit, +Inf above the high one, NaN passed through.
// Clobbers Z1–Z5, K2, K3.
#define EXP_Z0 \
	VMULPS Z16, Z0, Z1; \
	VPANDD Z27, Z1, Z2; \
	VPORD Z28, Z2, Z2; \
	VADDPS Z2, Z1, Z1; \
	VCVTTPS2DQ Z1, Z2; \
	VCVTDQ2PS Z2, Z3; \
	VMULPS Z17, Z3, Z4; \
	VSUBPS Z4, Z0, Z5; \
	VMULPS Z18, Z3, Z4; \
	VSUBPS Z4, Z5, Z5; \
	VMULPS Z5, Z19, Z6; \
	VADDPS Z20, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z21, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z22, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z23, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z24, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VMULPS Z5, Z6, Z6; \
	VADDPS Z5, Z6, Z6; \
	VADDPS Z25, Z6, Z6; \
	VPCMPGTD Z29, Z2, K2; \
	VMULPS Z26, Z6, K2, Z6; \
	VPMINSD Z29, Z2, Z2; \
	VPADDD Z29, Z2, Z2; \
	VPSLLD $23, Z2, Z2; \
	VMULPS Z2, Z6, Z6; \
	VCMPPS $0x01, Z30, Z0, K3; \
	VMOVAPS Z14, K3, Z6; \
	VCMPPS $0x0e, Z31, Z0, K3; \
	VMOVAPS Z15, K3, Z6; \
	VCMPPS $0x03, Z0, Z0, K3; \
	VMOVAPS Z0, K3, Z6

// func expAVX512(dst, src *float32, n int, c *[17]float32, sigmoid bool)
//
// dst[i] = Exp(src[i]) for i < n, sixteen lanes at a time, the last block
// under a mask; with sigmoid, dst[i] = 1/(1+Exp(-src[i])).
TEXT ·expAVX512(SB), NOSPLIT, $0-33
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVBQZX sigmoid+32(FP), DX
	MOVQ c+24(FP), AX
	LOAD_CONSTS
	MOVQ $0xffff, BX
	KMOVW BX, K1

exploop:
	CMPQ CX, $0
	JLE expdone
	TAIL_MASK(expfull)

expfull:
	VMOVUPS.Z (SI), K1, Z0
	TESTQ DX, DX
	JZ expin
	VPXORD Z27, Z0, Z0 // sigmoid: exp of -x

expin:
	EXP_Z0
	TESTQ DX, DX
	JZ expstore
	VADDPS Z25, Z6, Z6 // sigmoid: 1/(1+e)
	VDIVPS Z6, Z25, Z6

expstore:
	VMOVUPS Z6, K1, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP exploop

expdone:
	VZEROUPPER
	RET

// func softmaxAVX512(row *float32, n int, scale float32, c *[17]float32) (m float32, sum float64)
//
// The forward softmax of one attention row, in place; see softmaxRowGo,
// which it matches bit for bit. Pass 1 scales and finds the max m; if m is
// −Inf it stops (sum 0). Pass 2 forms e = Exp(v − m) and adds e, widened to
// float64, into sixteen lane sums (element j into lane j mod 16), which
// are then folded in a fixed order. Pass 3 multiplies by float32(1/sum).
TEXT ·softmaxAVX512(SB), NOSPLIT, $0-48
	MOVQ c+24(FP), AX
	LOAD_CONSTS
	VBROADCASTSS scale+16(FP), Z7
	VPXORD Z27, Z15, Z8 // running max, from −Inf

	// Pass 1: v = row·scale, m = max v.
	MOVQ row+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ $0xffff, BX
	KMOVW BX, K1

smax:
	CMPQ CX, $0
	JLE smaxdone
	TAIL_MASK(smaxfull)

smaxfull:
	VMOVUPS.Z (SI), K1, Z0
	VMULPS Z7, Z0, Z0
	VMOVUPS Z0, K1, (SI)
	VMAXPS Z8, Z0, K1, Z8
	ADDQ $64, SI
	SUBQ $16, CX
	JMP smax

smaxdone:
	FOLD_MAX_Z8
	VMOVSS X8, m+32(FP)
	VMOVD X8, BX
	CMPL BX, $0xff800000
	JNE sexp
	VPXORD X9, X9, X9
	VMOVSD X9, sum+40(FP)
	VZEROUPPER
	RET

sexp:
	// Pass 2: e = Exp(v − m), lane sums in Z9 (lanes 0–7) and Z10 (8–15).
	VBROADCASTSS X8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	MOVQ row+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ $0xffff, BX
	KMOVW BX, K1

sexploop:
	CMPQ CX, $0
	JLE sexpdone
	TAIL_MASK(sexpfull)

sexpfull:
	VMOVUPS.Z (SI), K1, Z0
	VSUBPS Z8, Z0, Z0
	EXP_Z0
	VMOVUPS Z6, K1, (SI)
	ADD_LANES_Z6
	ADDQ $64, SI
	SUBQ $16, CX
	JMP sexploop

sexpdone:
	FOLD_SUM_Z9
	VMOVSD X9, sum+40(FP)

	// Pass 3: row ·= float32(1/sum).
	VCVTSS2SD X25, X25, X13
	VDIVSD X9, X13, X13
	VCVTSD2SS X13, X13, X13
	VBROADCASTSS X13, Z13
	MOVQ row+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ $0xffff, BX
	KMOVW BX, K1

snorm:
	CMPQ CX, $0
	JLE sdone
	TAIL_MASK(snormfull)

snormfull:
	VMOVUPS.Z (SI), K1, Z0
	VMULPS Z13, Z0, Z0
	VMOVUPS Z0, K1, (SI)
	ADDQ $64, SI
	SUBQ $16, CX
	JMP snorm

sdone:
	VZEROUPPER
	RET

// func maxAVX512(x *float32, n int) float32
//
// The largest of x[0..n), n > 0: sixteen running maxima, then folded.
// VMAXPS keeps its second source when either is NaN, and the running max
// is that operand, so as in rowMaxGo a NaN is never the maximum.
TEXT ·maxAVX512(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVL $0xff800000, BX
	VMOVD BX, X8
	VBROADCASTSS X8, Z8 // −Inf
	MOVQ $0xffff, BX
	KMOVW BX, K1

mloop:
	CMPQ CX, $0
	JLE mdone
	TAIL_MASK(mfull)

mfull:
	VMOVUPS.Z (SI), K1, Z0
	VMAXPS Z8, Z0, K1, Z8
	ADDQ $64, SI
	SUBQ $16, CX
	JMP mloop

mdone:
	FOLD_MAX_Z8
	VMOVSS X8, ret+16(FP)
	VZEROUPPER
	RET

// func expSumAVX512(dst, src *float32, n int, m float32, c *[17]float32) float64
//
// Σ Exp(src[i] − m) for i < n, n > 0, in float64 by sixteen lanes (element
// i into lane i mod 16) folded as softmaxAVX512 folds them: expSumGo's bits.
// A non-nil dst receives the exponentials.
TEXT ·expSumAVX512(SB), NOSPLIT, $0-48
	MOVQ c+32(FP), AX
	LOAD_CONSTS
	VBROADCASTSS m+24(FP), Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ $0xffff, BX
	KMOVW BX, K1

esloop:
	CMPQ CX, $0
	JLE esdone
	TAIL_MASK(esfull)

esfull:
	VMOVUPS.Z (SI), K1, Z0
	VSUBPS Z8, Z0, Z0
	EXP_Z0
	TESTQ DI, DI
	JZ esadd
	VMOVUPS Z6, K1, (DI)
	ADDQ $64, DI

esadd:
	ADD_LANES_Z6
	ADDQ $64, SI
	SUBQ $16, CX
	JMP esloop

esdone:
	FOLD_SUM_Z9
	VMOVSD X9, ret+40(FP)
	VZEROUPPER
	RET
