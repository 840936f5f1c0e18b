// Package goldencheck compares a PEFT method's forward and backward on
// stories260K with the reference values in
// ../shared/golden/stories260K/methods/<method> (see its README): the
// logits of the first sequence, the loss over both, and the gradient of
// every tensor of the adapter file. Tests of the method packages use it.
package goldencheck

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
)

// Expected is a method's expected.json.
type Expected struct {
	Tokens        [][]int     `json:"tokens"`
	Loss          float64     `json:"loss"`
	AdapterLogits [][]float32 `json:"adapter_logits"`
}

// Dir is the golden folder of a method ("dora", "adalora").
func Dir(t testing.TB, method string) string {
	return shared.Path(t, filepath.Join("golden/stories260K/methods", method))
}

// Model loads the golden stories260K base, wrapped for adapters.
func Model(t testing.TB) *peft.Model {
	t.Helper()
	base, err := llama.Load(shared.Path(t, "golden/stories260K/hf"), llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return peft.Wrap(base)
}

// Read reads a method's expected.json.
func Read(t testing.TB, dir string) Expected {
	t.Helper()
	var e Expected
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// Batch is the golden sequences as one input.
func (e Expected) Batch() llama.Input {
	in := llama.Input{Batch: len(e.Tokens), T: len(e.Tokens[0])}
	for _, s := range e.Tokens {
		in.IDs = append(in.IDs, s...)
	}
	return in
}

// Check runs pm (with the golden adapter loaded and active) on the golden
// tokens: logits within 1e-4, the loss within 1e-4 and the gradient of
// each params tensor (by save name) within 1e-3 of its tensor's largest
// golden element. Every tensor of grads.safetensors must be in params.
func Check(t *testing.T, pm *peft.Model, dir string, params nn.Params) {
	t.Helper()
	e := Read(t, dir)
	first := llama.Input{IDs: e.Tokens[0], Batch: 1, T: len(e.Tokens[0])}
	h, err := pm.Base.Forward(nil, first)
	if err != nil {
		t.Fatal(err)
	}
	logits := pm.Base.Logits(nil, h).Value
	var worst float64
	for i, row := range e.AdapterLogits {
		for j, w := range row {
			worst = math.Max(worst, math.Abs(float64(w-logits.Data[i*logits.Cols()+j])))
		}
	}
	if worst > 1e-4 || len(e.AdapterLogits) != logits.Rows() {
		t.Errorf("logits: max |diff| %g over %d rows (golden %d rows), want ≤ 1e-4", worst, logits.Rows(), len(e.AdapterLogits))
	}
	in := e.Batch()
	tp := autograd.NewTape()
	loss, err := pm.Base.Loss(&nn.Pass{Tape: tp, Training: true}, in, llama.LMLabels(in))
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(float64(loss.Value.Data[0]) - e.Loss); d > 1e-4 {
		t.Errorf("loss %v, golden %v (|diff| %g > 1e-4)", loss.Value.Data[0], e.Loss, d)
	}
	tp.Backward(loss)
	grads, _, err := format.ReadSafetensors(filepath.Join(dir, "grads.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if len(grads) != len(params) {
		t.Errorf("golden has %d gradients, the adapter %d tensors", len(grads), len(params))
	}
	for _, p := range params {
		g, ok := grads[p.Name]
		if !ok {
			t.Errorf("no golden gradient for %s", p.Name)
			continue
		}
		want, err := g.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if p.Var.Grad == nil {
			t.Errorf("%s has no gradient", p.Name)
			continue
		}
		if len(want) != len(p.Var.Grad.Data) {
			t.Errorf("%s: gradient has %d elements, golden %d", p.Name, len(p.Var.Grad.Data), len(want))
			continue
		}
		var scale, diff float64
		for i, w := range want {
			scale = math.Max(scale, math.Abs(float64(w)))
			diff = math.Max(diff, math.Abs(float64(w-p.Var.Grad.Data[i])))
		}
		if diff > 1e-3*scale {
			t.Errorf("%s: max |grad - golden| %g > 1e-3 × %g", p.Name, diff, scale)
		}
	}
	for _, p := range pm.Base.Params() {
		if p.Var.Grad != nil {
			t.Errorf("frozen base tensor %s got a gradient", p.Name)
		}
	}
}
