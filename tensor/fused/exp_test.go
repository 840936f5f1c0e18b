package fused

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Exp against float64 math.Exp over the range softmax uses, in ulps.
func TestExp(t *testing.T) {
	worst := 0.0
	for x := float32(-87.3); x < 88.7; x += 0.0137 {
		got, want := float64(Exp(x)), math.Exp(float64(x))
		ulp := float64(float32(want)) - float64(math.Nextafter32(float32(want), 0))
		if e := math.Abs(got-want) / ulp; e > worst {
			worst = e
		}
	}
	if worst > 2 {
		t.Errorf("worst error %.2f ulp, want ≤ 2", worst)
	}
	for _, c := range []struct{ x, want float32 }{
		{float32(math.Inf(-1)), 0}, {-200, 0}, {0, 1}, {1, float32(math.E)}, {float32(math.Inf(1)), float32(math.Inf(1))},
	} {
		if got := Exp(c.x); got != c.want {
			t.Errorf("Exp(%v) = %v, want %v", c.x, got, c.want)
		}
	}
	if !math.IsNaN(float64(Exp(float32(math.NaN())))) {
		t.Error("Exp(NaN) is not NaN")
	}
}

func BenchmarkExp(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) / 256
	}
	var s float32
	b.ResetTimer()
	for range b.N {
		for _, v := range x {
			s += Exp(v)
		}
	}
	_ = s
}

func BenchmarkMathExp(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) / 256
	}
	var s float32
	b.ResetTimer()
	for range b.N {
		for _, v := range x {
			s += float32(math.Exp(float64(v)))
		}
	}
	_ = s
}

// ExpTo must give Exp's bits lane for lane, whatever the length (the last
// block runs masked), so that chunking never changes results.
func TestExpToMatchesExp(t *testing.T) {
	specials := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 88.72283, 88.7228, 88.72284, 88.5, 89, -87.33654, -87.3365, -87.33655,
		-100, 100, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e-30, -1e-30, 0.34657359, -0.34657359, 44.3614, -44.3614}
	var xs []float32
	xs = append(xs, specials...)
	for x := float32(-90); x < 90; x += 0.00731 {
		xs = append(xs, x)
	}
	same := func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b) }
	for n := 0; n <= 40; n++ { // every tail length, with specials in every lane
		src := make([]float32, n)
		for i := range src {
			src[i] = specials[(i+n)%len(specials)]
		}
		dst := make([]float32, n+1)
		dst[n] = 7
		ExpTo(dst[:n], src)
		for i, x := range src {
			if !same(dst[i], Exp(x)) {
				t.Fatalf("n=%d: ExpTo(%v) = %v, Exp gives %v", n, x, dst[i], Exp(x))
			}
		}
		if dst[n] != 7 {
			t.Fatalf("n=%d: ExpTo wrote past the end", n)
		}
	}
	got := append([]float32(nil), xs...)
	ExpTo(got, got) // in place
	for i, x := range xs {
		if !same(got[i], Exp(x)) {
			t.Fatalf("ExpTo(%v) = %v (%#x), Exp gives %v (%#x)", x, got[i], math.Float32bits(got[i]), Exp(x), math.Float32bits(Exp(x)))
		}
	}
}

func BenchmarkExpTo(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) / 256
	}
	y := make([]float32, len(x))
	for range b.N {
		ExpTo(y, x)
	}
}

// sigmoidTo gives 1/(1+Exp(-x))'s bits whatever the length.
func TestSigmoidToMatchesScalar(t *testing.T) {
	xs := []float32{0, 1, -1, 20, -20, 87.4, -87.4, 88.8, -88.8, 100, -100, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e-20, 3.3, -7.7}
	for x := float32(-95); x < 95; x += 0.0173 {
		xs = append(xs, x)
	}
	for _, n := range []int{0, 1, 5, 15, 16, 17, 33, len(xs)} {
		got := make([]float32, n)
		sigmoidTo(got, xs[:n])
		for i, x := range xs[:n] {
			want := 1 / (1 + Exp(-x))
			if math.Float32bits(got[i]) != math.Float32bits(want) && !(got[i] != got[i] && want != want) {
				t.Fatalf("n=%d: sigmoid(%v) = %v, scalar %v", n, x, got[i], want)
			}
		}
	}
}

// softmaxRow (AVX-512 where present) must give softmaxRowGo's bits: the
// same max, the same lane-wise float64 sum folded in the same order, the same
// probabilities, for every length and with masked (−Inf) scores.
func TestSoftmaxRowMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	negInf := float32(math.Inf(-1))
	for n := 1; n <= 300; n += 1 + n/8 {
		for trial := 0; trial < 4; trial++ {
			row := make([]float32, n)
			for j := range row {
				row[j] = float32(r.NormFloat64() * 30)
				if trial == 1 && j%3 == 0 {
					row[j] = negInf
				}
				if trial == 2 {
					row[j] = negInf
				}
			}
			a, b := append([]float32(nil), row...), append([]float32(nil), row...)
			ma, sa := softmaxRow(a, 0.144)
			mb, sb := softmaxRowGo(b, 0.144)
			if math.Float32bits(ma) != math.Float32bits(mb) || math.Float64bits(sa) != math.Float64bits(sb) {
				t.Fatalf("n=%d trial %d: max/sum %v/%v, Go gives %v/%v", n, trial, ma, sa, mb, sb)
			}
			if trial == 2 || (trial == 1 && n == 1) { // every score masked
				if sa != 0 || !math.IsInf(float64(ma), -1) {
					t.Fatalf("all masked: max %v sum %v", ma, sa)
				}
				continue
			}
			var total float64
			for j := range a {
				if math.Float32bits(a[j]) != math.Float32bits(b[j]) {
					t.Fatalf("n=%d trial %d: p[%d] = %v, Go gives %v", n, trial, j, a[j], b[j])
				}
				total += float64(a[j])
			}
			if math.Abs(total-1) > 1e-5 {
				t.Fatalf("n=%d trial %d: probabilities sum to %v", n, trial, total)
			}
		}
	}
}

// expSumTo and rowMax (AVX-512 where present) give expSumGo's and
// rowMaxGo's bits for every length, with and without storing the
// exponentials, with masked (−Inf) entries and with values past Exp's
// limits; the lane sum stays within float64 rounding of the plain sum.
func TestExpSumMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	negInf := float32(math.Inf(-1))
	for n := 1; n <= 600; n += 1 + n/6 {
		for trial := 0; trial < 3; trial++ {
			x := make([]float32, n)
			for j := range x {
				x[j] = float32(r.NormFloat64() * 40)
				if trial == 1 && j%4 == 1 {
					x[j] = negInf
				}
			}
			m := rowMaxGo(x)
			if got := rowMax(x); math.Float32bits(got) != math.Float32bits(m) {
				t.Fatalf("n=%d trial %d: rowMax %v, Go %v", n, trial, got, m)
			}
			// A NaN is never the maximum, wherever it lies (the last
			// element of a lane included), even among −Inf.
			for _, fill := range []float32{negInf, 1} {
				y := append([]float32(nil), x...)
				for j := range y {
					if fill == negInf {
						y[j] = negInf
					}
				}
				y[n-1] = float32(math.NaN())
				if got, want := rowMax(y), rowMaxGo(y); math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("n=%d trial %d: rowMax with a NaN %v, Go %v", n, trial, got, want)
				}
			}
			if trial == 2 {
				m -= 100 // some exponentials overflow to +Inf
			}
			want := expSumGo(nil, x, m)
			if got := expSumTo(nil, x, m); math.Float64bits(got) != math.Float64bits(want) {
				t.Fatalf("n=%d trial %d: sum %v, Go %v", n, trial, got, want)
			}
			a, b := make([]float32, n), append([]float32(nil), x...)
			sa, sb := expSumTo(a, x, m), expSumGo(b, b, m) // b in place
			if math.Float64bits(sa) != math.Float64bits(want) || math.Float64bits(sb) != math.Float64bits(want) {
				t.Fatalf("n=%d trial %d: storing, sums %v and %v, want %v", n, trial, sa, sb, want)
			}
			var plain float64
			for j, v := range x {
				e := Exp(v - m)
				if math.Float32bits(a[j]) != math.Float32bits(e) || math.Float32bits(b[j]) != math.Float32bits(e) {
					t.Fatalf("n=%d trial %d: exp[%d] = %v / %v, want %v", n, trial, j, a[j], b[j], e)
				}
				plain += float64(e)
			}
			if trial < 2 && math.Abs(want-plain) > 1e-12*plain {
				t.Fatalf("n=%d trial %d: lane sum %v, plain sum %v", n, trial, want, plain)
			}
		}
	}
}

// swigluMul and swigluGrad (AVX-512 where present) give the Go loops' bits
// for every length, with either gradient left out.
func TestSwiGLUKernelsMatchGo(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	vec := func(n int) []float32 { return normalVec(r, n, 3) }
	same := func(a, b []float32) bool {
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				return false
			}
		}
		return true
	}
	for n := 1; n <= 300; n += 1 + n/5 {
		gate, up, dout := vec(n), vec(n), vec(n)
		s := make([]float32, n)
		sigmoidTo(s, gate)
		a, b := make([]float32, n), make([]float32, n)
		swigluMul(a, gate, up, s)
		swigluMulGo(b, gate, up, s)
		if !same(a, b) {
			t.Fatalf("n=%d: swigluMul differs from Go", n)
		}
		for _, skip := range []string{"", "dgate", "dup"} {
			dg0, du0 := vec(n), vec(n)
			dg1, du1 := append([]float32(nil), dg0...), append([]float32(nil), du0...)
			pick := func(dg, du []float32) ([]float32, []float32) {
				switch skip {
				case "dgate":
					return nil, du
				case "dup":
					return dg, nil
				}
				return dg, du
			}
			x0, y0 := pick(dg0, du0)
			x1, y1 := pick(dg1, du1)
			swigluGrad(x0, y0, dout, gate, up, s)
			swigluGradGo(x1, y1, dout, gate, up, s)
			if !same(dg0, dg1) || !same(du0, du1) {
				t.Fatalf("n=%d, without %q: swigluGrad differs from Go", n, skip)
			}
		}
	}
}

// TestRoPEHalfKernelMatchesGo checks the AVX-512 half-rotate kernel against
// ropeHalfGo bit for bit: every head width up to 80 (masked tails), both
// signs (forward, backward), writing and accumulating, in place and not.
func TestRoPEHalfKernelMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	vec := func(n int) []float32 { return normalVec(r, n, 3) }
	for half := 1; half <= 40; half++ {
		cos, sin := vec(half), vec(half)
		for _, sign := range []float32{1, -1} {
			for _, acc := range []bool{false, true} {
				for _, inPlace := range []bool{false, true} {
					x := vec(2 * half)
					a, b := vec(2*half), []float32(nil)
					if inPlace {
						a = append([]float32(nil), x...)
					}
					b = append(b, a...)
					xa, xb := x, x
					if inPlace {
						xa, xb = a, b
					}
					ropeHalf(a, xa, cos, sin, sign, acc)
					ropeHalfGo(b, xb, cos, sin, sign, acc)
					for i := range a {
						if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
							t.Fatalf("half=%d sign=%v acc=%v inPlace=%v: element %d is %v, Go gives %v", half, sign, acc, inPlace, i, a[i], b[i])
						}
					}
				}
			}
		}
	}
}

// BenchmarkRoPE is one stories110M layer's q rotation at 4×256 tokens
// (1024 rows of 12 heads of 64), forward and backward, in each style.
func BenchmarkRoPE(b *testing.B) {
	const rows, heads, hd = 1024, 12, 64
	r := rand.New(rand.NewPCG(1, 2))
	vec := func(n int) []float32 { return normalVec(r, n, 1) }
	x, dy, dx := vec(rows*heads*hd), vec(rows*heads*hd), make([]float32, rows*heads*hd)
	y := make([]float32, len(x))
	cos, sin := vec(rows*hd/2), vec(rows*hd/2)
	for _, half := range []bool{true, false} {
		name := "half"
		if !half {
			name = "interleaved"
		}
		b.Run(name, func(b *testing.B) {
			for range b.N {
				RoPEForward(y, x, cos, sin, rows, heads, hd, half)
				RoPEBackward(dx, dy, cos, sin, rows, heads, hd, half)
			}
		})
	}
}

// normalVec is n draws from N(0, sd²) as float32.
func normalVec(r *rand.Rand, n int, sd float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * sd)
	}
	return v
}
