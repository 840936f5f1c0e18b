package peft_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lora"
)

func tinyBase(t *testing.T) *llama.Model {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 11, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	m, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// seqClsLoRA is an all-linear LoRA for sequence classification with
// random A and B, so that every part of the adapter changes the output.
func seqClsLoRA() *lora.Method {
	c := lora.NewConfig()
	c.TaskType = peft.TaskSeqCls
	c.TargetModules = peft.ModuleRegex("all-linear")
	c.InitLoraWeights = lora.InitRandom
	c.Seed = 9
	return lora.New(c)
}

var clsInput = llama.Input{IDs: []int{1, 4, 7, 3, 1, 9, 0, 0}, Batch: 2, T: 4, Mask: []bool{true, true, true, true, true, true, false, false}}

func TestSeqClsNeedsAHead(t *testing.T) {
	pm := peft.Wrap(tinyBase(t))
	if _, err := pm.AddAdapter("default", seqClsLoRA()); err == nil {
		t.Fatal("a SEQ_CLS adapter attached to a base without a classification head")
	}
}

func TestSeqClsGradientsAndTargets(t *testing.T) {
	base := tinyBase(t)
	if err := base.AddScoreHead(3, 1); err != nil {
		t.Fatal(err)
	}
	pm := peft.Wrap(base)
	frozen := base.Params() // before modules_to_save swaps in the head's copy
	a, err := pm.AddAdapter("default", seqClsLoRA())
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := (*nn.Pass)(nil).Begin(1, base.Adapter)
	if w, ok := base.Score.Plain(pass); !ok || w == frozen[len(frozen)-1].Var {
		t.Error("the active adapter does not compute with its own copy of the head")
	}
	cfg := a.Method.Config().Base()
	if !slices.Contains(cfg.ModulesToSave, "score") {
		t.Errorf("modules_to_save %v lacks score", cfg.ModulesToSave)
	}
	// all-linear: every block Linear, never the heads.
	var loraNames, scoreNames []string
	for _, p := range a.Params {
		switch {
		case p.Name == "base_model.model.score.weight":
			scoreNames = append(scoreNames, p.Name)
		default:
			loraNames = append(loraNames, p.Name)
		}
	}
	if want := 2 * 7 * len(base.Layers); len(loraNames) != want || len(scoreNames) != 1 {
		t.Fatalf("adapter has %d LoRA tensors (want %d) and %d score copies (want 1): %v", len(loraNames), want, len(scoreNames), loraNames)
	}
	for _, n := range loraNames {
		if filepath.Ext(n) != ".weight" || slices.Contains([]string{"lm_head", "score"}, n) {
			t.Errorf("unexpected adapter tensor %s", n)
		}
	}
	if _, copyOnly := base.Score.Deltas[0].(nn.Replacer); len(base.Score.Deltas) != 1 || !copyOnly || len(base.LMHead.Deltas) != 0 {
		t.Error("all-linear put LoRA on an output head")
	}
	tp := autograd.NewTape()
	lg, err := base.ClassifyLogits(&nn.Pass{Tape: tp, Training: true}, clsInput)
	if err != nil {
		t.Fatal(err)
	}
	tp.Backward(tp.CrossEntropy(lg, []int{2, 0}))
	for _, p := range a.Params {
		if p.Var.Grad == nil || maxAbs(p.Var.Grad.Data) == 0 {
			t.Errorf("%s has no gradient", p.Name)
		}
	}
	for _, p := range frozen {
		if p.Var.RequiresGrad() || p.Var.Grad != nil {
			t.Errorf("base tensor %s is trainable or got a gradient", p.Name)
		}
	}
}

func maxAbs(xs []float32) float32 {
	var m float32
	for _, x := range xs {
		m = max(m, x, -x)
	}
	return m
}

func TestSeqClsSaveLoadRoundTrip(t *testing.T) {
	base := tinyBase(t)
	if err := base.AddScoreHead(3, 1); err != nil {
		t.Fatal(err)
	}
	pm := peft.Wrap(base)
	a, err := pm.AddAdapter("default", seqClsLoRA())
	if err != nil {
		t.Fatal(err)
	}
	score, _ := a.Params.Get("base_model.model.score.weight")
	for i := range score.Value.Data {
		score.Value.Data[i] += 0.5 * float32(i%5) // a trained head, not the base's
	}
	want, err := base.ClassifyLogits(nil, clsInput)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, "default"); err != nil {
		t.Fatal(err)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := ts["base_model.model.score.weight"]; !ok || !slices.Equal(st.Shape, []int{3, 16}) {
		t.Fatalf("adapter file lacks base_model.model.score.weight [3 16]")
	}
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(dir, peft.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["task_type"] != "SEQ_CLS" {
		t.Errorf("task_type %v", cfg["task_type"])
	}

	// Onto a fresh base without a head: LoadAdapter makes one from the file.
	fresh := tinyBase(t)
	pm2 := peft.Wrap(fresh)
	if _, err := pm2.LoadAdapter(dir, "default"); err != nil {
		t.Fatal(err)
	}
	if fresh.NumLabels() != 3 {
		t.Fatalf("loaded base has %d labels, want 3", fresh.NumLabels())
	}
	got, err := fresh.ClassifyLogits(nil, clsInput)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want.Value.Data {
		if d := want.Value.Data[i] - got.Value.Data[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("logit %d: %g after loading, %g before saving", i, got.Value.Data[i], want.Value.Data[i])
		}
	}
	// Disabling the adapter falls back to the base's own (untrained) head.
	pm2.DisableAdapters()
	off, _ := fresh.ClassifyLogits(nil, clsInput)
	if off.Value.Data[0] == got.Value.Data[0] {
		t.Error("disabling the adapter left the classifier unchanged")
	}
}

func TestLoadRejectsBadScoreHead(t *testing.T) {
	base := tinyBase(t)
	if err := base.AddScoreHead(2, 1); err != nil {
		t.Fatal(err)
	}
	pm := peft.Wrap(base)
	if _, err := pm.AddAdapter("default", seqClsLoRA()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, "default"); err != nil {
		t.Fatal(err)
	}
	// A head of another width: an adapter for another base.
	path := filepath.Join(dir, peft.WeightsFile)
	ts, _, err := format.ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []*format.Tensor
	for name, t0 := range ts {
		if name == "base_model.model.score.weight" {
			out = append(out, format.TensorFromF32(name, []int{2, 5}, make([]float32, 10)))
			continue
		}
		v, _ := t0.Float32()
		out = append(out, format.TensorFromF32(name, t0.Shape, v))
	}
	if err := format.WriteSafetensors(path, out, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	fresh := tinyBase(t)
	if _, err := peft.Wrap(fresh).LoadAdapter(dir, "default"); err == nil {
		t.Fatal("loaded a score head of the wrong width")
	}
	if fresh.Score != nil {
		t.Error("a failed load left a classification head on the base")
	}
}
