package train

import (
	"math"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// param makes a trainable (or frozen) parameter holding values, with a
// gradient when grad is non-nil.
func param(name string, values, grad []float32, trainable bool) nn.Param {
	v := autograd.Param(name, tensor.FromData(append([]float32(nil), values...), len(values)), trainable)
	if grad != nil {
		v.Grad = tensor.FromData(append([]float32(nil), grad...), len(grad))
	}
	return nn.Param{Name: name, Var: v}
}

// randParam makes a trainable [rows, cols] parameter with random values and
// gradient from rng.
func randParam(name string, rng *tensor.RNG, rows, cols int) nn.Param {
	v := autograd.Param(name, tensor.New(rows, cols).Normal(rng, 0, 1), true)
	v.Grad = tensor.New(rows, cols).Normal(rng, 0, 1)
	return nn.Param{Name: name, Var: v}
}

// near fails unless got is within tol·max(1, |want|) of want.
func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if d := math.Abs(got - want); !(d <= tol*math.Max(1, math.Abs(want))) {
		t.Errorf("%s = %.10g, want %.10g (diff %.3g)", what, got, want, d)
	}
}
