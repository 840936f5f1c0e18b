package hybrid

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/eval/modellm"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/ia3"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/peft/prompttuning"
	"github.com/gopeft/gopeft/peft/ssf"
)

// small returns a hybrid config sized for the small test model, with
// nothing at an identity start: bert-initialised adapters, random LoRA
// factors, and random gate biases.
func small(t *testing.T, mam bool, js string) *Config {
	t.Helper()
	c := NewUniPELTConfig()
	if mam {
		c = NewMAMConfig()
	}
	c.PrefixTuning.NumVirtualTokens, c.PrefixTuning.EncoderHiddenSize = 3, 8
	if err := peft.DecodeConfig([]byte(js), c, "test", true); err != nil {
		t.Fatal(err)
	}
	c.Seed = 11
	return c
}

func attach(t *testing.T, pm *peft.Model, name string, c *Config) *peft.Adapter {
	t.Helper()
	a, err := pm.AddAdapter(name, New(c))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Gradients of every piece's tensors and every gate through the composed
// model against finite differences.
func TestGradCheck(t *testing.T) {
	for _, mam := range []bool{true, false} {
		pm := methodtest.SmallModel(t)
		// ReLU (both defaults) has a kink that finite differences step across
		// (see bottleneck.TestReluGrad): swish here.
		c := small(t, mam, `{"adapter": {"init_weights": "bert", "reduction_factor": 4, "non_linearity": "swish"}}`)
		c.PrefixTuning.EncoderHiddenSize = 4 // few values to difference
		if c.LoRA != nil {
			c.LoRA.InitLoraWeights, c.LoRA.R = lora.InitRandom, 2
		}
		attach(t, pm, peft.DefaultAdapter, c)
		methodtest.GradCheck(t, pm)
	}
}

// What each hybrid is made of, by tensor name and count.
func TestLayout(t *testing.T) {
	pm := methodtest.SmallModel(t)
	a := attach(t, pm, peft.DefaultAdapter, small(t, false, `{}`))
	L := pm.Base.Config.NumHiddenLayers
	count := map[string]int{}
	for _, p := range a.Params {
		for _, k := range []string{"prompt_encoder.", "lora_A", "lora_B", "lora_gate", "output_adapters", "gate.weight", "prefix_gate", "attention_adapters"} {
			if strings.Contains(p.Name, k) {
				count[k]++
			}
		}
	}
	want := map[string]int{"prompt_encoder.": 5, "lora_A": 2 * L, "lora_B": 2 * L, "lora_gate": 4 * L, "output_adapters": 6 * L, "gate.weight": 3 * L, "prefix_gate": L}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("UniPELT: %d tensors with %q, want %d (counts %v)", count[k], k, n, count)
		}
	}
	pm = methodtest.SmallModel(t)
	a = attach(t, pm, peft.DefaultAdapter, small(t, true, `{}`))
	var names []string
	for _, p := range a.Params {
		names = append(names, p.Name)
	}
	if len(names) != 5+4*L || strings.Contains(strings.Join(names, " "), "gate") {
		t.Errorf("MAM tensors: %v", names)
	}
	for _, p := range a.Params {
		if strings.HasSuffix(p.Name, "adapter_down.0.weight") && p.Var.Value.Shape[0] != pm.Base.Config.HiddenSize/2 {
			t.Errorf("MAM's parallel adapter %s has shape %v, want reduction 2", p.Name, p.Var.Value.Shape)
		}
	}
}

// Save → load gives the same logits, the file holds the prefix as PEFT's
// table and the config each piece under its key; merging is refused.
func TestSaveLoad(t *testing.T) {
	for _, mam := range []bool{true, false} {
		pm := methodtest.SmallModel(t)
		c := small(t, mam, `{"adapter": {"init_weights": "bert"}}`)
		attach(t, pm, peft.DefaultAdapter, c)
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
		var names []string
		for n := range ts {
			names = append(names, n)
		}
		sort.Strings(names)
		if ts["prompt_embeddings"] == nil || strings.Contains(strings.Join(names, " "), "prompt_encoder") {
			t.Errorf("saved tensors %v: want the prefix table, not its MLP", names)
		}
		var cfg map[string]any
		methodtest.ReadJSON(t, filepath.Join(dir, peft.ConfigFile), &cfg)
		pt, _ := cfg["prefix_tuning"].(map[string]any)
		if pt["num_virtual_tokens"] != 3.0 || cfg["adapter"] == nil || (cfg["lora"] == nil) != mam {
			t.Errorf("config %v", cfg)
		}
		pm2 := methodtest.SmallModel(t)
		if _, err := pm2.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
			t.Fatal(err)
		}
		if d := methodtest.MaxAbsDiff(want, methodtest.Logits(t, pm2.Base, ids)); d > 1e-5 {
			t.Errorf("mam %v: reloaded adapter differs by %g", mam, d)
		}
		if err := pm2.Merge(); err == nil || !strings.Contains(err.Error(), "cannot be merged") {
			t.Errorf("merge: %v", err)
		}
		// The file holds the prefix table, so loading builds no MLP: an
		// encoder_hidden_size nothing in the file checks (here 2⁴⁰, which
		// once asked for terabytes) changes nothing.
		pt["encoder_hidden_size"] = 1 << 40
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, peft.ConfigFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
		pm3 := methodtest.SmallModel(t)
		if _, err := pm3.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
			t.Fatal(err)
		}
		if d := methodtest.MaxAbsDiff(want, methodtest.Logits(t, pm3.Base, ids)); d > 1e-5 {
			t.Errorf("mam %v: reloaded with a hostile encoder_hidden_size, the adapter differs by %g", mam, d)
		}
	}
}

// With a KV cache, in padded batches, the hybrids compute what each
// sequence alone computes.
func TestCacheAndPadding(t *testing.T) {
	for _, mam := range []bool{true, false} {
		pm := methodtest.SmallModel(t)
		c := small(t, mam, `{"adapter": {"init_weights": "bert"}}`)
		if c.LoRA != nil {
			c.LoRA.InitLoraWeights = lora.InitRandom
		}
		attach(t, pm, peft.DefaultAdapter, c)
		methodtest.CheckCacheAndPadding(t, pm.Base)
	}
}

// Methods compose through the same sites: in one batch, each sequence runs
// its own adapter (two hybrids with prefixes of different lengths, prompt
// tuning's virtual tokens, SSF, (IA)³, LoRA, the base alone) and gets what
// it gets alone, with and without a KV cache.
func TestMixedBatch(t *testing.T) {
	pm := methodtest.SmallModel(t)
	u := small(t, false, `{"adapter": {"init_weights": "bert"}}`)
	u.LoRA.InitLoraWeights = lora.InitRandom
	attach(t, pm, "unipelt", u)
	attach(t, pm, "mam", small(t, true, `{"prefix_tuning": {"num_virtual_tokens": 5}, "adapter": {"init_weights": "bert"}}`))
	pc := prompttuning.NewConfig()
	pc.NumVirtualTokens = 4
	add := func(name string, m peft.Method) {
		if _, err := pm.AddAdapter(name, m); err != nil {
			t.Fatal(err)
		}
	}
	add("prompt", prompttuning.New(pc))
	add("ssf", ssf.New(ssf.NewConfig()))
	ic := ia3.NewConfig()
	ic.InitIA3Weights = false
	add("ia3", ia3.New(ic))
	lc := lora.NewConfig()
	lc.InitLoraWeights = lora.InitRandom
	add("lora", lora.New(lc))
	names := []string{"unipelt", "mam", "prompt", "ssf", "", "ia3", "lora"}
	seqs := [][]int{{1, 5, 3, 2}, {1, 7, 9, 4}, {1, 2, 2, 6}, {1, 8, 3, 5}, {1, 4, 4, 4}, {1, 6, 1, 9}, {1, 3, 7, 2}}
	m := pm.Base
	alone := make([][]float32, len(seqs))
	for i, s := range seqs {
		h, err := m.Forward(&nn.Pass{Adapters: []string{names[i]}}, llama.Input{IDs: s, Batch: 1, T: len(s)})
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = m.Logits(&nn.Pass{Adapters: []string{names[i]}}, h).Value.Data
	}
	for _, cached := range []bool{false, true} {
		in := methodtest.Batch(seqs)
		if cached {
			in.Cache = m.NewKVCache(len(seqs), in.T)
		}
		p := &nn.Pass{Adapters: names}
		h, err := m.Forward(p, in)
		if err != nil {
			t.Fatal(err)
		}
		got := m.Logits(p, h).Value
		n := len(alone[0])
		for i := range seqs {
			if d := methodtest.MaxAbsDiff(alone[i], got.Data[i*n:(i+1)*n]); d > 1e-5 {
				t.Errorf("cache %v: sequence %d (%q) differs from running alone by %g", cached, i, names[i], d)
			}
		}
	}
	// The hybrids do change their sequences.
	base, _ := m.Forward(&nn.Pass{Adapters: []string{""}}, methodtest.Batch(seqs[:1]))
	if d := methodtest.MaxAbsDiff(alone[0], m.Logits(&nn.Pass{Adapters: []string{""}}, base).Value.Data); d < 1e-3 {
		t.Errorf("UniPELT changes the logits by only %g", d)
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []struct {
		mam        bool
		json, want string
	}{
		{true, `{"lora": {"r": 4}}`, "no lora"},
		{false, `{"adapter": {"architecture": "nope"}}`, "architecture"},
		{false, `{"prefix_tuning": {"num_virtual_tokens": 0}}`, "num_virtual_tokens"},
		{false, `{"lora": {"rank": 4}}`, "rank"},
		{true, `{"prefix_tuning": {"peft_type": "LORA"}}`, `prefix_tuning: peft_type is "LORA", but this piece is PREFIX_TUNING`},
		{false, `{"adapter": {"peft_type": ""}}`, `adapter: peft_type is ""`},
	} {
		cfg := NewUniPELTConfig()
		if c.mam {
			cfg = NewMAMConfig()
		}
		if err := peft.DecodeConfig([]byte(c.json), cfg, "x", true); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.json, err)
		}
	}
	// A prefix longer than the context names the key and both numbers.
	pm := methodtest.SmallModel(t)
	c := small(t, false, `{"prefix_tuning": {"num_virtual_tokens": 40}}`)
	if _, err := pm.AddAdapter("x", New(c)); err == nil || !strings.Contains(err.Error(), "num_virtual_tokens") || !strings.Contains(err.Error(), "32") {
		t.Errorf("long prefix: %v", err)
	}
}

// Generation counts the positions a prefix or virtual tokens take: a
// prompt and new tokens that fit the context alone but not after them are
// refused, naming the count; at the bound they run.
func TestGenerateCountsPrepended(t *testing.T) {
	pm := methodtest.SmallModel(t) // context 32
	attach(t, pm, "mam", small(t, true, `{"prefix_tuning": {"num_virtual_tokens": 5}}`))
	pc := prompttuning.NewConfig()
	pc.NumVirtualTokens = 4
	if _, err := pm.AddAdapter("prompt", prompttuning.New(pc)); err != nil {
		t.Fatal(err)
	}
	m := pm.Base
	prompt := []int{1, 5, 3}
	for _, c := range []struct {
		adapter string
		n       int
	}{{"mam", 5}, {"prompt", 4}} {
		if err := pm.SetAdapter(c.adapter); err != nil {
			t.Fatal(err)
		}
		if got, err := m.Prepended(nil); err != nil || got != c.n {
			t.Errorf("%s: Prepended %d, %v; want %d", c.adapter, got, err, c.n)
		}
		if got := (&modellm.LM{Model: m}).MaxLength(); got != 32-c.n {
			t.Errorf("%s: eval truncates contexts to %d tokens, want %d", c.adapter, got, 32-c.n)
		}
		opt := llama.GenerateOptions{MaxNewTokens: 32 - len(prompt) - c.n + 1, Stop: []int{-1}}
		_, err := m.Generate(context.Background(), prompt, opt, nil)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d virtual or prefix positions", c.n)) {
			t.Errorf("%s: one token past the context: %v", c.adapter, err)
		}
		opt.MaxNewTokens--
		if _, err := m.Generate(context.Background(), prompt, opt, nil); err != nil {
			t.Errorf("%s: at the context's end: %v", c.adapter, err)
		}
	}
	pm.DisableAdapters()
	if got, _ := m.Prepended(nil); got != 0 {
		t.Errorf("base alone: Prepended %d", got)
	}
}
