package full_test

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/full"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/train"
)

func tiny(t *testing.T, tied bool) *llama.Model {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, TieWordEmbeddings: tied, BOSTokenID: 1, EOSTokenID: 2}
	m, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// chosenConfig decodes a FULL config as a recipe would give it.
func chosenConfig(t *testing.T, js string) *full.Method {
	t.Helper()
	m := full.New()
	if err := peft.DecodeConfig([]byte(js), m.Config(), "test", true); err != nil {
		t.Fatal(err)
	}
	return m
}

func logits(t *testing.T, m *llama.Model) []float32 {
	t.Helper()
	ids := []int{1, 4, 5, 6, 7, 8}
	in := llama.Input{IDs: ids, Batch: 1, T: len(ids)}
	h, err := m.Forward(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	return m.Logits(nil, h).Value.Data
}

// Chosen-module tuning trains only the matched modules' entries and the
// rows/columns of the chosen heads (query head 3 of 4 with 2 kv heads
// reads kv head 1): the merged model differs from the base exactly there
// (no other entry moves, bitwise), the saved adapter holds only those
// entries, and loading it into a fresh base gives the trained logits.
func TestChosenModulesAndHeads(t *testing.T) {
	base := tiny(t, false)
	before := map[string][]float32{}
	for _, p := range base.Params() {
		before[p.Name] = append([]float32(nil), p.Var.Value.Data...)
	}
	m := chosenConfig(t, `{"peft_type": "FULL", "trainable_modules": "model\\.layers\\.\\d+\\.mlp\\.down_proj|lm_head",
		"layers_to_transform": [1], "trainable_heads": "0:3"}`)
	pm := peft.Wrap(base)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.LR, cfg.Schedule, cfg.Warmup = 3, 2, 1e-2, "constant", 0
	run := &train.Run{Model: pm, Train: methodtest.Examples(8), OutputDir: t.TempDir(), Fingerprint: "chosen", Config: cfg}
	if _, err := run.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	trained := logits(t, base)
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := pm.Save(dir); err != nil {
		t.Fatal(err)
	}
	if m.IsWhole() {
		t.Fatal("chosen modules saved as a whole model")
	}

	// layers_to_transform [1] keeps layer 1's down_proj, not layer 0's, and
	// not lm_head (no layer). Head 3, head_dim 4: q rows 12..15, k/v rows
	// 4..7 (kv head 1), o columns 12..15.
	hd, hidden, inter := 4, 16, 24
	want := map[string]func(r, c int) bool{
		"model.layers.1.mlp.down_proj.weight":    func(r, c int) bool { return true },
		"model.layers.0.self_attn.q_proj.weight": func(r, c int) bool { return r >= 3*hd && r < 4*hd },
		"model.layers.0.self_attn.k_proj.weight": func(r, c int) bool { return r >= hd && r < 2*hd },
		"model.layers.0.self_attn.v_proj.weight": func(r, c int) bool { return r >= hd && r < 2*hd },
		"model.layers.0.self_attn.o_proj.weight": func(r, c int) bool { return c >= 3*hd && c < 4*hd },
	}
	wantCount := hidden*inter + 4*hd*hidden // down_proj, then q, k, v rows and o columns

	fresh := tiny(t, false)
	pm2 := peft.Wrap(fresh)
	a, err := pm2.LoadAdapter(dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Params.Count(); n != wantCount {
		t.Fatalf("the adapter holds %d entries, want %d", n, wantCount)
	}
	for i, v := range logits(t, fresh) {
		if math.Abs(float64(v-trained[i])) > 1e-5 {
			t.Fatalf("logit %d is %v loaded, %v trained", i, v, trained[i])
		}
	}
	merged, err := pm2.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for _, p := range merged.Params() {
		w := p.Var.Value.Data
		in := p.Var.Value.Shape[len(p.Var.Value.Shape)-1]
		for i, v := range w {
			if math.Float32bits(v) == math.Float32bits(before[p.Name][i]) {
				continue
			}
			moved++
			if f := want[p.Name]; f == nil || !f(i/in, i%in) {
				t.Fatalf("%s[%d] changed: not a chosen entry", p.Name, i)
			}
		}
	}
	if moved == 0 || moved > wantCount {
		t.Fatalf("%d entries moved, %d chosen", moved, wantCount)
	}
	for i, v := range logits(t, merged) {
		if math.Abs(float64(v-trained[i])) > 1e-4 {
			t.Fatalf("merged logit %d is %v, trained %v", i, v, trained[i])
		}
	}
	var saved map[string]any
	cfgText, _ := json.Marshal(m.Config())
	_ = json.Unmarshal(cfgText, &saved)
	all, _ := base.Params().Count()
	if d := saved["density"].(float64); math.Abs(d-float64(wantCount)/float64(all)) > 1e-12 {
		t.Fatalf("density %v, want %d/%d", d, wantCount, all)
	}
}

// Bad input: a regex that matches nothing lists the modules, a head out of
// range names the key, a tied head is refused.
func TestChosenBadInput(t *testing.T) {
	for _, c := range []struct{ js, want string }{
		{`{"peft_type": "FULL", "trainable_modules": "nothing_here"}`, "q_proj"},
		{`{"peft_type": "FULL", "trainable_heads": "0:4"}`, "trainable_heads"},
		{`{"peft_type": "FULL", "trainable_heads": "2:0"}`, "trainable_heads"},
		{`{"peft_type": "FULL", "trainable_modules": ["lm_head"]}`, "tied"},
	} {
		pm := peft.Wrap(tiny(t, true))
		_, err := pm.AddAdapter(peft.DefaultAdapter, chosenConfig(t, c.js))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", c.js, err, c.want)
		}
	}
	m := full.New()
	if err := peft.DecodeConfig([]byte(`{"peft_type": "FULL", "trainable_heads": "0-3"}`), m.Config(), "test", true); err == nil || !strings.Contains(err.Error(), "LAYER:HEAD") {
		t.Errorf("a malformed head: %v", err)
	}
}

// The flags: --layers-to-transform is a list of ints, --trainable-heads a
// string the config parses.
func TestChosenFlags(t *testing.T) {
	reg, err := peft.Lookup("full")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]peft.Flag{}
	for _, f := range reg.Flags {
		names[f.Name] = f
	}
	v, err := names["layers-to-transform"].Value("0, 2")
	if err != nil || len(v.([]int)) != 2 || v.([]int)[1] != 2 {
		t.Fatalf("--layers-to-transform 0,2: %v %v", v, err)
	}
	if _, err := names["layers-to-transform"].Value("x"); err == nil {
		t.Fatal("--layers-to-transform x accepted")
	}
	hs, err := full.ParseHeads("0:1, 1:3")
	if err != nil || len(hs) != 2 || hs[1] != (full.Head{Layer: 1, Head: 3}) {
		t.Fatalf("heads %v %v", hs, err)
	}
}
