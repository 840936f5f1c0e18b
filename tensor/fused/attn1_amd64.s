//go:build amd64 && !purego

#include "textflag.h"

// func attnDotsAVX512(q, k *float32, ldk, n, hd16 int, s *float32)
// s[j] = Σ_{c<16·hd16} q[c]·k[j·ldk+c] for j < n (ldk in floats).
TEXT ·attnDotsAVX512(SB), NOSPLIT, $0-48
	MOVQ q+0(FP), AX
	MOVQ k+8(FP), DX
	MOVQ ldk+16(FP), BX
	SHLQ $2, BX
	MOVQ n+24(FP), CX
	MOVQ hd16+32(FP), R8
	MOVQ s+40(FP), DI
	TESTQ CX, CX
	JZ   dots_done

dots_key:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	MOVQ AX, R10
	MOVQ DX, R11
	MOVQ R8, R9

dots_pair:
	CMPQ R9, $2
	JL   dots_one
	VMOVUPS     (R10), Z2
	VMOVUPS     64(R10), Z3
	VFMADD231PS (R11), Z2, Z0
	VFMADD231PS 64(R11), Z3, Z1
	ADDQ        $128, R10
	ADDQ        $128, R11
	SUBQ        $2, R9
	JMP         dots_pair

dots_one:
	TESTQ       R9, R9
	JZ          dots_sum
	VMOVUPS     (R10), Z2
	VFMADD231PS (R11), Z2, Z0

dots_sum:
	VADDPS        Z1, Z0, Z0
	VEXTRACTF64X4 $1, Z0, Y1
	VADDPS        Y1, Y0, Y0
	VEXTRACTF128  $1, Y0, X1
	VADDPS        X1, X0, X0
	VPERMILPS     $0x4e, X0, X1
	VADDPS        X1, X0, X0
	VPERMILPS     $0xb1, X0, X1
	VADDSS        X1, X0, X0
	VMOVSS        X0, (DI)
	ADDQ          $4, DI
	ADDQ          BX, DX
	DECQ          CX
	JNZ           dots_key

dots_done:
	VZEROUPPER
	RET

// func attnAxpyAVX512(p, v *float32, ldv, n, hd16 int, out *float32)
// out[c] += Σ_{j<n} p[j]·v[j·ldv+c] for c < 16·hd16 (ldv in floats).
TEXT ·attnAxpyAVX512(SB), NOSPLIT, $0-48
	MOVQ p+0(FP), AX
	MOVQ v+8(FP), DX
	MOVQ ldv+16(FP), BX
	SHLQ $2, BX
	MOVQ n+24(FP), CX
	MOVQ hd16+32(FP), R8
	MOVQ out+40(FP), DI

axpy_col:
	TESTQ  R8, R8
	JZ     axpy_done
	VMOVUPS (DI), Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	MOVQ   AX, R10
	MOVQ   DX, R11
	MOVQ   CX, R9

axpy_four:
	CMPQ         R9, $4
	JL           axpy_rest
	VBROADCASTSS (R10), Z4
	VBROADCASTSS 4(R10), Z5
	VBROADCASTSS 8(R10), Z6
	VBROADCASTSS 12(R10), Z7
	VFMADD231PS  (R11), Z4, Z0
	ADDQ         BX, R11
	VFMADD231PS  (R11), Z5, Z1
	ADDQ         BX, R11
	VFMADD231PS  (R11), Z6, Z2
	ADDQ         BX, R11
	VFMADD231PS  (R11), Z7, Z3
	ADDQ         BX, R11
	ADDQ         $16, R10
	SUBQ         $4, R9
	JMP          axpy_four

axpy_rest:
	TESTQ        R9, R9
	JZ           axpy_store
	VBROADCASTSS (R10), Z4
	VFMADD231PS  (R11), Z4, Z0
	ADDQ         BX, R11
	ADDQ         $4, R10
	DECQ         R9
	JMP          axpy_rest

axpy_store:
	VADDPS  Z1, Z0, Z0
	VADDPS  Z3, Z2, Z2
	VADDPS  Z2, Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ    $64, DI
	ADDQ    $64, DX
	DECQ    R8
	JMP     axpy_col

axpy_done:
	VZEROUPPER
	RET
