//go:build !amd64 || purego

package fused

// hasAttnDecode reports whether attentionDecode has a vector kernel for
// head size hd: not on this platform, where the tiled path runs.
func hasAttnDecode(hd int) bool { return false }

func attnDots(s, q, k []float32, ldk, n, hd int) {
	for j := 0; j < n; j++ {
		s[j] = dot(q[:hd], k[j*ldk:j*ldk+hd])
	}
}

func attnAxpy(out, p, v []float32, ldv, n, hd int) {
	for j := 0; j < n; j++ {
		axpy(out[:hd], p[j], v[j*ldv:j*ldv+hd])
	}
}
