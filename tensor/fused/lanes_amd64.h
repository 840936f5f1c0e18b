// Macros shared by the package's AVX-512 kernels. Masked loads and stores
// go through K1, which TAIL_MASK narrows for the last block.

// TAIL_MASK sets K1 to the first CX lanes when CX < 16 (else leaves it).
#define TAIL_MASK(skip) \
	CMPQ CX, $16; \
	JGE skip; \
	MOVQ $1, BX; \
	SHLQ CX, BX; \
	DECQ BX; \
	KMOVW BX, K1

// FOLD_MAX_Z8 leaves the largest of Z8's sixteen lanes in X8 (lane 0).
// Clobbers Y9.
#define FOLD_MAX_Z8 \
	VEXTRACTF64X4 $1, Z8, Y9; \
	VMAXPS Y9, Y8, Y8; \
	VEXTRACTF128 $1, Y8, X9; \
	VMAXPS X9, X8, X8; \
	VPERMILPS $0x4e, X8, X9; \
	VMAXPS X9, X8, X8; \
	VPERMILPS $0xb1, X8, X9; \
	VMAXPS X9, X8, X8

// ADD_LANES_Z6 adds Z6's lanes under K1, widened to float64, into the lane
// sums Z9 (lanes 0–7) and Z10 (lanes 8–15): lanes past the end add
// nothing. Clobbers Z6, Z11, Z12.
#define ADD_LANES_Z6 \
	VMOVAPS.Z Z6, K1, Z6; \
	VCVTPS2PD Y6, Z11; \
	VADDPD Z11, Z9, Z9; \
	VEXTRACTF64X4 $1, Z6, Y12; \
	VCVTPS2PD Y12, Z12; \
	VADDPD Z12, Z10, Z10

// FOLD_SUM_Z9 leaves in X9 the sum of the lanes ADD_LANES_Z6 filled, in the
// order foldLanes adds them: ((u0+u4)+(u2+u6)) + ((u1+u5)+(u3+u7)), u_i =
// lane i + lane i+8. Clobbers Z10.
#define FOLD_SUM_Z9 \
	VADDPD Z10, Z9, Z9; \
	VEXTRACTF64X4 $1, Z9, Y10; \
	VADDPD Y10, Y9, Y9; \
	VEXTRACTF128 $1, Y9, X10; \
	VADDPD X10, X9, X9; \
	VPERMILPD $1, X9, X10; \
	VADDSD X10, X9, X9
