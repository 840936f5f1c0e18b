package autograd

import (
	"fmt"
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

// randVar returns a Var of the given shape filled with N(0, 1) values.
func randVar(g *tensor.RNG, trainable bool, shape ...int) *Var {
	return Param(fmt.Sprint(shape), tensor.New(shape...).Normal(g, 0, 1), trainable)
}

// checkGrad runs GradCheck as a subtest.
func checkGrad(t *testing.T, name string, inputs []*Var, f func(tp *Tape) *Var) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		worst, err := GradCheck(inputs, f)
		if err != nil {
			t.Error(err)
		}
		t.Logf("worst error/tolerance %.3f", worst)
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
	if _, err := GradCheck([]*Var{x}, square(1)); err != nil {
		t.Fatalf("correct gradient rejected: %v", err)
	}
	if _, err := GradCheck([]*Var{x}, square(1.05)); err == nil {
		t.Error("gradient 5% off was accepted")
	}
	if _, err := GradCheck([]*Var{x}, square(0)); err == nil {
		t.Error("missing gradient was accepted")
	}
}
