package quant

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/tensor/kernels"
)

// TestNearestCode: on random tensors of many lengths, every code is the
// nearest code book entry to its scaled value (or, on a tie, the lower),
// and dequantization is book[code]*scale.
func TestNearestCode(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, typ := range []Type{NF4, FP4} {
		bk := books[typ]
		for _, n := range []int{1, 2, 63, 64, 65, 127, 128, 300, 1001} {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(rng.NormFloat64()) * 0.02
			}
			q := Quantize4(typ, x, []int{n}, false)
			if len(q.Packed) != (n+1)/2 || len(q.Absmax) != (n+63)/64 {
				t.Fatalf("%s n=%d: %d bytes, %d absmax", typ, n, len(q.Packed), len(q.Absmax))
			}
			deq := q.Dequantize(nil)
			for e, v := range x {
				b := e / 64
				am := max(q.Absmax[b], minAbsmax)
				s := v / am
				c := q.Code(e)
				d := math.Abs(float64(bk.code[c] - s))
				for o, cv := range bk.code {
					if do := math.Abs(float64(cv - s)); do < d-1e-6 {
						t.Fatalf("%s n=%d e=%d: code %d (%g) for %g, but %d (%g) is nearer", typ, n, e, c, bk.code[c], s, o, cv)
					}
				}
				if deq[e] != bk.code[c]*q.Absmax[b] {
					t.Fatalf("%s n=%d e=%d: dequant %g != book*absmax", typ, n, e, deq[e])
				}
			}
			if n%2 == 1 && q.Packed[n/2]&15 != bk.zero {
				t.Errorf("%s n=%d: padding nibble %d, want %d", typ, n, q.Packed[n/2]&15, bk.zero)
			}
		}
	}
}

// TestDoubleQuantError: double quantization changes each scale by at most
// half a step of the dynamic map around its value (relative 1/2 of the
// map's spacing, under 1% for values near the block's absmax).
func TestDoubleQuantError(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	x := make([]float32, 64*600+17)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) * 0.02
	}
	q := Quantize4(NF4, x, []int{len(x)}, false)
	dq := Quantize4(NF4, x, []int{len(x)}, true)
	s := dq.Scales()
	for i, a := range q.Absmax {
		if d := math.Abs(float64(s[i] - a)); d > 0.01*float64(a)+1e-4 {
			t.Fatalf("block %d: absmax %g, double-quantized %g", i, a, s[i])
		}
	}
}

func TestBlockwise8RoundTrip(t *testing.T) {
	x := []float32{0, 1, -1, 0.5, -0.25, 3, 0.001, -2}
	q := QuantizeBlockwise8(x, DynamicMap(), 4)
	d := q.Dequantize(nil)
	for i := range x {
		if math.Abs(float64(d[i]-x[i])) > 0.02*math.Abs(float64(x[i]))+1e-3 {
			t.Errorf("x[%d] = %g comes back as %g", i, x[i], d[i])
		}
	}
	if q.Absmax[0] != 1 || q.Absmax[1] != 3 {
		t.Errorf("absmax %v", q.Absmax)
	}
}

func TestInt8(t *testing.T) {
	w := []float32{
		1, -0.5, 0.25, 0, // absmax 1: 127, -63.5→-64 (even), 31.75→32, 0
		0, 0, 0, 0, // zero row
		-4, 2, 1.0 / 127 * 4 * 0.5, 3, // 0.5·4/127 scaled: 0.5, ties to 0
	}
	q := QuantizeInt8(w, 3, 4)
	want := []int8{127, -64, 32, 0, 0, 0, 0, 0, -127, 64, 0, 95}
	for i := range want {
		if q.CB[i] != want[i] {
			t.Errorf("CB[%d] = %d, want %d", i, q.CB[i], want[i])
		}
	}
	if q.SCB[0] != 1 || q.SCB[1] != 0 || q.SCB[2] != 4 {
		t.Errorf("SCB %v", q.SCB)
	}
	d := q.Dequantize(nil)
	for i := range w {
		want := float32(float32(q.CB[i])*q.SCB[i/4]) * float32(7.874015718698502e-3)
		if d[i] != want {
			t.Errorf("dequant[%d] = %g, want %g", i, d[i], want)
		}
		if math.Abs(float64(d[i]-w[i])) > float64(q.SCB[i/4])/254*1.001 {
			t.Errorf("dequant[%d] = %g, input %g: more than half a step", i, d[i], w[i])
		}
	}
}

func TestRoundFloat16(t *testing.T) {
	for _, c := range []struct{ in, want float32 }{
		{1, 1}, {1 + 1.0/2048, 1}, {1 + 3.0/2048, 1 + 2.0/1024}, // ties to even
		{65504, 65504}, {65519, 65504}, {65520, float32(math.Inf(1))},
		{-0.1, -0.0999755859375}, {5.96e-8, 5.9604645e-8}, {2.9e-8, 0}, {3.0e-8, 5.9604645e-8},
	} {
		if got := RoundFloat16(c.in); got != c.want {
			t.Errorf("RoundFloat16(%g) = %g, want %g", c.in, got, c.want)
		}
	}
}

func TestPyFloat(t *testing.T) {
	for _, c := range []struct {
		f    float64
		want string
	}{
		{2.5, "2.5"}, {0, "0.0"}, {1, "1.0"}, {0.05236532539129257, "0.05236532539129257"},
		{1.7014117331926443e+38, "1.7014117331926443e+38"}, {1e-05, "1e-05"}, {0.0001, "0.0001"},
		{1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {-0.00017, "-0.00017"}, {123.25, "123.25"},
		{float64(float32(0.1)), "0.10000000149011612"},
	} {
		if got := pyFloat(c.f); got != c.want {
			t.Errorf("pyFloat(%v) = %s, want %s", c.f, got, c.want)
		}
	}
}

// TestFromStateDictErrors: each way a checkpoint can contradict itself is
// refused with an error naming the tensor and what was found.
func TestFromStateDictErrors(t *testing.T) {
	x := make([]float32, 3*100)
	for i := range x {
		x[i] = float32(i%17) - 8
	}
	const name = "model.layers.3.self_attn.q_proj"
	good := func(double bool) map[string]Raw { return Quantize4(NF4, x, []int{3, 100}, double).StateDict() }
	js := func(s string) Raw { return Raw{DType: "U8", Shape: []int{len(s)}, Data: []byte(s)} }
	const stKey = "weight.quant_state.bitsandbytes__nf4"
	cases := []struct {
		what   string
		double bool
		edit   func(sd map[string]Raw)
		want   []string
	}{
		{"shape contradicts the weight", false, func(sd map[string]Raw) {
			sd[stKey] = js(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [3, 101]}`)
		}, []string{name + ".weight", "shape [3 101]"}},
		{"blocksize 128", false, func(sd map[string]Raw) {
			sd[stKey] = js(`{"quant_type": "nf4", "blocksize": 128, "dtype": "float32", "shape": [3, 100]}`)
		}, []string{name + "." + stKey, "blocksize 128"}},
		{"unknown quant_type", false, func(sd map[string]Raw) {
			sd[stKey] = js(`{"quant_type": "int4", "blocksize": 64, "dtype": "float32", "shape": [3, 100]}`)
		}, []string{name + "." + stKey, `"int4"`}},
		{"type differs from the key", false, func(sd map[string]Raw) {
			sd[stKey] = js(`{"quant_type": "fp4", "blocksize": 64, "dtype": "float32", "shape": [3, 100]}`)
		}, []string{stKey, `"fp4"`}},
		{"unknown key", false, func(sd map[string]Raw) {
			sd[stKey] = js(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [3, 100], "scale": 2}`)
		}, []string{stKey, `"scale"`}},
		{"unknown state suffix", false, func(sd map[string]Raw) {
			sd["weight.quant_state.bitsandbytes__int4"] = sd[stKey]
			delete(sd, stKey)
		}, []string{"bitsandbytes__int4"}},
		{"absmax count", false, func(sd map[string]Raw) {
			sd["weight.absmax"] = rawF32(make([]float32, 4), 4)
		}, []string{name + ".weight.absmax", "want 5 elements"}},
		{"absmax not finite", false, func(sd map[string]Raw) {
			sd["weight.absmax"] = rawF32([]float32{1, 1, float32(math.NaN()), 1, 1}, 5)
		}, []string{name + ".weight.absmax", "NaN"}},
		{"quant map of the other type", false, func(sd map[string]Raw) {
			c := FP4.Code()
			sd["weight.quant_map"] = rawF32(c[:], 16)
		}, []string{name + ".weight.quant_map", "entry 0"}},
		{"missing absmax", false, func(sd map[string]Raw) { delete(sd, "weight.absmax") }, []string{name + ".weight.absmax", "missing"}},
		{"nested without nested state", false, func(sd map[string]Raw) {
			sd["weight.nested_absmax"] = rawF32([]float32{1}, 1)
		}, []string{name + ".weight.nested_absmax"}},
		{"nested blocksize", true, func(sd map[string]Raw) {
			sd[stKey] = js(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [3, 100], "nested_blocksize": 64, "nested_dtype": "float32", "nested_offset": 1.5}`)
		}, []string{stKey, "nested_blocksize 64"}},
		{"nested offset missing", true, func(sd map[string]Raw) {
			sd[stKey] = js(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [3, 100], "nested_blocksize": 256, "nested_dtype": "float32"}`)
		}, []string{stKey, "incomplete"}},
		{"nested absmax as float", true, func(sd map[string]Raw) {
			sd["weight.absmax"] = rawF32(make([]float32, 5), 5)
		}, []string{name + ".weight.absmax", "dtype F32, want U8"}},
		{"nested map unsorted", true, func(sd map[string]Raw) {
			m := DynamicMap()
			m[3], m[4] = m[4], m[3]
			sd["weight.nested_quant_map"] = rawF32(m[:], 256)
		}, []string{name + ".weight.nested_quant_map", "sorted"}},
		{"bytes short", false, func(sd map[string]Raw) {
			w := sd["weight"]
			w.Data = w.Data[:10]
			sd["weight"] = w
		}, []string{name + ".weight", "bytes"}},
	}
	for _, c := range cases {
		sd := good(c.double)
		if _, err := FromStateDict(name, sd); err != nil {
			t.Fatalf("%s: the unedited state dict fails: %v", c.what, err)
		}
		c.edit(sd)
		_, err := FromStateDict(name, sd)
		if err == nil {
			t.Errorf("%s: accepted", c.what)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.what, err, w)
			}
		}
	}
}

// FuzzParseQuantState: the parser never panics, and whatever it accepts
// re-serializes to JSON it accepts again with the same meaning.
func FuzzParseQuantState(f *testing.F) {
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [64, 172]}`))
	f.Add([]byte(`{"quant_type": "fp4", "blocksize": 64, "dtype": "bfloat16", "shape": [16385], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.05210122466087341}`))
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [2, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 1.7014117331926443e+38}`))
	f.Add([]byte(`{"shape": [1e400], "blocksize": 6.4e1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseQuantState("w.quant_state.bitsandbytes__nf4", data)
		if err != nil {
			return
		}
		s2, err := ParseQuantState("w.quant_state.bitsandbytes__nf4", s.JSON())
		if err != nil {
			t.Fatalf("re-serialized state %s rejected: %v", s.JSON(), err)
		}
		if string(s2.JSON()) != string(s.JSON()) {
			t.Fatalf("round trip changed %s into %s", s.JSON(), s2.JSON())
		}
	})
}

// TestMatrix: the kernels' view dequantizes to what Dequantize gives, with
// and without double quantization, and GemmQ4 through it equals Gemm on
// the dequantized weight bit for bit.
func TestMatrix(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	// Enough rows for the blocked path (below, decode batches take the
	// row-invariant GEMVs, which group sums differently for 4-bit weights).
	const out, in, m = 33, 70, kernels.RowInvariantRows + 5
	w := make([]float32, out*in)
	for i := range w {
		w[i] = float32(rng.NormFloat64()) * 0.02
	}
	x := make([]float32, m*in)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for _, double := range []bool{false, true} {
		q := Quantize4(FP4, w, []int{out, in}, double)
		mat, err := q.Matrix()
		if err != nil {
			t.Fatal(err)
		}
		want := q.Dequantize(nil)
		got := make([]float32, len(want))
		mat.Dequantize(got)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("double=%v: element %d: %g, want %g", double, i, got[i], want[i])
			}
		}
		y1, y2 := make([]float32, m*out), make([]float32, m*out)
		kernels.GemmQ4(true, m, out, in, x, in, mat, y1, out, false)
		kernels.Gemm(false, true, m, out, in, x, in, want, in, y2, out, false)
		for i := range y1 {
			if math.Float32bits(y1[i]) != math.Float32bits(y2[i]) {
				t.Fatalf("double=%v: y[%d] = %g, Gemm gives %g", double, i, y1[i], y2[i])
			}
		}
	}
	if _, err := Quantize4(NF4, w, []int{out * in}, false).Matrix(); err == nil {
		t.Error("a 1-D tensor gave a matrix")
	}
}
