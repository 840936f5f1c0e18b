package train

import (
	"math"
	"testing"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/parallel"
)

func TestClipGradNorm(t *testing.T) {
	a := param("a", []float32{0, 0}, []float32{3, 4}, true)
	b := param("b", []float32{0}, []float32{12}, true)
	c := param("c", []float32{0}, nil, true) // no gradient: counts as zero
	ps := nn.Params{a, b, c, {Name: "a.tied", Var: a.Var}}
	if n := GradNorm(ps); n != 13 {
		t.Fatalf("GradNorm = %v, want 13 (√(9+16+144), tied weight once)", n)
	}
	if n := ClipGradNorm(ps, 20); n != 13 || a.Var.Grad.Data[0] != 3 {
		t.Fatalf("ClipGradNorm(20) = %v and changed gradients to %v", n, a.Var.Grad.Data)
	}
	if n := ClipGradNorm(ps, 0); n != 13 || b.Var.Grad.Data[0] != 12 {
		t.Fatalf("ClipGradNorm(0) = %v and changed gradients", n)
	}
	if n := ClipGradNorm(ps, 6.5); n != 13 {
		t.Fatalf("ClipGradNorm returned %v, want the pre-clip norm 13", n)
	}
	coef := 6.5 / (13 + 1e-6)
	near(t, "clipped a[0]", float64(a.Var.Grad.Data[0]), 3*coef, 1e-7)
	near(t, "clipped b[0]", float64(b.Var.Grad.Data[0]), 12*coef, 1e-7)
	near(t, "norm after clipping", GradNorm(ps), 6.5, 1e-6)
}

func TestNonFinite(t *testing.T) {
	big := make([]float32, 3*chunkElems)
	big[2*chunkElems+5] = float32(math.Inf(-1))
	ps := nn.Params{
		param("ok", []float32{1}, []float32{1}, true),
		param("bad", make([]float32, len(big)), big, true),
		param("nan", []float32{1}, []float32{float32(math.NaN())}, true),
	}
	if name, ok := NonFiniteGrad(ps); !ok || name != "bad" {
		t.Errorf("NonFiniteGrad = %q, %v; want \"bad\", true", name, ok)
	}
	if name, ok := NonFiniteGrad(ps[:1]); ok {
		t.Errorf("NonFiniteGrad of finite gradients found %q", name)
	}
	norm := ClipGradNorm(ps, 1)
	if IsFinite(norm) {
		t.Errorf("norm with Inf and NaN gradients = %v", norm)
	}
	if ps[0].Var.Grad.Data[0] != 1 {
		t.Error("clipping touched gradients although the norm is not finite")
	}
	if !IsFinite(1) || IsFinite(math.Inf(1)) || IsFinite(math.NaN()) {
		t.Error("IsFinite is wrong")
	}
}

// TestGradNormDeterministic: the norm of a multi-segment tensor is the same
// bits on 1 and 4 threads and equals a plain float64 sum to rounding.
func TestGradNormDeterministic(t *testing.T) {
	rng := tensor.NewRNG(11)
	ps := nn.Params{randParam("x", rng, 200, 1001), randParam("y", rng, 3, 3)}
	norms := map[int]float64{}
	for _, th := range []int{1, 4} {
		old := parallel.SetThreads(th)
		norms[th] = GradNorm(ps)
		parallel.SetThreads(old)
	}
	if math.Float64bits(norms[1]) != math.Float64bits(norms[4]) {
		t.Fatalf("GradNorm differs with threads: %v vs %v", norms[1], norms[4])
	}
	var sum float64
	for _, p := range ps {
		for _, g := range p.Var.Grad.Data {
			sum += float64(g) * float64(g)
		}
	}
	near(t, "GradNorm", norms[1], math.Sqrt(sum), 1e-12)

	ScaleGrads(ps, 0.5)
	near(t, "GradNorm after ScaleGrads(0.5)", GradNorm(ps), math.Sqrt(sum)/2, 1e-12)
}
