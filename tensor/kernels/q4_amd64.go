//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// The AVX-512 4-bit kernels (q4DotAVX512, q4DecodeAVX512; see
// internal/asmgen/q4.go): a block's 16 values live in one zmm register and
// VPERMPS looks up 16 codes at a time.
func init() {
	if !cpu.X86.HasAVX512F {
		return
	}
	q4Dot = func(nb int, x []float32, p []byte, scales []float32, code *[16]float32) float32 {
		if nb == 0 {
			return 0
		}
		_, _, _ = x[64*nb-1], p[32*nb-1], scales[nb-1]
		return q4DotAVX512(nb, &x[0], &p[0], &scales[0], code)
	}
	q4DecodeChunks = func(nc int, p []byte, scales []float32, code *[16]float32, dst []float32) {
		_, _, _ = p[16*nc-1], scales[(nc-1)/2], dst[32*nc-1]
		q4DecodeAVX512(nc, &p[0], &scales[0], code, &dst[0])
	}
	if haveBF16 {
		q4DotBF16 = func(nb int, x []BF16, p []byte, scales []float32, code *[16]float32) float32 {
			if nb == 0 {
				return 0
			}
			_, _, _ = x[64*nb-1], p[32*nb-1], scales[nb-1]
			return q4DotBF16AVX512(nb, &x[0], &p[0], &scales[0], code)
		}
	}
}
