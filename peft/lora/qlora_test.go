package lora

import (
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
)

// QLoRA: LoRA trained over an NF4 (double-quantized) base is a plain PEFT
// LoRA adapter: saved from the quantized model, it loads on the float32
// base with the same config and identical tensors, and its gradients over
// the quantized base are those over the dequantized one. A merge into the
// quantized base is refused by name.
func TestQLoRAAdapterLoadsOnFloat32Base(t *testing.T) {
	hf := shared.Path(t, "golden/stories260K/hf")
	base, err := llama.Load(hf, llama.LoadOptions{Quant: quant.KindNF4, DoubleQuant: true})
	if err != nil {
		t.Fatal(err)
	}
	pm := peft.Wrap(base)
	a, err := pm.LoadAdapter(shared.Path(t, "golden/stories260K/lora"), peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range a.Params {
		p.Var.SetTrainable(true)
	}
	// One training step's gradients, over the quantized base and over its
	// dequantized copy.
	in := methodtest.Batch([][]int{{1, 403, 407, 261, 378, 1, 2, 9}, {1, 9, 200, 17, 300, 8, 31, 12}})
	grads := func(m *llama.Model, ps nn.Params) [][]float32 {
		tp := autograd.NewTape()
		loss, err := m.Loss(&nn.Pass{Tape: tp, Training: true}, in, llama.LMLabels(in))
		if err != nil {
			t.Fatal(err)
		}
		tp.Backward(loss)
		var g [][]float32
		for _, p := range ps {
			if p.Var.Grad == nil {
				t.Fatalf("%s got no gradient", p.Name)
			}
			g = append(g, append([]float32(nil), p.Var.Grad.Data...))
			p.Var.ZeroGrad()
		}
		return g
	}
	gq := grads(base, a.Params)
	for _, p := range base.Params() {
		if p.Var.Grad != nil {
			t.Fatalf("frozen base tensor %s (%v) got a gradient", p.Name, p.Var.Value.DType())
		}
	}
	if err := pm.Merge(); err == nil || !strings.Contains(err.Error(), "quantized") {
		t.Fatalf("merge into the quantized base: got %v, want a refusal", err)
	}
	dir := filepath.Join(t.TempDir(), "qlora")
	if err := pm.Save(dir); err != nil {
		t.Fatal(err)
	}
	base.Dequantize(false)
	gd := grads(base, a.Params)
	for i := range gq {
		for j := range gq[i] {
			if d := math.Abs(float64(gq[i][j] - gd[i][j])); d > 1e-5*(1+math.Abs(float64(gd[i][j]))) {
				t.Fatalf("%s[%d]: gradient %g over the NF4 base, %g over its dequantized copy", a.Params[i].Name, j, gq[i][j], gd[i][j])
			}
		}
	}

	f32 := methodtest.BaseModel(t)
	b, err := f32.LoadAdapter(dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatalf("the QLoRA adapter does not load on the float32 base: %v", err)
	}
	var gcfg, ocfg map[string]any
	methodtest.ReadJSON(t, filepath.Join(shared.Path(t, "golden/stories260K/lora"), peft.ConfigFile), &gcfg)
	methodtest.ReadJSON(t, filepath.Join(dir, peft.ConfigFile), &ocfg)
	for k, v := range gcfg {
		if k != "inference_mode" && !reflect.DeepEqual(v, ocfg[k]) {
			t.Errorf("adapter_config.json key %q: %v, PEFT's golden adapter has %v", k, ocfg[k], v)
		}
	}
	for i, p := range a.Params {
		if q := b.Params[i]; p.Name != q.Name || !reflect.DeepEqual(p.Var.Value.Data, q.Var.Value.Data) {
			t.Errorf("%s differs after loading on the float32 base", p.Name)
		}
	}
}

// Gradients of LoRA factors and of the activations through every
// quantized base storage against finite differences, on a model whose
// Linear rows are narrower than a 4-bit block (blocks cross rows).
func TestQLoRAGradCheck(t *testing.T) {
	for _, kind := range []quant.Kind{quant.KindNF4, quant.KindInt8} { // fp4 runs nf4's kernels with another code book
		pm := smallModel(t)
		if err := pm.Base.Quantize(kind, kind != quant.KindInt8); err != nil {
			t.Fatal(err)
		}
		cfg := &Config{}
		if err := peft.DecodeConfig([]byte(`{"r":4,"lora_alpha":8,"target_modules":["q_proj","down_proj","o_proj"]}`), cfg, "test", true); err != nil {
			t.Fatal(err)
		}
		a, err := pm.AddAdapter("q", New(cfg))
		if err != nil {
			t.Fatal(err)
		}
		g := tensor.NewRNG(9)
		var inputs []*autograd.Var
		for _, p := range a.Params {
			p.Var.Value.Normal(g, 0, 0.3) // B too: a non-zero update
			inputs = append(inputs, p.Var)
		}
		in := llama.Input{IDs: []int{1, 4, 7, 3, 1, 9, 5, 2}, Batch: 2, T: 4}
		worst, err := autograd.GradCheckModel(inputs, func(tp *autograd.Tape) *autograd.Var {
			h, err := pm.Base.Forward(&nn.Pass{Tape: tp}, in)
			if err != nil {
				t.Fatal(err)
			}
			return h
		})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		t.Logf("%s: worst %.3f of tolerance", kind, worst)
	}
}

// DoRA over a quantized base (QDoRA): the row norms read the 4- and 8-bit
// weights' rows dequantized, so the loss and the gradients of A, B and the
// magnitudes are those over the dequantized float32 base, within float32
// rounding of the same sums (the few-row products take the GEMV paths).
func TestQDoRAMatchesDequantizedBase(t *testing.T) {
	for _, kind := range []quant.Kind{quant.KindNF4, quant.KindInt8} {
		pm := smallModel(t)
		if err := pm.Base.Quantize(kind, kind == quant.KindNF4); err != nil {
			t.Fatal(err)
		}
		m := New(doraConfig(2, "q_proj", "v_proj", "down_proj"))
		a, err := pm.AddAdapter(peft.DefaultAdapter, m)
		if err != nil {
			t.Fatal(err)
		}
		perturbMagnitudes(m)
		g := tensor.NewRNG(3)
		for _, p := range a.Params {
			if strings.Contains(p.Name, "lora_B") {
				p.Var.Value.Normal(g, 0, 0.2) // a non-zero update, so the norms depend on B·A
			}
		}
		in := methodtest.Batch([][]int{{1, 3, 5, 7, 9, 2}, {1, 8, 6, 4, 2, 3}})
		run := func() []float32 {
			tp := autograd.NewTape()
			loss, err := pm.Base.Loss(&nn.Pass{Tape: tp, Training: true}, in, llama.LMLabels(in))
			if err != nil {
				t.Fatal(err)
			}
			tp.Backward(loss)
			out := []float32{loss.Value.Data[0]}
			for _, p := range a.Params {
				out = append(out, p.Var.Grad.Data...)
				p.Var.ZeroGrad()
			}
			return out
		}
		q := run()
		pm.Base.Dequantize(false)
		f := run()
		for i := range q {
			if d := math.Abs(float64(q[i] - f[i])); d > 1e-5*(1+math.Abs(float64(f[i]))) || math.IsNaN(float64(q[i])) {
				t.Fatalf("%s: value %d (0: the loss) is %g over the quantized base, %g over its dequantized copy", kind, i, q[i], f[i])
			}
		}
	}
}

// PiSSA and OLoRA rewrite the base weight as a residual: over a quantized
// base they are refused by layer and init, as PEFT refuses them.
func TestPiSSAOverQuantizedBaseRefused(t *testing.T) {
	for _, init := range []string{"pissa", "olora"} {
		pm := smallModel(t)
		if err := pm.Base.Quantize(quant.KindNF4, false); err != nil {
			t.Fatal(err)
		}
		cfg := &Config{}
		js := fmt.Sprintf(`{"r":2,"lora_alpha":4,"target_modules":["q_proj"],"init_lora_weights":%q}`, init)
		if err := peft.DecodeConfig([]byte(js), cfg, "test", true); err != nil {
			t.Fatal(err)
		}
		_, err := pm.AddAdapter(peft.DefaultAdapter, New(cfg))
		if err == nil || !strings.Contains(err.Error(), "q_proj") || !strings.Contains(err.Error(), init) || !strings.Contains(err.Error(), "4-bit") {
			t.Errorf("%s over an NF4 base: %v", init, err)
		}
	}
}
