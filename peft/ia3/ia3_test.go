package ia3

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
)

// The golden adapter (targets q_proj, o_proj, up_proj; up_proj feed-forward)
// gives PyTorch PEFT's loss, logits and gradients.
func TestGolden(t *testing.T) {
	g := methodtest.LoadGolden(t, "ia3")
	pm := methodtest.BaseModel(t)
	a, err := pm.LoadAdapter(g.Dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	methodtest.CheckLogits(t, pm.Base, g)
	methodtest.CheckLossAndGrads(t, pm, a, g)
}

// A file in PEFT's layout with a key this version does not know loads, and
// the key is written back.
func TestLoadsUnknownKey(t *testing.T) {
	g := methodtest.LoadGolden(t, "ia3")
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(g.Dir, peft.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg = []byte(strings.Replace(string(cfg), "{", `{"some_future_key": [1, 2],`, 1))
	w, err := os.ReadFile(filepath.Join(g.Dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, peft.ConfigFile), cfg, 0o644)
	os.WriteFile(filepath.Join(dir, peft.WeightsFile), w, 0o644)
	pm := methodtest.BaseModel(t)
	if _, err := pm.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	methodtest.CheckLogits(t, pm.Base, g)
	out := t.TempDir()
	if err := pm.SaveAdapter(out, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(out, peft.ConfigFile))
	if !strings.Contains(string(b), "some_future_key") {
		t.Error("the unknown key was not written back")
	}
}

// A fresh adapter with the golden's settings is saved with PEFT's names,
// shapes and config keys.
func TestSavedLayout(t *testing.T) {
	g := methodtest.LoadGolden(t, "ia3")
	pm := methodtest.BaseModel(t)
	c := NewConfig()
	c.TargetModules = peft.ModuleList("q_proj", "o_proj", "up_proj")
	c.FeedforwardModules = peft.ModuleList("up_proj")
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	methodtest.CheckLayout(t, pm, peft.DefaultAdapter, g, "target_modules", "feedforward_modules", "init_ia3_weights", "fan_in_fan_out", "peft_type", "task_type")
}

// PEFT's LLaMA defaults: k_proj, v_proj, down_proj; down_proj scales its input.
func TestDefaults(t *testing.T) {
	pm := methodtest.SmallModel(t)
	a, err := pm.AddAdapter(peft.DefaultAdapter, New(NewConfig()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := pm.Base.Config
	want := cfg.NumHiddenLayers * (2*cfg.KVDim() + cfg.IntermediateSize)
	if _, n := a.Params.Count(); n != want {
		t.Errorf("%d trainable values, want %d", n, want)
	}
	for _, p := range a.Params {
		s := p.Var.Value.Shape
		if strings.HasSuffix(p.Name, "down_proj.ia3_l") != (s[0] == 1) {
			t.Errorf("%s has shape %v", p.Name, s)
		}
	}
}

func TestGradCheck(t *testing.T) {
	pm := methodtest.SmallModel(t)
	c := NewConfig()
	c.TargetModules = peft.ModuleList("q_proj", "k_proj", "o_proj", "up_proj", "down_proj")
	c.FeedforwardModules = peft.ModuleList("up_proj", "down_proj")
	c.InitIA3Weights = false // random vectors: not the identity
	c.Seed = 3
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	methodtest.GradCheck(t, pm)
}

// Merged logits equal unmerged ones within 1e-4; unmerge and
// merge_and_unload too.
func TestMerge(t *testing.T) {
	g := methodtest.LoadGolden(t, "ia3")
	pm := methodtest.BaseModel(t)
	if _, err := pm.LoadAdapter(g.Dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	ids := g.Exp.Tokens[1]
	adapted := methodtest.Logits(t, pm.Base, ids)
	if err := pm.Merge(); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
		t.Errorf("merged logits differ from unmerged by %g", d)
	}
	if err := pm.Unmerge(); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
		t.Errorf("unmerged logits differ by %g", d)
	}
	m, err := pm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, m, ids)); d > 1e-4 {
		t.Errorf("merge_and_unload logits differ by %g", d)
	}
	// In bfloat16 too (rounded, so a looser bound).
	pm = methodtest.BaseModel(t)
	pm.Base.ToBF16()
	if _, err := pm.LoadAdapter(g.Dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	adapted = methodtest.Logits(t, pm.Base, ids)
	if err := pm.Merge(); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, pm.Base, ids)); d > 0.3 {
		t.Errorf("bf16: merged logits differ from unmerged by %g", d)
	}
}

func TestBadConfig(t *testing.T) {
	c := NewConfig()
	err := peft.DecodeConfig([]byte(`{"target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}`), c, "x.json", false)
	if err == nil || !strings.Contains(err.Error(), "feedforward_modules") || !strings.Contains(err.Error(), "subset") {
		t.Errorf("feedforward_modules outside target_modules: %v", err)
	}
	pm := methodtest.SmallModel(t)
	c = NewConfig()
	c.TargetModules = peft.ModuleList("nothing")
	c.FeedforwardModules = peft.ModuleList()
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err == nil || !strings.Contains(err.Error(), "q_proj") {
		t.Errorf("no match: %v", err)
	}
}
