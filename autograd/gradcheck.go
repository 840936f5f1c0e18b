package autograd

import (
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/gopeft/tensor"
)

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

const (
	gcStep = 1e-2
	gcAtol = 1e-4
	gcRtol = 5e-4
)

// GradCheck compares the gradients that f's backward gives every trainable
// input with central finite differences of the loss Σ f(inputs)⊙R for a fixed
// random R, and returns an error naming the first elements that disagree,
// and the worst |numeric − analytic|/tolerance seen. f builds the graph on
// the tape it is given (nil for the plain forward evaluations) and must be
// deterministic. A new op, or a PEFT method's forward, is checked with it:
// keep inputs small (every element costs two forward runs) and O(1).
func GradCheck(inputs []*Var, f func(tp *Tape) *Var) (worst float64, err error) {
	return gradCheck(inputs, f, false, gcAtol, gcRtol)
}

// GradCheckModel is GradCheck for a whole model's output (a method's
// forward through a small LLaMA), which is far more curved than one op's:
// there a central difference at h = 1e-2 is off by several percent, while a
// smaller h drowns in the float32 rounding of every layer. The numeric
// gradient is Richardson's extrapolation (4·D(h/2) − D(h))/3 of central
// differences D at h = 1e-2 and 5e-3, whose error falls as h⁴. The float32
// rounding of a few hundred outputs leaves about 3e-4 of noise in it, so
// the tolerance is atol 1e-3 + rtol 2e-3·max|analytic|: a missed path or
// a wrong factor moves gradients by far more.
func GradCheckModel(inputs []*Var, f func(tp *Tape) *Var) (worst float64, err error) {
	return gradCheck(inputs, f, true, 1e-3, 2e-3)
}

func gradCheck(inputs []*Var, f func(tp *Tape) *Var, richardson bool, atol, rtol float64) (worst float64, err error) {
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
		tol := atol + rtol*scale
		x := in.Value.Data
		for i := range x {
			central := func(h float32) float64 {
				old := x[i]
				x[i] = old + h
				lp := weightedSum(f(nil).Value, r)
				x[i] = old - h
				lm := weightedSum(f(nil).Value, r)
				x[i] = old
				return (lp - lm) / (2 * float64(h))
			}
			num := central(gcStep)
			if richardson {
				num = (4*central(gcStep/2) - num) / 3
			}
			var a float64
			if ana != nil {
				a = float64(ana[i])
			}
			worst = math.Max(worst, math.Abs(num-a)/tol)
			if math.Abs(num-a) > tol || math.IsNaN(a) {
				errs = append(errs, fmt.Sprintf("input %d %v element %d: analytic %.6g numeric %.6g (tol %.3g)", k, in.Value.Shape, i, a, num, tol))
				if len(errs) >= 5 {
					return worst, fmt.Errorf("%s", strings.Join(errs, "\n"))
				}
			}
		}
	}
	if errs != nil {
		return worst, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return worst, nil
}
