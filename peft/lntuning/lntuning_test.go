package lntuning_test

import (
	"testing"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lntuning"
)

// Only the RMSNorm weights train, under PEFT's ln_tuning_layers names, and
// a saved adapter loads back into a fresh base's norms.
func TestOnlyNormsTrain(t *testing.T) {
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000}
	m, _ := llama.NewRandom(cfg, 5)
	pm := peft.Wrap(m)
	a, err := pm.AddAdapter(peft.DefaultAdapter, lntuning.New(lntuning.NewConfig()))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Params) != 5 || a.Params[0].Name != "base_model.model.model.layers.0.input_layernorm.ln_tuning_layers.weight" {
		t.Fatalf("params: %d, first %s", len(a.Params), a.Params[0].Name)
	}
	for _, p := range m.Params() {
		isNorm := p.Var.Value.Numel() == 16 && len(p.Var.Value.Shape) == 1
		if p.Var.RequiresGrad() != isNorm {
			t.Errorf("%s trainable = %v", p.Name, p.Var.RequiresGrad())
		}
	}
	m.Norm.Weight.Value.Data[3] = 7
	dir := t.TempDir()
	if err := pm.Save(dir); err != nil {
		t.Fatal(err)
	}
	m2, _ := llama.NewRandom(cfg, 5)
	if _, err := peft.Wrap(m2).LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	if m2.Norm.Weight.Value.Data[3] != 7 {
		t.Error("the loaded adapter did not set the norm's weight")
	}
}
