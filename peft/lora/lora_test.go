package lora

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
)

type expected struct {
	Tokens [][]int `json:"tokens"`
	Loss   float64 `json:"loss"`
}

// TestGoldenLossAndGradients checks the loss and every LoRA gradient of the
// golden adapter against PyTorch's.
func TestGoldenLossAndGradients(t *testing.T) {
	checkGolden(t, methodtest.BaseModel(t), methodtest.Float32)
}

// TestGoldenOnLlama2cCheckpoint: PEFT's files index q_proj and k_proj rows
// in Hugging Face's order, and a llama2.c checkpoint stores them in
// interleaved pairs; the golden adapter (made for the Hugging Face
// conversion) gives PyTorch's loss and gradients on the llama2.c file too.
func TestGoldenOnLlama2cCheckpoint(t *testing.T) {
	base, err := llama.Load(shared.Path(t, "data/models/stories260K/stories260K.bin"), llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, peft.Wrap(base), methodtest.Float32)
}

// TestGoldenMixedPrecision is the golden check with the frozen base held in
// bf16 (--bf16): on CPUs with AVX512_BF16 or AMX its products also round
// the activations to bf16, as PyTorch's autocast does, elsewhere the
// weights alone are rounded. The loss must stay within 1e-2 of PyTorch's
// float32 loss. The gradients get 5% of their largest magnitude: each
// product rounds both operands to 8 significant bits (relative error up to
// 2⁻⁹ each), and the LoRA gradients are sums over every position of
// products of such values through five layers, so their error is a few
// times 2⁻⁸ of their scale, not float32's.
func TestGoldenMixedPrecision(t *testing.T) {
	pm := methodtest.BaseModel(t)
	pm.Base.ToBF16()
	checkGolden(t, pm, methodtest.Tolerance{Loss: 1e-2, Grad: 5e-2})
}

// checkGolden loads the golden adapter onto pm and compares the loss and
// every gradient with PyTorch's within tol.
func checkGolden(t *testing.T, pm *peft.Model, tol methodtest.Tolerance) {
	t.Helper()
	a, err := pm.LoadAdapter(shared.Path(t, "golden/stories260K/lora"), peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	var exp expected
	methodtest.ReadJSON(t, shared.Path(t, "golden/stories260K/lora_expected.json"), &exp)
	methodtest.CompareLossAndGrads(t, pm, a, exp.Tokens, exp.Loss, shared.Path(t, "golden/stories260K/lora_grads.safetensors"), tol)
}

func TestMergeUnmergeAndUnload(t *testing.T) {
	pm := methodtest.BaseModel(t)
	ids := []int{1, 328, 384, 353, 219, 207, 297, 389}
	base := methodtest.Logits(t, pm.Base, ids)
	if _, err := pm.LoadAdapter(shared.Path(t, "golden/stories260K/lora"), peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	adapted := methodtest.Logits(t, pm.Base, ids)
	if methodtest.MaxAbsDiff(base, adapted) < 1e-3 {
		t.Fatal("the golden adapter does not change the logits; the test would prove nothing")
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
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
		t.Errorf("unmerged logits differ by %g", d)
	}
	pm.DisableAdapters()
	if d := methodtest.MaxAbsDiff(base, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
		t.Errorf("disabled adapters: logits differ from the base by %g", d)
	}
	pm.EnableAdapters()
	merged, err := pm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range merged.Linears() {
		if len(l.Deltas) != 0 {
			t.Fatalf("%s still has %d deltas after unload", l.Name, len(l.Deltas))
		}
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, merged, ids)); d > 1e-4 {
		t.Errorf("merge_and_unload logits differ by %g", d)
	}
}

func TestSaveLoadMatchesPEFTLayout(t *testing.T) {
	golden := shared.Path(t, "golden/stories260K/lora")
	pm := methodtest.BaseModel(t)
	a, err := pm.LoadAdapter(golden, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	// Same tensor names, shapes and values as the golden file.
	want, meta0, err := format.ReadSafetensors(filepath.Join(golden, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	got, meta, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" {
		t.Errorf("metadata %v, want format=pt (golden has %v)", meta, meta0)
	}
	if !reflect.DeepEqual(sortedNames(want), sortedNames(got)) {
		t.Fatalf("tensor names differ:\n got %v\nwant %v", sortedNames(got), sortedNames(want))
	}
	for name, w := range want {
		if !reflect.DeepEqual(w.Shape, got[name].Shape) || string(w.Data) != string(got[name].Data) {
			t.Errorf("%s differs after save (shape %v vs %v)", name, got[name].Shape, w.Shape)
		}
	}
	// Every key of the golden config is written, with the same value where
	// it describes the computation.
	var gcfg, ocfg map[string]any
	methodtest.ReadJSON(t, filepath.Join(golden, peft.ConfigFile), &gcfg)
	methodtest.ReadJSON(t, filepath.Join(dir, peft.ConfigFile), &ocfg)
	for k, v := range gcfg {
		ov, ok := ocfg[k]
		if !ok {
			t.Errorf("saved config lacks key %q", k)
			continue
		}
		if k != "inference_mode" && !reflect.DeepEqual(v, ov) {
			t.Errorf("key %q: saved %v, golden %v", k, ov, v)
		}
	}
	// Loading what was saved gives identical tensors.
	pm2 := methodtest.BaseModel(t)
	b, err := pm2.LoadAdapter(dir, "again")
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range a.Params {
		q := b.Params[i]
		if p.Name != q.Name || !reflect.DeepEqual(p.Var.Value.Data, q.Var.Value.Data) {
			t.Errorf("%s not identical after save → load", p.Name)
		}
	}
}

func sortedNames(m map[string]*format.Tensor) []string {
	var ns []string
	for n := range m {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

func smallModel(t *testing.T) *peft.Model {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 3, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 11, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	m, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	return peft.Wrap(m)
}

func TestTargetingRules(t *testing.T) {
	cases := []struct {
		json string
		want int // targeted modules
	}{
		{`{"target_modules": ["q_proj", "v_proj"]}`, 6},
		{`{"target_modules": "all-linear"}`, 21},
		{`{"target_modules": ".*\\.(q|k)_proj"}`, 6},
		{`{"target_modules": "q_proj"}`, 0}, // a string must match the whole name
		{`{"target_modules": ["self_attn.o_proj"], "layers_to_transform": [0, 2]}`, 2},
		{`{"target_modules": ["q_proj", "v_proj"], "layers_to_transform": 1}`, 2},
		{`{"target_modules": "all-linear", "exclude_modules": ["down_proj", "up_proj"]}`, 15},
		{`{"target_modules": ["model.layers.1.mlp.up_proj"]}`, 1},
	}
	for _, c := range cases {
		cfg := NewConfig()
		if err := peft.DecodeConfig([]byte(c.json), cfg, "test.json", false); err != nil {
			t.Fatal(err)
		}
		pm := smallModel(t)
		a, err := pm.AddAdapter(peft.DefaultAdapter, New(cfg))
		if c.want == 0 {
			if err == nil || !strings.Contains(err.Error(), "q_proj") {
				t.Errorf("%s: want an error listing the modules, got %v", c.json, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.json, err)
			continue
		}
		if got := len(a.Params) / 2; got != c.want {
			t.Errorf("%s: %d modules targeted, want %d", c.json, got, c.want)
		}
	}
}

func TestRankAlphaPatternsAndRSLoRA(t *testing.T) {
	cfg := NewConfig()
	cfg.R, cfg.LoraAlpha = 4, 8
	cfg.RankPattern = map[string]int{"v_proj": 2}
	cfg.AlphaPattern = map[string]float64{"model.layers.0.self_attn.q_proj": 3}
	cfg.UseRSLoRA = true
	m := New(cfg)
	pm := smallModel(t)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	for _, ly := range m.layers {
		r, alpha := 4, 8.0
		if strings.HasSuffix(ly.linear.Name, "v_proj") {
			r = 2
		}
		if ly.linear.Name == "model.layers.0.self_attn.q_proj" {
			alpha = 3
		}
		if ly.f.A.Value.Shape[0] != r || ly.f.B.Value.Shape[1] != r {
			t.Errorf("%s: rank %d, want %d", ly.linear.Name, ly.f.A.Value.Shape[0], r)
		}
		if want := float32(alpha / math.Sqrt(float64(r))); ly.f.Scale != want {
			t.Errorf("%s: scale %v, want alpha/√r = %v", ly.linear.Name, ly.f.Scale, want)
		}
	}
}

func TestDefaultInitIsIdentityAndPEFTLine(t *testing.T) {
	pm := smallModel(t)
	ids := []int{1, 3, 5, 7, 9}
	before := methodtest.Logits(t, pm.Base, ids)
	cfg := NewConfig()
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(cfg)); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(before, methodtest.Logits(t, pm.Base, ids)); d != 0 {
		t.Errorf("a fresh LoRA (B = 0) changed the logits by %g", d)
	}
	// 3 layers × (q: 8·(16+16) + v: 8·(16+8)) = 3 × (256 + 192) = 1344.
	all, _ := pm.Base.Params().Count()
	line := pm.ParamLine()
	want := "trainable params: 1,344 || all params: "
	if !strings.HasPrefix(line, want) || !strings.Contains(line, "trainable%: ") {
		t.Errorf("param line %q, want prefix %q", line, want)
	}
	if all <= 0 {
		t.Fatal("no base parameters")
	}
}

func TestLoadRejectsAdapterForAnotherBase(t *testing.T) {
	pm := smallModel(t)
	_, err := pm.LoadAdapter(shared.Path(t, "golden/stories260K/lora"), peft.DefaultAdapter)
	if err == nil || !strings.Contains(err.Error(), "shape") {
		t.Fatalf("loading stories260K's adapter on another shape: %v", err)
	}
	if len(pm.Adapters()) != 0 {
		t.Errorf("a failed load left adapters %v", pm.Adapters())
	}
	for _, l := range pm.Base.Linears() {
		if len(l.Deltas) != 0 {
			t.Fatalf("a failed load left deltas on %s", l.Name)
		}
	}
}

func TestSeveralNamedAdapters(t *testing.T) {
	pm := smallModel(t)
	ids := []int{1, 3, 5, 7, 9}
	base := methodtest.Logits(t, pm.Base, ids)
	for i, name := range []string{"first", "second"} {
		cfg := NewConfig()
		cfg.InitLoraWeights = InitRandom // non-zero B: each adapter changes the output
		cfg.Seed = uint64(i + 1)
		if _, err := pm.AddAdapter(name, New(cfg)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pm.SetAdapter("first"); err != nil {
		t.Fatal(err)
	}
	first := methodtest.Logits(t, pm.Base, ids)
	a, _ := pm.Adapter("second")
	if a.Params[0].Var.RequiresGrad() {
		t.Error("the inactive adapter's tensors are trainable")
	}
	if err := pm.SetAdapter("second"); err != nil {
		t.Fatal(err)
	}
	second := methodtest.Logits(t, pm.Base, ids)
	if methodtest.MaxAbsDiff(first, second) < 1e-4 || methodtest.MaxAbsDiff(base, first) < 1e-4 {
		t.Fatal("switching adapters did not change the output")
	}
	if err := pm.SetAdapter("first"); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(first, methodtest.Logits(t, pm.Base, ids)); d != 0 {
		t.Errorf("switching back changed the output by %g", d)
	}
	if err := pm.SetAdapter("third"); err == nil {
		t.Error("SetAdapter accepted an unknown name")
	}
}

// TestLoadRefusesHostileRankBeforeAllocating: an adapter_config.json whose
// rank disagrees with its tensors (r = 10⁹ would ask for 256 GB a factor)
// is refused naming the tensor and both shapes, before the factors are
// allocated, and a rank_pattern that breaks a later module leaves nothing
// attached.
func TestLoadRefusesHostileRankBeforeAllocating(t *testing.T) {
	golden := shared.Path(t, "golden/stories260K/lora")
	for _, c := range []struct {
		name, want string
		edit       func(map[string]any)
	}{
		{"r", "q_proj.lora_A.weight has shape [4 64], but the adapter's config and this base model need [1000000000 64]",
			func(c map[string]any) { c["r"] = 1_000_000_000 }},
		{"rank_pattern", "layers.3.self_attn.v_proj.lora_A.weight has shape [4 64], but the adapter's config and this base model need [1000000000 64]",
			func(c map[string]any) {
				c["rank_pattern"] = map[string]any{"model.layers.3.self_attn.v_proj": 1_000_000_000}
			}},
	} {
		dir := t.TempDir()
		for _, f := range []string{peft.ConfigFile, peft.WeightsFile} {
			b, err := os.ReadFile(filepath.Join(golden, f))
			if err != nil {
				t.Fatal(err)
			}
			if f == peft.ConfigFile {
				var cfg map[string]any
				if err := json.Unmarshal(b, &cfg); err != nil {
					t.Fatal(err)
				}
				c.edit(cfg)
				b, _ = json.Marshal(cfg)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		pm := methodtest.BaseModel(t)
		_, err := pm.LoadAdapter(dir, peft.DefaultAdapter)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
		if len(pm.Adapters()) != 0 {
			t.Errorf("%s: a failed load left adapters %v", c.name, pm.Adapters())
		}
		for _, l := range pm.Base.Linears() {
			if len(l.Deltas) != 0 {
				t.Errorf("%s: a failed load left deltas on %s", c.name, l.Name)
			}
		}
	}
}

// TestAlphaMustGiveFiniteScale: a lora_alpha (or alpha_pattern entry) whose
// scale overflows float32 made every output Inf or NaN; it is refused,
// naming the key, and the largest finite one is not.
func TestAlphaMustGiveFiniteScale(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"lora_alpha": 1e300}`, "lora_alpha"},
		{`{"lora_alpha": -1e39}`, "lora_alpha"},
		{`{"alpha_pattern": {"q_proj": 1e300}}`, `alpha_pattern["q_proj"]`},
		{`{"lora_alpha": 3.4e38}`, ""},
	} {
		err := peft.DecodeConfig([]byte(c.json), NewConfig(), "adapter_config.json", false)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.json, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "float32") {
			t.Errorf("%s: %v, want an error naming %s", c.json, err, c.want)
		}
	}
}
