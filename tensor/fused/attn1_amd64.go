//go:build amd64 && !purego

package fused

// attnDotsAVX512 sets s[j] = q·k_j for n keys of 16·hd16 floats, k_j at
// k[j·ldk:].
//
//go:noescape
func attnDotsAVX512(q, k *float32, ldk, n, hd16 int, s *float32)

// attnAxpyAVX512 adds Σ_j p[j]·v_j to out (16·hd16 floats) for n values,
// v_j at v[j·ldv:].
//
//go:noescape
func attnAxpyAVX512(p, v *float32, ldv, n, hd16 int, out *float32)

// hasAttnDecode reports whether attentionDecode has a vector kernel for
// head size hd.
func hasAttnDecode(hd int) bool { return hasExpAVX512 && hd%16 == 0 }

func attnDots(s, q, k []float32, ldk, n, hd int) {
	if n > 0 {
		_ = k[(n-1)*ldk+hd-1]
		attnDotsAVX512(&q[0], &k[0], ldk, n, hd/16, &s[0])
	}
}

func attnAxpy(out, p, v []float32, ldv, n, hd int) {
	if n > 0 {
		_ = v[(n-1)*ldv+hd-1]
		_ = out[hd-1]
		attnAxpyAVX512(&p[0], &v[0], ldv, n, hd/16, &out[0])
	}
}
