package ssf

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
)

func config(t *testing.T, js string) *Config {
	t.Helper()
	c := NewConfig()
	if err := peft.DecodeConfig([]byte(js), c, "test", true); err != nil {
		t.Fatal(err)
	}
	c.Seed = 4
	return c
}

// Gradients of every γ and β (the final norm's too) against finite
// differences.
func TestGradCheck(t *testing.T) {
	pm := methodtest.SmallModel(t)
	c := config(t, `{"init_std": 0.2}`) // far from the identity
	c.TargetModules = peft.ModuleList(append(DefaultTargets, "norm")...)
	a, err := pm.AddAdapter(peft.DefaultAdapter, New(c))
	if err != nil {
		t.Fatal(err)
	}
	cfg := pm.Base.Config
	want := 2 * (cfg.NumHiddenLayers*(cfg.QDim()+2*cfg.KVDim()+cfg.HiddenSize+2*cfg.IntermediateSize+cfg.HiddenSize+2*cfg.HiddenSize) + cfg.HiddenSize)
	if _, n := a.Params.Count(); n != want {
		t.Errorf("%d trainable values, want %d", n, want)
	}
	methodtest.GradCheck(t, pm)
}

// The saved names, shapes and keys; save → load reproduces the logits; the
// start is N(1, 0.02), N(0, 0.02).
func TestSaveLoad(t *testing.T) {
	pm := methodtest.SmallModel(t)
	a, err := pm.AddAdapter(peft.DefaultAdapter, New(config(t, `{}`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Params) != 2*9*pm.Base.Config.NumHiddenLayers {
		t.Errorf("%d tensors", len(a.Params))
	}
	var sd float64
	n := 0
	for _, p := range a.Params {
		mean := 0.0
		if strings.HasSuffix(p.Name, ScaleSuffix) {
			mean = 1
		}
		for _, v := range p.Var.Value.Data {
			sd += (float64(v) - mean) * (float64(v) - mean)
			n++
		}
	}
	if sd = sd / float64(n); sd < 0.015*0.015 || sd > 0.025*0.025 {
		t.Errorf("initial variance %g, want about 0.02²", sd)
	}
	ids := []int{1, 5, 3, 2, 7}
	want := methodtest.Logits(t, pm.Base, ids)
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"base_model.model.model.layers.1.self_attn.k_proj.ssf_scale", "base_model.model.model.layers.0.post_attention_layernorm.ssf_shift"} {
		if ts[name] == nil {
			t.Errorf("no tensor %s", name)
		}
	}
	if s := ts["base_model.model.model.layers.1.self_attn.k_proj.ssf_scale"].Shape; len(s) != 1 || s[0] != pm.Base.Config.KVDim() {
		t.Errorf("k_proj scale shape %v", s)
	}
	var cfg map[string]any
	methodtest.ReadJSON(t, filepath.Join(dir, peft.ConfigFile), &cfg)
	if cfg["peft_type"] != "SSF" || cfg["init_std"] != 0.02 {
		t.Errorf("config %v", cfg)
	}
	pm2 := methodtest.SmallModel(t)
	if _, err := pm2.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(want, methodtest.Logits(t, pm2.Base, ids)); d != 0 {
		t.Errorf("reloaded adapter differs by %g", d)
	}
	methodtest.CheckCacheAndPadding(t, pm2.Base)
}

// Merged logits equal unmerged ones within 1e-4 on the real stories260K
// (llama2.c's interleaved RoPE: SaveHF permutes q and k biases as it does
// their weights); the merged model saved as a Hugging Face directory has
// attention_bias and mlp_bias and loads back to the same logits; unmerge
// restores the base, biases gone.
func TestMerge(t *testing.T) {
	load := func() *peft.Model {
		m, err := llama.Load(shared.Path(t, "data/models/stories260K/stories260K.bin"), llama.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return peft.Wrap(m)
	}
	pm := load()
	ids := []int{1, 403, 407, 261, 378, 425, 13, 60}
	base := methodtest.Logits(t, pm.Base, ids)
	c := config(t, `{"init_std": 0.1}`)
	c.TargetModules = peft.ModuleList("q_proj", "k_proj", "o_proj", "up_proj", "down_proj", "input_layernorm", "post_attention_layernorm")
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	adapted := methodtest.Logits(t, pm.Base, ids)
	if d := methodtest.MaxAbsDiff(base, adapted); d < 1e-2 {
		t.Fatalf("the adapter changes the logits by only %g", d)
	}
	if err := pm.Merge(); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
		t.Errorf("merged logits differ from unmerged by %g", d)
	}
	if err := pm.Unmerge(); err != nil {
		t.Fatal(err)
	}
	pm.DisableAdapters()
	if d := methodtest.MaxAbsDiff(base, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
		t.Errorf("unmerged base differs from the original by %g", d)
	}
	for _, l := range pm.Base.Linears() {
		if l.Bias != nil {
			t.Errorf("%s kept a bias after unmerge", l.Name)
		}
	}
	pm.EnableAdapters()
	m, err := pm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, m, ids)); d > 1e-4 {
		t.Errorf("merge_and_unload logits differ by %g", d)
	}
	dir := t.TempDir()
	if err := llama.SaveHF(m, dir); err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	methodtest.ReadJSON(t, filepath.Join(dir, "config.json"), &cfg)
	if cfg["attention_bias"] != true || cfg["mlp_bias"] != true {
		t.Errorf("config.json: attention_bias %v, mlp_bias %v", cfg["attention_bias"], cfg["mlp_bias"])
	}
	m2, err := llama.Load(dir, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if m2.Layers[0].V.Bias == nil || m2.Layers[1].Gate.Bias == nil {
		t.Error("loaded model lacks the zero biases attention_bias/mlp_bias imply")
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, m2, ids)); d > 1e-4 {
		t.Errorf("saved and reloaded merged model differs by %g", d)
	}
	if err := llama.SaveLlama2c(m2, filepath.Join(t.TempDir(), "m.bin"), 512); err == nil || !strings.Contains(err.Error(), "bias") {
		t.Errorf("llama2.c save of a model with biases: %v", err)
	}
	// A config that says attention_bias without the tensors names one.
	raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	var all map[string]any
	json.Unmarshal(raw, &all)
	all["mlp_bias"] = false
	b, _ := json.Marshal(all)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	if _, err := llama.Load(dir, llama.LoadOptions{}); err == nil || !strings.Contains(err.Error(), "mlp.down_proj.bias") {
		t.Errorf("biases without mlp_bias: %v", err)
	}
}

// An SSF after the final norm or the LM head trains, but merging it is
// refused by name: its shift has nowhere to go.
func TestMergeRefusesFinalNorm(t *testing.T) {
	for _, target := range []string{"norm", "lm_head"} {
		pm := methodtest.SmallModel(t)
		c := config(t, `{}`)
		c.TargetModules = peft.ModuleList("q_proj", target)
		if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
			t.Fatal(err)
		}
		ids := []int{1, 4, 3}
		before := methodtest.Logits(t, pm.Base, ids)
		if err := pm.Merge(); err == nil || !strings.Contains(err.Error(), "bias") {
			t.Errorf("%s: merge: %v", target, err)
		}
		if d := methodtest.MaxAbsDiff(before, methodtest.Logits(t, pm.Base, ids)); d != 0 {
			t.Errorf("%s: a refused merge changed the model by %g", target, d)
		}
	}
}

func TestBadConfig(t *testing.T) {
	pm := methodtest.SmallModel(t)
	c := config(t, `{"target_modules": ["nothing"]}`)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err == nil || !strings.Contains(err.Error(), "target_modules") {
		t.Errorf("no targets: %v", err)
	}
	if err := peft.DecodeConfig([]byte(`{"init_std": -1}`), NewConfig(), "x", true); err == nil || !strings.Contains(err.Error(), "init_std") {
		t.Errorf("init_std: %v", err)
	}
}
