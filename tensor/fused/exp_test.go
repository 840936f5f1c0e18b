package fused

import (
	"math"
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
