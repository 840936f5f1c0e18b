package autograd

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

// randVar returns a Var of the given shape filled with N(0, 1) values.
func randVar(g *tensor.RNG, trainable bool, shape ...int) *Var {
	return Param(fmt.Sprint(shape), tensor.New(shape...).Normal(g, 0, 1), trainable)
}

// weightedSum is Σ out⊙r in float64: the scalar loss of a gradient check.
func weightedSum(out, r *tensor.Tensor) float64 {
	var s float64
	for i, v := range out.Data {
		s += float64(v) * float64(r.Data[i])
	}
	return s
}

// Gradient-check tolerances. The ops compute in float32; the loss Σ out⊙r
// is summed in float64. A central difference (L(x+h) − L(x−h))/2h with
// h = 1e-2 then carries float32 rounding of the outputs, about
// 6e-8·Σ|out⊙r|/h, and truncation h²/6·f⁽³⁾, both ≈ 1e-5 for these small
// O(1) inputs. A check passes when |numeric − analytic| ≤ atol +
// rtol·max|analytic| over the input, with atol = 1e-4 and rtol = 5e-4: the
// worst case observed over every test here is under 0.1 of that (run -v to
// see each check's worst ratio), while an error in a gradient formula (a wrong
// factor, a missed term, a wrong index) moves elements by O(1e-2..1) and
// fails; TestGradCheckCatchesWrongGradient shows a 5% error is caught.
// gcWorst is the largest |numeric − analytic|/tolerance seen (reported by -v).
var gcWorst float64

const (
	gcStep = 1e-2
	gcAtol = 1e-4
	gcRtol = 5e-4
)

// gradCheck compares the gradients that f's backward gives every trainable
// input with central finite differences of the loss Σ f(inputs)⊙R for a fixed
// random R, and returns an error naming the first elements that disagree.
// f builds the graph on the tape it is given (nil for the plain forward
// evaluations).
func gradCheck(inputs []*Var, f func(tp *Tape) *Var) error {
	g := tensor.NewRNG(99)
	out := f(nil).Value
	r := tensor.New(out.Shape...).Normal(g, 0, 1)
	for _, in := range inputs {
		in.Grad = nil
	}
	tp := NewTape()
	tp.BackwardFrom(f(tp), r)
	var errs []string
	for k, in := range inputs {
		if !in.RequiresGrad() {
			continue
		}
		var ana []float32
		if in.Grad != nil {
			ana = in.Grad.Data
		}
		var scale float64
		for _, a := range ana {
			scale = math.Max(scale, math.Abs(float64(a)))
		}
		tol := gcAtol + gcRtol*scale
		x := in.Value.Data
		for i := range x {
			old := x[i]
			x[i] = old + gcStep
			lp := weightedSum(f(nil).Value, r)
			x[i] = old - gcStep
			lm := weightedSum(f(nil).Value, r)
			x[i] = old
			num := (lp - lm) / (2 * gcStep)
			var a float64
			if ana != nil {
				a = float64(ana[i])
			}
			if worst := math.Abs(num-a) / tol; worst > gcWorst {
				gcWorst = worst
			}
			if math.Abs(num-a) > tol || math.IsNaN(a) {
				errs = append(errs, fmt.Sprintf("input %d %v element %d: analytic %.6g numeric %.6g (tol %.3g)", k, in.Value.Shape, i, a, num, tol))
				if len(errs) >= 5 {
					return fmt.Errorf("%s", strings.Join(errs, "\n"))
				}
			}
		}
	}
	if errs != nil {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// checkGrad runs gradCheck as a subtest.
func checkGrad(t *testing.T, name string, inputs []*Var, f func(tp *Tape) *Var) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		gcWorst = 0
		if err := gradCheck(inputs, f); err != nil {
			t.Error(err)
		}
		t.Logf("worst error/tolerance %.3f", gcWorst)
	})
}

// The checker must be able to fail: a square op whose backward is off by 5%
// or forgets an input must be reported.
func TestGradCheckCatchesWrongGradient(t *testing.T) {
	g := tensor.NewRNG(1)
	x := randVar(g, true, 3, 4)
	square := func(factor float32) func(tp *Tape) *Var {
		return func(tp *Tape) *Var {
			out := tensor.New(x.Value.Shape...)
			for i, v := range x.Value.Data {
				out.Data[i] = v * v
			}
			return tp.Result(out, func(o *Var) {
				for i, v := range x.Value.Data {
					x.GradBuf().Data[i] += factor * 2 * v * o.Grad.Data[i]
				}
			}, x)
		}
	}
	if err := gradCheck([]*Var{x}, square(1)); err != nil {
		t.Fatalf("correct gradient rejected: %v", err)
	}
	if gradCheck([]*Var{x}, square(1.05)) == nil {
		t.Error("gradient 5% off was accepted")
	}
	if gradCheck([]*Var{x}, square(0)) == nil {
		t.Error("missing gradient was accepted")
	}
}
