package bitfit_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/bitfit"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/train"
)

func logits(t *testing.T, m *llama.Model) []float32 {
	ids := []int{1, 4, 5, 6, 7, 8}
	h, err := m.Forward(nil, llama.Input{IDs: ids, Batch: 1, T: len(ids)})
	if err != nil {
		t.Fatal(err)
	}
	return m.Logits(nil, h).Value.Data
}

func trainAdapter(t *testing.T, c *bitfit.Config) string {
	t.Helper()
	pm := peft.Wrap(methodtest.TinyBase(t))
	if _, err := pm.AddAdapter(peft.DefaultAdapter, bitfit.New(c)); err != nil {
		t.Fatal(err)
	}
	exs := methodtest.Examples(8)
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.LR, cfg.Schedule, cfg.Warmup = 3, 2, 5e-2, "constant", 0
	if _, err := (&train.Run{Model: pm, Train: exs, OutputDir: t.TempDir(), Config: cfg}).Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "a")
	if err := pm.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// BitFit's biases merge into a Hugging Face LLaMA with attention_bias and
// mlp_bias, which gopeft loads back computing what the adapter computed.
func TestMergeIntoHFWithBiases(t *testing.T) {
	dir := trainAdapter(t, bitfit.NewConfig())
	pm := peft.Wrap(methodtest.TinyBase(t))
	base := logits(t, pm.Base)
	if _, err := pm.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	applied := logits(t, pm.Base)
	merged, err := pm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "merged")
	if err := llama.SaveHF(merged, out); err != nil {
		t.Fatal(err)
	}
	back, err := llama.Load(out, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !back.Config.AttentionBias || !back.Config.MLPBias || back.Layers[0].Q.Bias == nil {
		t.Fatalf("merged model: attention_bias %v, mlp_bias %v", back.Config.AttentionBias, back.Config.MLPBias)
	}
	got := logits(t, back)
	moved := 0.0
	for i := range got {
		moved = math.Max(moved, math.Abs(float64(applied[i]-base[i])))
		if math.Abs(float64(got[i]-applied[i])) > 1e-4 {
			t.Fatalf("logit %d: reloaded merged model %v, adapter %v", i, got[i], applied[i])
		}
	}
	if moved < 1e-4 {
		t.Fatal("training did not move the biases: the test proves nothing")
	}
}

// BEFT is saved in PEFT's layout: <module>.beft_bias [1, out] on v_proj.
func TestBeftLayout(t *testing.T) {
	dir := trainAdapter(t, bitfit.NewBeftConfig())
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	want := "base_model.model.model.layers.1.self_attn.v_proj.beft_bias"
	if len(ts) != 2 || ts[want] == nil || ts[want].Shape[0] != 1 || ts[want].Shape[1] != 8 {
		t.Fatalf("BEFT file holds %d tensors; %s: %v", len(ts), want, ts[want])
	}
	pm := peft.Wrap(methodtest.TinyBase(t))
	m, err := peft.ReadMethod(dir)
	if err != nil || m.Config().Base().PeftType != "BEFT" {
		t.Fatalf("read back: %v %v", m, err)
	}
	if _, err := pm.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
}
