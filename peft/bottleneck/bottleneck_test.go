package bottleneck

import (
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/tensor"
)

func add(t *testing.T, json string) (*peft.Model, *peft.Adapter) {
	t.Helper()
	c := NewConfig()
	if err := peft.DecodeConfig([]byte(json), c, "test", true); err != nil {
		t.Fatal(err)
	}
	c.Seed = 9
	pm := methodtest.SmallModel(t)
	a, err := pm.AddAdapter(peft.DefaultAdapter, New(c))
	if err != nil {
		t.Fatal(err)
	}
	return pm, a
}

// Gradients of every adapter tensor, for each architecture (bert
// initialisation: not the identity), against finite differences.
func TestGradCheck(t *testing.T) {
	for _, js := range []string{
		`{"architecture": "double_seq_bn", "reduction_factor": 4}`,
		`{"architecture": "seq_bn", "reduction_factor": 4, "non_linearity": "tanh"}`,
		`{"architecture": "par_bn", "init_weights": "bert", "scaling": "learned", "non_linearity": "swish"}`,
		`{"architecture": "par_bn", "init_weights": "bert", "scaling": 2, "non_linearity": "tanh"}`,
	} {
		t.Run(js, func(t *testing.T) {
			pm, _ := add(t, js)
			methodtest.GradCheck(t, pm)
		})
	}
}

// ReLU's gradient, away from its kink (a model-level finite difference
// steps across it: the bottleneck's pre-activations are tiny).
func TestReluGrad(t *testing.T) {
	x := autograd.Param("x", tensor.FromData([]float32{-1, 0.5, 2, -0.3, 0.7, -2}, 2, 3), true)
	if _, err := autograd.GradCheck([]*autograd.Var{x}, func(tp *autograd.Tape) *autograd.Var { return Relu(tp, x) }); err != nil {
		t.Error(err)
	}
}

// The Adapters library's names and shapes; placement per architecture.
func TestLayout(t *testing.T) {
	_, a := add(t, `{"architecture": "double_seq_bn"}`)
	var names []string
	for _, p := range a.Params {
		names = append(names, p.Name)
	}
	sort.Strings(names)
	if len(names) != 16 || names[0] != "model.layers.0.attention_adapters.adapters.default.adapter_down.0.bias" ||
		names[7] != "model.layers.0.output_adapters.adapters.default.adapter_up.weight" {
		t.Errorf("names %v", names)
	}
	for _, p := range a.Params {
		if strings.HasSuffix(p.Name, "adapter_down.0.weight") && (p.Var.Value.Shape[0] != 1 || p.Var.Value.Shape[1] != 16) {
			t.Errorf("%s shape %v, want [16/16, 16]", p.Name, p.Var.Value.Shape)
		}
	}
	_, a = add(t, `{"architecture": "seq_bn"}`)
	if len(a.Params) != 8 || strings.Contains(a.Params[0].Name, "attention") {
		t.Errorf("Pfeiffer: %d tensors, first %s", len(a.Params), a.Params[0].Name)
	}
}

// par_bn starts as the identity (zero W_up); save → load reproduces the
// adapter; merging is refused by name.
func TestParallelIdentitySaveLoadNoMerge(t *testing.T) {
	pm := methodtest.SmallModel(t)
	ids := []int{1, 5, 3, 2}
	base := methodtest.Logits(t, pm.Base, ids)
	c := NewConfig()
	c.Architecture = Par
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(base, methodtest.Logits(t, pm.Base, ids)); d != 0 {
		t.Errorf("par_bn at initialisation changes the logits by %g", d)
	}
	pm, _ = add(t, `{"architecture": "seq_bn", "reduction_factor": 2}`)
	want := methodtest.Logits(t, pm.Base, ids)
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	pm2 := methodtest.SmallModel(t)
	if _, err := pm2.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(want, methodtest.Logits(t, pm2.Base, ids)); d != 0 {
		t.Errorf("reloaded adapter differs by %g", d)
	}
	if err := pm2.Merge(); err == nil || !strings.Contains(err.Error(), "BOTTLENECK adapters cannot be merged") {
		t.Errorf("merge: %v", err)
	}
	methodtest.CheckCacheAndPadding(t, pm2.Base)
}

func TestBadConfig(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"architecture": "lora"}`, "architecture"},
		{`{"non_linearity": "gelu_new"}`, "non_linearity"},
		{`{"architecture": "seq_bn", "scaling": 4}`, "scaling"},
		{`{"scaling": "big"}`, "scaling"},
	} {
		cfg := NewConfig()
		if err := peft.DecodeConfig([]byte(c.json), cfg, "x", true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.json, err)
		}
	}
}
