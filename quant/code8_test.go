package quant

import (
	"math"
	"testing"
)

// refQuantize8 is bitsandbytes' quantize_blockwise as its PyTorch kernel
// (backends/default/ops.py) writes it, element by element and without
// Code8's shortcuts: absmax = max|x| of each block; full blocks scaled by
// x * (1/clamp(absmax, 1e-38)), the last partial block by
// x / clamp(absmax, 1e-38) (that clamped absmax returned); clamp(-1, 1);
// code = torch.bucketize(scaled, (code[:-1]+code[1:])/2), i.e. how many
// bounds lie strictly below the scaled value, counted by a linear scan.
func refQuantize8(x []float32, m [256]float32, bs int) ([]uint8, []float32) {
	var bounds [255]float32
	for i := range bounds {
		bounds[i] = (m[i] + m[i+1]) / 2
	}
	codes := make([]uint8, len(x))
	var absmax []float32
	for lo := 0; lo < len(x); lo += bs {
		hi := min(len(x), lo+bs)
		var am float32
		for _, v := range x[lo:hi] {
			if a := float32(math.Abs(float64(v))); a > am {
				am = a
			}
		}
		c := am
		if c < 1e-38 {
			c = 1e-38
		}
		partial := hi-lo < bs
		if partial {
			am = c
		}
		absmax = append(absmax, am)
		inv := 1 / c
		for i := lo; i < hi; i++ {
			s := x[i] * inv
			if partial {
				s = x[i] / c
			}
			s = float32(math.Max(-1, math.Min(1, float64(s))))
			n := 0
			for _, b := range bounds {
				if b < s {
					n++
				}
			}
			codes[i] = uint8(n)
		}
	}
	return codes, absmax
}

// TestCode8MatchesReference: the optimizers' requantizer (Code8) gives the
// reference's codes and absmax bit for bit, with both maps, on hand-made
// blocks of 8: every midpoint of the map (a tie: the lower code), one ulp
// either side, the map's own entries, +0 and -0, a block of all zeros, a
// negative absmax, a subnormal block, and a last partial block whose
// division and reciprocal-multiply disagree.
func TestCode8MatchesReference(t *testing.T) {
	const bs = 8
	for _, tc := range []struct {
		name string
		m    [256]float32
	}{{"signed", DynamicMap()}, {"unsigned", UnsignedDynamicMap()}} {
		c := NewCode8(tc.m)
		var x []float32
		// Ties: absmax 1 (the first element), so the scaled value is x.
		for i := 0; i+1 < 256; i += 7 {
			mid := (tc.m[i] + tc.m[i+1]) / 2
			x = append(x, 1, mid, math.Nextafter32(mid, 2), math.Nextafter32(mid, -2), tc.m[i], -mid, 0, float32(math.Copysign(0, -1)))
		}
		x = append(x, make([]float32, bs)...)                               // a block of zeros
		x = append(x, -3, 1, 2, -0.5, 1e-7, -1e-7, 2.9999998, 0)            // absmax from a negative value
		x = append(x, 4e-39, -4e-39, 1e-40, 0, 2e-39, -1e-45, 3e-39, 1e-39) // subnormal absmax: below the 1e-38 floor
		x = append(x, 3, 1, 2, 0.1, 2.0000002, 1.0000001)                   // partial last block of 6, absmax 3
		codes, absmax := refQuantize8(x, tc.m, bs)
		got := make([]uint8, len(x))
		gotAbs := make([]float32, len(absmax))
		c.Quantize(x, bs, got, gotAbs)
		for i := range x {
			if got[i] != codes[i] {
				t.Fatalf("%s: x[%d] = %v: code %d, reference %d", tc.name, i, x[i], got[i], codes[i])
			}
		}
		for b := range absmax {
			if math.Float32bits(gotAbs[b]) != math.Float32bits(absmax[b]) {
				t.Fatalf("%s: absmax[%d] = %v, reference %v", tc.name, b, gotAbs[b], absmax[b])
			}
		}
		// The ties went to the lower code.
		for i, k := 0, 0; i+1 < 256; i, k = i+7, k+bs {
			if want := uint8(i); got[k+1] != want || tc.m[got[k+4]] != tc.m[i] {
				t.Errorf("%s: midpoint of codes %d and %d took code %d; the map entry %v took %d", tc.name, i, i+1, got[k+1], tc.m[i], got[k+4])
			}
		}
		// The zero block: absmax 0 and the code of 0.0.
		zb := len(absmax) - 4
		zero := got[zb*bs]
		if absmax[zb] != 0 || tc.m[zero] != 0 {
			t.Errorf("%s: zero block: absmax %v, code %d (%v)", tc.name, absmax[zb], zero, tc.m[zero])
		}
		// Dequantizing: map[code] * absmax.
		deq := make([]float32, len(x))
		c.Dequantize(got, gotAbs, bs, deq)
		for i, q := range got {
			if want := tc.m[q] * gotAbs[i/bs]; math.Float32bits(deq[i]) != math.Float32bits(want) {
				t.Fatalf("%s: dequantized[%d] = %v, want %v", tc.name, i, deq[i], want)
			}
		}
		// Code8 is QuantizeBlockwise8's quantizer.
		q := QuantizeBlockwise8(x, tc.m, bs)
		for i := range x {
			if q.Codes[i] != got[i] {
				t.Fatalf("%s: QuantizeBlockwise8 and Code8 disagree at %d", tc.name, i)
			}
		}
	}
}

// The unsigned dynamic map is create_dynamic_map(signed=False): sorted,
// 0 and 1 at the ends, 2^(i+1) fractions of 10^(i-6) for each exponent i.
func TestUnsignedDynamicMap(t *testing.T) {
	m := UnsignedDynamicMap()
	if m[0] != 0 || m[255] != 1 {
		t.Fatalf("ends %v, %v; want 0, 1", m[0], m[255])
	}
	for i := 1; i < 256; i++ {
		if !(m[i] > m[i-1]) {
			t.Fatalf("map[%d] = %v is not above map[%d] = %v", i, m[i], i-1, m[i-1])
		}
	}
	k := 1
	for i := 0; i < 7; i++ {
		n := 1 << (i + 1)
		scale := math.Pow(10, float64(i-6))
		for j := 0; j < n; j++ {
			lo := 0.1 + 0.9*float64(j)/float64(n)
			want := scale * (lo + 0.45/float64(n))
			if got := float64(m[k]); math.Abs(got-want) > 1e-6*want {
				t.Fatalf("map[%d] = %v, want %v (exponent %d, fraction %d)", k, got, want, i, j)
			}
			k++
		}
	}
	// The signed map: 127 negative fractions mirroring 127 positive ones,
	// then 0 and 1 (no -1).
	s := DynamicMap()
	if s[127] != 0 || s[255] != 1 || s[0] != -s[254] {
		t.Fatalf("signed map: map[0] %v, map[127] %v, map[255] %v", s[0], s[127], s[255])
	}
}

// Code8's table lookup gives bucketize's code for the lowest, the highest
// and a middle float32 of every bin of the top 16 bits, for both maps
// (NaN included: code 0, as bucket gives).
func TestCode8LookupIsBucketize(t *testing.T) {
	for _, m := range [][256]float32{DynamicMap(), UnsignedDynamicMap()} {
		c := NewCode8(m)
		for k := uint32(0); k < 1<<16; k++ {
			for _, low := range []uint32{0, 0x7fff, 0xffff, 0x1234} {
				s := math.Float32frombits(k<<16 | low)
				if got, want := c.code(s), uint8(bucket(c.mid[:], s)); got != want {
					t.Fatalf("code(%v) = %d, bucketize %d", s, got, want)
				}
			}
		}
	}
}
