package format

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// The expected bytes and values below are worked by hand from ggml's rules
// (quantize_row_q8_0_ref, quantize_row_q4_0_ref, dequantize_row_q*_0 in
// ggml-quants.c), not produced by this package.

func q8Block(d uint16, qs ...int8) []byte {
	b := binary.LittleEndian.AppendUint16(nil, d)
	full := make([]int8, QK)
	copy(full, qs)
	for _, q := range full {
		b = append(b, byte(q))
	}
	return b
}

func TestQ8_0HandMadeBlocks(t *testing.T) {
	u := float32(math.Ldexp(1, -11))
	cases := []struct {
		name string
		x    []float32 // first values; the rest of the block is 0
		want []byte
		back []float32 // decoded first values
	}{
		// amax 0: d = 0, id = 0, every code 0, decodes to +0.
		{"zeros", nil, q8Block(0x0000), nil},
		// amax 127: d = 1 (fp16 0x3C00), id = 1; roundf sends halves away
		// from zero: 0.5→1, -0.5→-1, 2.5→3 (not 2), 63.5→64.
		{"halves", []float32{127, -127, 0.5, -0.5, 1.5, 2.5, -2.5, 63.5},
			q8Block(0x3C00, 127, -127, 1, -1, 2, 3, -3, 64),
			[]float32{127, -127, 1, -1, 2, 3, -3, 64}},
		// Negative max: amax 254, d = 2 (fp16 0x4000), id = 0.5:
		// -254→-127, 1→0.5→1, -3→-1.5→-2.
		{"negative max", []float32{1, -254, -3},
			q8Block(0x4000, 1, -127, -2), []float32{2, -254, -4}},
		// d = 127(1+2⁻¹¹)/127 = 1+2⁻¹¹, a tie between the halves 1 and
		// 1+2⁻¹⁰: the fp16 scale rounds to even, 1.0. The codes come from
		// the float32 id = fl(1/(1+2⁻¹¹)) = 1-2⁻¹¹+2⁻²², so
		// 127(1+2⁻¹¹)·id rounds to 127 and 1.5(1+2⁻¹¹)·id to 1.5 → 2.
		{"fp16 tie", []float32{127 * (1 + u), 1.5 * (1 + u)},
			q8Block(0x3C00, 127, 2), []float32{127, 2}},
	}
	for _, c := range cases {
		x := make([]float32, QK)
		copy(x, c.x)
		got := make([]byte, blockBytesQ8_0)
		QuantizeQ8_0(got, x)
		if !bytes.Equal(got, c.want) {
			t.Errorf("%s: Q8_0 bytes\n got % x\nwant % x", c.name, got, c.want)
			continue
		}
		dec := make([]float32, QK)
		DequantizeQ8_0(dec, got)
		for j := range dec {
			want := float32(0)
			if j < len(c.back) {
				want = c.back[j]
			}
			if dec[j] != want || math.Signbit(float64(dec[j])) {
				if !(want < 0 && dec[j] == want) {
					t.Errorf("%s: decoded[%d] = %v, want %v", c.name, j, dec[j], want)
				}
			}
		}
	}
}

func q4Block(d uint16, codes [QK]uint8) []byte {
	b := binary.LittleEndian.AppendUint16(nil, d)
	for j := 0; j < QK/2; j++ {
		b = append(b, codes[j]|codes[j+QK/2]<<4)
	}
	return b
}

func TestQ4_0HandMadeBlocks(t *testing.T) {
	// All zeros: max = 0, d = 0/-8 = -0 (fp16 0x8000), id = 0, every code
	// trunc(0+8.5) = 8: bytes 0x88; decoded (8-8)·(-0) = -0.
	x := make([]float32, QK)
	got := make([]byte, blockBytesQ4_0)
	QuantizeQ4_0(got, x)
	want := append([]byte{0x00, 0x80}, bytes.Repeat([]byte{0x88}, 16)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("zeros: got % x want % x", got, want)
	}
	dec := make([]float32, QK)
	DequantizeQ4_0(dec, got)
	for j, v := range dec {
		if v != 0 || !math.Signbit(float64(v)) {
			t.Fatalf("zeros: decoded[%d] = %v (sign %v), want -0", j, v, math.Signbit(float64(v)))
		}
	}

	type elem struct {
		j    int
		x    float32
		code uint8
		back float32
	}
	cases := []struct {
		name  string
		d     uint16
		elems []elem
	}{
		// Negative signed max -8 first: d = -8/-8 = 1, id = 1, code =
		// trunc(x+8.5): -8→0, a later +8 (equal magnitude, not taken as
		// max)→16→15 (decodes to 7), halves round up: 0.5→9, -0.5→8,
		// 1.5→10, -1.5→7. Element j sits in byte j's low nibble, j+16 in
		// byte j's high nibble.
		{"negative max", 0x3C00, []elem{
			{0, -8, 0, -8}, {16, 8, 15, 7}, {1, 0.5, 9, 1}, {17, -0.5, 8, 0},
			{2, 1.5, 10, 2}, {18, -1.5, 7, -1}, {3, 7, 15, 7}, {19, -7, 1, -7}}},
		// Positive signed max 8 first: d = 8/-8 = -1 (fp16 0xBC00),
		// id = -1: 8→trunc(0.5)=0 (decodes to 8), a later -8→15 (decodes
		// to -7), 0.5→-0.5+8.5=8 (decodes to -0), -0.5→9 (decodes to -1).
		{"positive max", 0xBC00, []elem{
			{0, 8, 0, 8}, {16, -8, 15, -7}, {1, 0.5, 8, 0}, {17, -0.5, 9, -1},
			{2, 3, 5, 3}, {18, -3, 11, -3}}},
		// max = -8(1+2⁻¹¹): d = 1+2⁻¹¹, halfway between two halves, stored
		// as 1.0 (ties to even). id = fl(1/(1+2⁻¹¹)) = 1-2⁻¹¹+2⁻²², so the
		// max maps to -8(1+2⁻³³) → -8 in float32 → code 0.
		{"fp16 tie", 0x3C00, []elem{{5, -8 * (1 + float32(math.Ldexp(1, -11))), 0, -8}}},
	}
	for _, c := range cases {
		x := make([]float32, QK)
		var codes [QK]uint8
		for j := range codes {
			codes[j] = 8 // zeros: trunc(0·id + 8.5)
		}
		for _, e := range c.elems {
			x[e.j] = e.x
			codes[e.j] = e.code
		}
		got := make([]byte, blockBytesQ4_0)
		QuantizeQ4_0(got, x)
		if want := q4Block(c.d, codes); !bytes.Equal(got, want) {
			t.Errorf("%s: Q4_0 bytes\n got % x\nwant % x", c.name, got, want)
			continue
		}
		DequantizeQ4_0(dec, got)
		for _, e := range c.elems {
			if dec[e.j] != e.back {
				t.Errorf("%s: decoded[%d] = %v, want %v", c.name, e.j, dec[e.j], e.back)
			}
		}
	}
}

// TestQuantRoundTripBounds checks random blocks against the error bound
// each format promises (half a step; Q4_0 clamps the far end to 7 steps)
// and that a tensor reads back through Float32.
func TestQuantRoundTripBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, 8*QK)
	for i := range x {
		x[i] = float32(r.NormFloat64()) * float32(math.Ldexp(1, r.IntN(20)-10))
	}
	for _, dt := range []DType{Q8_0, Q4_0} {
		tt, err := TensorAs("w", []int{4, 2 * QK}, x, dt)
		if err != nil {
			t.Fatal(err)
		}
		if err := tt.Validate(); err != nil {
			t.Fatal(err)
		}
		back, err := tt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		for b := 0; b < len(x)/QK; b++ {
			var amax float32
			for _, v := range x[b*QK : b*QK+QK] {
				amax = max(amax, abs32(v))
			}
			steps := float32(127)
			if dt == Q4_0 {
				steps = 8
			}
			step := amax / steps
			for j := b * QK; j < b*QK+QK; j++ {
				lim := step*0.51 + amax*1e-3 // half a step, plus the fp16 scale's rounding
				if dt == Q4_0 {
					lim = step*1.01 + amax*1e-3 // the clamped end loses a whole step
				}
				if d := abs32(back[j] - x[j]); d > lim {
					t.Fatalf("%s: value %d: %v decoded as %v (error %v > %v)", dt, j, x[j], back[j], d, lim)
				}
			}
		}
	}
	if _, err := TensorAs("w", []int{2, 20}, make([]float32, 40), Q4_0); err == nil {
		t.Error("Q4_0 rows of 20 values accepted")
	}
}
