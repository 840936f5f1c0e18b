// Package methodtest holds the checks every PEFT method's tests share:
// loading a method's golden adapter (../shared/golden/stories260K/methods)
// and comparing loss, logits and gradients with PyTorch's, the saved
// layout against PEFT's, and a small random model for gradient checks.
// Only tests import it.
package methodtest

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// Expected is a golden method's expected.json.
type Expected struct {
	Tokens          [][]int     `json:"tokens"`
	Loss            float64     `json:"loss"`
	LossPerSequence []float64   `json:"loss_per_sequence"`
	AdapterLogits   [][]float32 `json:"adapter_logits"`
	FirstRealRow    int         `json:"adapter_logits_first_real_row"`
}

// Golden is one method's golden directory, read.
type Golden struct {
	Dir string
	Exp Expected
}

// LoadGolden reads methods/<name> (skipping when ../shared is absent).
func LoadGolden(t *testing.T, name string) Golden {
	t.Helper()
	dir := shared.Path(t, "golden/stories260K/methods/"+name)
	var g Golden
	g.Dir = dir
	ReadJSON(t, filepath.Join(dir, "expected.json"), &g.Exp)
	return g
}

// BaseModel loads the golden stories260K base, wrapped.
func BaseModel(t *testing.T) *peft.Model {
	t.Helper()
	base, err := llama.Load(shared.Path(t, "golden/stories260K/hf"), llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return peft.Wrap(base)
}

// Batch makes an input of equal-length sequences.
func Batch(seqs [][]int) llama.Input {
	in := llama.Input{Batch: len(seqs), T: len(seqs[0])}
	for _, s := range seqs {
		in.IDs = append(in.IDs, s...)
	}
	return in
}

// Tolerance bounds a comparison with PyTorch's golden values: Loss is
// absolute, Grad relative to each gradient tensor's max |value|.
type Tolerance struct{ Loss, Grad float64 }

// Float32 is the tolerance of a float32 computation.
var Float32 = Tolerance{Loss: 1e-4, Grad: 1e-3}

// CheckLossAndGrads compares the loss of the golden tokens and the gradient
// of every saved tensor (a.Params) with the golden values, within Float32.
func CheckLossAndGrads(t *testing.T, pm *peft.Model, a *peft.Adapter, g Golden) {
	t.Helper()
	CompareLossAndGrads(t, pm, a, g.Exp.Tokens, g.Exp.Loss, filepath.Join(g.Dir, "grads.safetensors"), Float32)
}

// CompareLossAndGrads is CheckLossAndGrads for golden values kept
// elsewhere (tokens, their loss, and the gradients' safetensors file) and
// any tolerance (a bf16 base's, say). It also checks that the frozen base
// got no gradient.
func CompareLossAndGrads(t *testing.T, pm *peft.Model, a *peft.Adapter, tokens [][]int, wantLoss float64, gradsFile string, tol Tolerance) {
	t.Helper()
	in := Batch(tokens)
	tp := autograd.NewTape()
	loss, err := pm.Base.Loss(&nn.Pass{Tape: tp, Training: true}, in, llama.LMLabels(in))
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(float64(loss.Value.Data[0]) - wantLoss); d > tol.Loss {
		t.Errorf("loss %v, golden %v (|diff| %g > %g)", loss.Value.Data[0], wantLoss, d, tol.Loss)
	} else {
		t.Logf("loss %v, golden %v (|diff| %.2g)", loss.Value.Data[0], wantLoss, d)
	}
	tp.Backward(loss)
	grads, _, err := format.ReadSafetensors(gradsFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(grads) != len(a.Params) {
		t.Errorf("golden has %d gradients, the adapter %d tensors", len(grads), len(a.Params))
	}
	var worst float64
	for _, p := range a.Params {
		gt, ok := grads[p.Name]
		if !ok {
			t.Errorf("no golden gradient for %s", p.Name)
			continue
		}
		want, err := gt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if p.Var.Grad == nil {
			t.Errorf("%s has no gradient", p.Name)
			continue
		}
		if len(want) != len(p.Var.Grad.Data) {
			t.Errorf("%s: gradient has %d elements, golden %d", p.Name, len(p.Var.Grad.Data), len(want))
			continue
		}
		var scale, diff float64
		for i, w := range want {
			scale = math.Max(scale, math.Abs(float64(w)))
			diff = math.Max(diff, math.Abs(float64(w-p.Var.Grad.Data[i])))
		}
		worst = math.Max(worst, diff/scale)
		if diff > tol.Grad*scale {
			t.Errorf("%s: max |grad - golden| %g > %g × %g", p.Name, diff, tol.Grad, scale)
		}
	}
	t.Logf("largest gradient difference: %.2g of the gradient's scale", worst)
	for _, p := range pm.Base.Params() {
		if p.Var.Grad != nil {
			t.Errorf("frozen base tensor %s got a gradient", p.Name)
		}
	}
}

// CheckLogits compares every row the model outputs for the golden's first
// sequence (virtual rows included) with the golden logits, 1e-4 absolute.
func CheckLogits(t *testing.T, m *llama.Model, g Golden) {
	t.Helper()
	ids := g.Exp.Tokens[0]
	h, virtual, err := m.ForwardVirtual(nil, llama.Input{IDs: ids, Batch: 1, T: len(ids)})
	if err != nil {
		t.Fatal(err)
	}
	if virtual != g.Exp.FirstRealRow {
		t.Errorf("%d virtual rows, golden has %d", virtual, g.Exp.FirstRealRow)
	}
	got := m.Logits(nil, h).Value
	if got.Rows() != len(g.Exp.AdapterLogits) {
		t.Fatalf("%d logit rows, golden %d", got.Rows(), len(g.Exp.AdapterLogits))
	}
	var worst float64
	for r, want := range g.Exp.AdapterLogits {
		worst = math.Max(worst, MaxAbsDiff(got.Row(r), want))
	}
	if worst > 1e-4 {
		t.Errorf("logits differ from the golden by %g > 1e-4", worst)
	}
}

// Logits returns the logits of the real rows of one sequence.
func Logits(t *testing.T, m *llama.Model, ids []int) []float32 {
	t.Helper()
	h, err := m.Forward(nil, llama.Input{IDs: ids, Batch: 1, T: len(ids)})
	if err != nil {
		t.Fatal(err)
	}
	return m.Logits(nil, h).Value.Data
}

// MaxAbsDiff is max |a_i − b_i|.
func MaxAbsDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

// CheckLayout saves adapter name of pm and checks that the file has the
// golden adapter's tensor names and shapes, the golden config's keys (all
// of them, and no others but peft_version's absence) and the values of
// keys listed in same.
func CheckLayout(t *testing.T, pm *peft.Model, name string, g Golden, same ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, name); err != nil {
		t.Fatal(err)
	}
	want, _, err := format.ReadSafetensors(filepath.Join(g.Dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	got, meta, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" {
		t.Errorf("metadata %v, want format=pt", meta)
	}
	if !reflect.DeepEqual(names(want), names(got)) {
		t.Fatalf("tensor names differ:\n got %v\nwant %v", names(got), names(want))
	}
	for n, w := range want {
		if !reflect.DeepEqual(w.Shape, got[n].Shape) {
			t.Errorf("%s: saved shape %v, PEFT's %v", n, got[n].Shape, w.Shape)
		}
	}
	var gcfg, ocfg map[string]any
	ReadJSON(t, filepath.Join(g.Dir, peft.ConfigFile), &gcfg)
	ReadJSON(t, filepath.Join(dir, peft.ConfigFile), &ocfg)
	for k := range gcfg {
		if _, ok := ocfg[k]; !ok && k != "peft_version" {
			t.Errorf("saved config lacks PEFT's key %q", k)
		}
	}
	for k := range ocfg {
		if _, ok := gcfg[k]; !ok {
			t.Errorf("saved config has key %q, which PEFT's has not", k)
		}
	}
	for _, k := range same {
		if !reflect.DeepEqual(gcfg[k], ocfg[k]) {
			t.Errorf("key %q: saved %v, PEFT's %v", k, ocfg[k], gcfg[k])
		}
	}
	return dir
}

func names(m map[string]*format.Tensor) []string {
	var ns []string
	for n := range m {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// CopyAdapter copies the adapter directory src (config and weights) to a
// new temporary directory, passing the config's text through edit (a newer
// PEFT's extra key, a changed value), and returns the new directory.
func CopyAdapter(t *testing.T, src string, edit func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(src, peft.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.ReadFile(filepath.Join(src, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{peft.ConfigFile: []byte(edit(string(cfg))), peft.WeightsFile: w} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// ReadJSON decodes a JSON file.
func ReadJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// SmallModel is a tiny random LLaMA with grouped-query attention for
// gradient checks.
func SmallModel(t *testing.T) *peft.Model {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 11, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	m, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	return peft.Wrap(m)
}

// GradCheck checks the gradients of every trainable tensor of the active
// adapter against finite differences of the loss of a padded batch of two
// sequences.
func GradCheck(t *testing.T, pm *peft.Model) {
	t.Helper()
	in := llama.Input{IDs: []int{1, 4, 7, 3, 1, 9, 5, 0}, Batch: 2, T: 4, Mask: []bool{true, true, true, true, true, true, true, false}}
	labels := llama.LMLabels(in)
	var vars []*autograd.Var
	for _, p := range pm.TrainableParams() {
		vars = append(vars, p.Var)
	}
	worst, err := autograd.GradCheckModel(vars, func(tp *autograd.Tape) *autograd.Var {
		loss, err := pm.Base.Loss(&nn.Pass{Tape: tp}, in, labels)
		if err != nil {
			t.Fatal(err)
		}
		return loss
	})
	if err != nil {
		t.Errorf("gradient check: %v", err)
	}
	t.Logf("worst gradient error %g", worst)
}

// CheckCacheAndPadding runs sequences of different lengths through m (its
// default adapter) four ways and requires the same logits for every real
// token: each alone without a cache (the reference), left-padded in one
// batch through a KV cache with a prompt step and then one token per step,
// and right-padded in one batch without a cache.
func CheckCacheAndPadding(t *testing.T, m *llama.Model) {
	t.Helper()
	prompts := [][]int{{1, 5, 9, 11}, {1, 8}, {1, 17, 21}}
	steps := [][]int{{4, 6, 7}, {3, 2, 9}, {12, 13, 14}}
	for b := range prompts {
		for i := range prompts[b] {
			prompts[b][i] %= m.Config.VocabSize
		}
		for i := range steps[b] {
			steps[b][i] %= m.Config.VocabSize
		}
	}
	alone := make([][][]float32, len(prompts))
	for b, p := range prompts {
		seq := append(append([]int(nil), p...), steps[b]...)
		h, err := m.Forward(nil, llama.Input{IDs: seq, Batch: 1, T: len(seq)})
		if err != nil {
			t.Fatal(err)
		}
		lg := m.Logits(nil, h).Value
		for s := 0; s <= len(steps[b]); s++ {
			alone[b] = append(alone[b], append([]float32(nil), lg.Row(len(p)-1+s)...))
		}
	}
	// Left-padded through a cache.
	T := 0
	for _, p := range prompts {
		T = max(T, len(p))
	}
	var ids []int
	var mask []bool
	for _, p := range prompts {
		for i := 0; i < T; i++ {
			pad := i < T-len(p)
			mask = append(mask, !pad)
			id := 0
			if !pad {
				id = p[i-(T-len(p))]
			}
			ids = append(ids, id)
		}
	}
	cache := m.NewKVCache(len(prompts), T+len(steps[0]))
	h, err := m.Forward(nil, llama.Input{IDs: ids, Batch: len(prompts), T: T, Mask: mask, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	lg := m.Logits(nil, h).Value
	worst := 0.0
	for b := range prompts {
		worst = math.Max(worst, MaxAbsDiff(lg.Row(b*T+T-1), alone[b][0]))
	}
	for s := range steps[0] {
		next := make([]int, len(prompts))
		for b := range prompts {
			next[b] = steps[b][s]
		}
		if h, err = m.Forward(nil, llama.Input{IDs: next, Batch: len(prompts), T: 1, Cache: cache}); err != nil {
			t.Fatal(err)
		}
		lg = m.Logits(nil, h).Value
		for b := range prompts {
			worst = math.Max(worst, MaxAbsDiff(lg.Row(b), alone[b][s+1]))
		}
	}
	if worst > 1e-4 {
		t.Errorf("left-padded batch through the KV cache differs from each sequence alone by %g", worst)
	}
	// Right-padded, no cache.
	T = 7
	in := llama.Input{Batch: len(prompts), T: T, IDs: make([]int, len(prompts)*T), Mask: make([]bool, len(prompts)*T)}
	for b, p := range prompts {
		seq := append(append([]int(nil), p...), steps[b]...)
		copy(in.IDs[b*T:], seq)
		for i := range seq {
			in.Mask[b*T+i] = true
		}
	}
	if h, err = m.Forward(nil, in); err != nil {
		t.Fatal(err)
	}
	lg = m.Logits(nil, h).Value
	worst = 0
	for b, p := range prompts {
		for s := range alone[b] {
			worst = math.Max(worst, MaxAbsDiff(lg.Row(b*T+len(p)-1+s), alone[b][s]))
		}
	}
	if worst > 1e-4 {
		t.Errorf("right-padded batch differs from each sequence alone by %g", worst)
	}
}

// TinyBase is a random two-layer LLaMA with grouped-query heads (4 over 2)
// and a vocabulary of 19, seeded: small enough to train in a test.
func TinyBase(t testing.TB) *llama.Model {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	m, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Examples are n seeded random sequences for TinyBase, BOS and 7 tokens,
// each its own labels: the same n sequences on every call.
func Examples(n int) []data.Example {
	var exs []data.Example
	g := tensor.NewRNG(1)
	for range n {
		ids := []int{1}
		for range 7 {
			ids = append(ids, 3+g.IntN(16))
		}
		exs = append(exs, data.Example{IDs: ids, Labels: ids})
	}
	return exs
}
