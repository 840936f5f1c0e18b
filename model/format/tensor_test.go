package format

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gopeft/gopeft/tensor/kernels"
)

func TestF16KnownValues(t *testing.T) {
	for _, c := range []struct {
		h uint16
		f float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, float32(math.Ldexp(1, -24))},
		{0x0400, float32(math.Ldexp(1, -14))}, {0x03ff, float32(math.Ldexp(1023, -24))},
		{0x3555, 0.333251953125}, {0x0000, 0}, {0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	} {
		if got := f16ToF32(c.h); got != c.f {
			t.Errorf("f16ToF32(%#04x) = %g, want %g", c.h, got, c.f)
		}
		if got := f32ToF16(c.f); got != c.h {
			t.Errorf("f32ToF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	if got := f16ToF32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("f16ToF32(0x8000) = %g, want -0", got)
	}
	if !math.IsNaN(float64(f16ToF32(0x7e00))) || f32ToF16(float32(math.NaN()))&0x7c00 != 0x7c00 || f32ToF16(float32(math.NaN()))&0x3ff == 0 {
		t.Error("NaN does not survive the conversions")
	}
	// Rounding: ties go to the even neighbour, overflow goes to infinity.
	for _, c := range []struct {
		f float64
		h uint16
	}{
		{1 + math.Ldexp(1, -11), 0x3c00},   // tie between 0x3c00 and 0x3c01: even
		{1 + 3*math.Ldexp(1, -11), 0x3c02}, // tie between 0x3c01 and 0x3c02: even
		{1 + math.Ldexp(1.5, -11), 0x3c01}, // above the tie
		{65519, 0x7bff}, {65520, 0x7c00}, {1e10, 0x7c00}, {-1e10, 0xfc00},
		{math.Ldexp(1, -25), 0x0000},    // tie between 0 and the smallest subnormal
		{math.Ldexp(1.5, -25), 0x0001},  // above it
		{math.Ldexp(1.5, -24), 0x0002},  // tie between subnormals 1 and 2: even
		{math.Ldexp(2047, -25), 0x0400}, // rounds up out of the subnormals
		{1e-30, 0},
	} {
		if got := f32ToF16(float32(c.f)); got != c.h {
			t.Errorf("f32ToF16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
}

func TestF16RoundTripAndNearest(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := f16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := f32ToF16(f); got != uint16(h) {
			t.Fatalf("f32ToF16(f16ToF32(%#04x)) = %#04x", h, got)
		}
	}
	// For random finite inputs inside the half range, no neighbour of the
	// result is closer.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		x := float32(math.Ldexp(rng.Float64()*2-1, rng.IntN(40)-26))
		h := f32ToF16(x)
		d := math.Abs(float64(f16ToF32(h)) - float64(x))
		for _, n := range []uint16{h - 1, h + 1} {
			if n&0x7c00 == 0x7c00 || (h&0x7fff == 0 && n&0x7fff == 0x7fff) {
				continue
			}
			if dn := math.Abs(float64(f16ToF32(n)) - float64(x)); dn < d {
				t.Fatalf("f32ToF16(%g) = %#04x (%g), but %#04x (%g) is closer", x, h, f16ToF32(h), n, f16ToF32(n))
			}
		}
	}
}

func TestTensorFloat32(t *testing.T) {
	want := []float32{1, -2.5, 0.15625, 3e-5, -7}
	var f32, f16, bf le
	for _, v := range want {
		f32.f32(v)
		h := f32ToF16(v)
		f16.u8(byte(h))
		f16.u8(byte(h >> 8))
		b := kernels.ToBF16(v)
		bf.u8(byte(b))
		bf.u8(byte(b >> 8))
	}
	check := func(dt DType, data []byte, tol float64) {
		t.Helper()
		got, err := (&Tensor{Name: "x", DType: dt, Shape: []int{5}, Data: data}).Float32()
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > tol*math.Abs(float64(want[i])) {
				t.Errorf("%s[%d] = %g, want %g", dt, i, got[i], want[i])
			}
		}
	}
	check(F32, f32.Bytes(), 0)
	check(F16, f16.Bytes(), 1.0/1024)
	check(BF16, bf.Bytes(), 1.0/128)

	// A hand-built Q8_0 block: scale 0.5 (0x3800), q[j] = j-16.
	var q le
	q.u8(0x00)
	q.u8(0x38)
	for j := 0; j < 32; j++ {
		q.u8(byte(int8(j - 16)))
	}
	got, err := (&Tensor{Name: "q", DType: Q8_0, Shape: []int{1, 32}, Data: q.Bytes()}).Float32()
	if err != nil {
		t.Fatal(err)
	}
	for j, v := range got {
		if v != float32(j-16)*0.5 {
			t.Fatalf("Q8_0[%d] = %g, want %g", j, v, float32(j-16)*0.5)
		}
	}
}

func TestTensorErrors(t *testing.T) {
	_, err := (&Tensor{Name: "w", DType: F32, Shape: []int{2, 3}, Data: make([]byte, 20)}).Float32()
	wantErr(t, err, `"w"`, "24 bytes", "has 20")
	_, err = (&Tensor{Name: "w", DType: "F17", Shape: []int{2}, Data: make([]byte, 8)}).Float32()
	wantErr(t, err, `"w"`, "F17")
	_, err = (&Tensor{Name: "w", DType: F32, Shape: []int{-1, 2}, Data: nil}).Float32()
	wantErr(t, err, `"w"`, "invalid shape")
	_, err = (&Tensor{Name: "w", DType: F32, Shape: []int{1 << 40, 1 << 40}, Data: nil}).Float32()
	wantErr(t, err, `"w"`, "invalid shape")
	_, err = (&Tensor{Name: "w", DType: Q8_0, Shape: []int{2, 16}, Data: make([]byte, 34)}).Float32()
	wantErr(t, err, `"w"`, "whole number of blocks")
	_, err = (&Tensor{Name: "w", DType: "Q4_K", Shape: []int{1, 256}, Data: make([]byte, 144)}).Float32()
	wantErr(t, err, `"w"`, "Q4_K", "cannot decode")
	_, err = (&Tensor{Name: "w", DType: "I32", Shape: []int{1}, Data: make([]byte, 4)}).BF16()
	wantErr(t, err, `"w"`, "I32")
}

func TestTensorBF16(t *testing.T) {
	vals := []uint16{0x3f80, 0xc020, 0x7f7f, 0x0001}
	tb := TensorFromBF16("b", []int{2, 2}, vals)
	got, err := tb.BF16()
	if err != nil {
		t.Fatal(err)
	}
	for i := range vals {
		if got[i] != vals[i] {
			t.Fatalf("BF16 round trip [%d] = %#x, want %#x", i, got[i], vals[i])
		}
	}
	f := []float32{1.00390625, -3.1415927, 1e-3}
	got, err = TensorFromF32("f", []int{3}, f).BF16()
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range f {
		if got[i] != kernels.ToBF16(v) {
			t.Errorf("BF16 of F32 %g = %#x, want %#x", v, got[i], kernels.ToBF16(v))
		}
	}
}

func TestQ8_0Quantize(t *testing.T) {
	// Values k/4 with max |k| = 127 give the exact scale 0.25, so every
	// value survives quantization exactly.
	exact := make([]float32, 64)
	for i := range exact {
		exact[i] = float32((i*37)%255-127) / 4
	}
	exact[5], exact[40] = 127.0/4, -127.0/4
	got, err := TensorQ8_0("e", []int{2, 32}, exact).Float32()
	if err != nil {
		t.Fatal(err)
	}
	for i := range exact {
		if got[i] != exact[i] {
			t.Fatalf("Q8_0 exact [%d] = %g, want %g", i, got[i], exact[i])
		}
	}
	// Random values: error bounded by half a step plus the float16
	// rounding of the scale.
	rng := rand.New(rand.NewPCG(3, 4))
	x := randF32(rng, 32*20)
	x[0] = 0 // an all-zero block would give scale 0: make one
	for i := 32; i < 64; i++ {
		x[i] = 0
	}
	tq := TensorQ8_0("r", []int{20, 32}, x)
	got, err = tq.Float32()
	if err != nil {
		t.Fatal(err)
	}
	for b := 0; b < 20; b++ {
		var amax float64
		for _, v := range x[32*b : 32*b+32] {
			amax = max(amax, math.Abs(float64(v)))
		}
		d := amax / 127
		d16 := float64(f16ToF32(uint16(tq.Data[34*b]) | uint16(tq.Data[34*b+1])<<8))
		bound := d/2 + 127*math.Abs(d16-d) + 1e-7
		for j := 32 * b; j < 32*b+32; j++ {
			if e := math.Abs(float64(got[j] - x[j])); e > bound {
				t.Fatalf("block %d elem %d: |%g - %g| = %g > %g", b, j, got[j], x[j], e, bound)
			}
		}
	}
}

func TestNumelAndByteSize(t *testing.T) {
	for _, c := range []struct {
		shape []int
		n     int
	}{{nil, 1}, {[]int{0, 5}, 0}, {[]int{2, 3, 4}, 24}, {[]int{-1}, -1}, {[]int{1 << 62, 4}, -1}} {
		if got := (&Tensor{Shape: c.shape}).Numel(); got != c.n {
			t.Errorf("Numel(%v) = %d, want %d", c.shape, got, c.n)
		}
	}
	for _, c := range []struct {
		dt   DType
		n    int
		size int
	}{{F32, 3, 12}, {BF16, 3, 6}, {"F4", 6, 3}, {"F6_E2M3", 8, 6}, {Q8_0, 64, 68}, {"Q4_K", 512, 288}, {"I64", 2, 16}} {
		if got, err := c.dt.ByteSize(c.n); err != nil || got != c.size {
			t.Errorf("%s.ByteSize(%d) = %d, %v; want %d", c.dt, c.n, got, err, c.size)
		}
	}
	_, err := DType("F4").ByteSize(3)
	wantErr(t, err, "F4", "blocks")
	_, err = DType("I64").ByteSize(1 << 61)
	wantErr(t, err, "overflows")
	_, err = DType("X").ByteSize(1)
	wantErr(t, err, `"X"`)
}
