package fishmask_test

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/fishmask"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/peft/sparse"
	"github.com/gopeft/gopeft/train"
)

func snapshot(m *llama.Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, p := range m.Params() {
		out[p.Name] = append([]float32(nil), p.Var.Value.ToF32().Data...)
	}
	return out
}

// trainFishMask trains FishMask at a density on the small model, saves it
// and returns the adapter directory and the base as it was.
func trainFishMask(t *testing.T, density float64) (string, map[string][]float32) {
	t.Helper()
	base := methodtest.TinyBase(t)
	before := snapshot(base)
	c := fishmask.NewConfig()
	c.Density, c.NumSamples = density, 6
	pm := peft.Wrap(base)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, fishmask.New(c)); err != nil {
		t.Fatal(err)
	}
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.LR, cfg.Schedule, cfg.Warmup, cfg.WeightDecay = 4, 2, 1e-2, "constant", 0, 0.1
	run := &train.Run{Model: pm, Train: methodtest.Examples(12), OutputDir: t.TempDir(), Fingerprint: "fm", Config: cfg}
	if _, err := run.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := pm.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir, before
}

// After training with a fixed mask, every unselected weight of the base is
// bitwise unchanged in the merged model, and at most ⌊density·P⌋ entries
// changed; the saved file loads, applies on load and merges to the same
// logits.
func TestFixedMaskChangesOnlyTheBudget(t *testing.T) {
	const density = 0.02
	dir, before := trainFishMask(t, density)
	base := methodtest.TinyBase(t)
	pm := peft.Wrap(base)
	a, err := pm.LoadAdapter(dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int{1, 4, 5, 6, 7, 8}
	in := llama.Input{IDs: ids, Batch: 1, T: len(ids)}
	h, err := base.Forward(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	applied := base.Logits(nil, h).Value.Data
	merged, err := pm.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	h, _ = merged.Forward(nil, in)
	for i, v := range merged.Logits(nil, h).Value.Data {
		if math.Abs(float64(v-applied[i])) > 1e-4 {
			t.Fatalf("merged logit %d is %v, applied on load %v", i, v, applied[i])
		}
	}
	all, _ := merged.Params().Count()
	budget := int(math.Floor(density * float64(all)))
	changed := 0
	for _, p := range merged.Params() {
		w := p.Var.Value.ToF32().Data
		for i, v := range w {
			if math.Float32bits(v) != math.Float32bits(before[p.Name][i]) {
				changed++
			}
		}
	}
	if changed == 0 || changed > budget {
		t.Fatalf("%d entries changed; the budget at density %v is %d of %d", changed, density, budget, all)
	}
	if len(a.Params) == 0 {
		t.Fatal("the loaded adapter has no parameters")
	}
	t.Logf("%d of %d entries changed (budget %d)", changed, all, budget)
}

// The Fisher information is the sum over examples of each entry's squared
// gradient: checked against central differences of each example's loss.
func TestFisherAgainstFiniteDifferences(t *testing.T) {
	base := methodtest.TinyBase(t)
	pm := peft.Wrap(base)
	exs := methodtest.Examples(12)[:3]
	l := base.Layers[1].V
	obj := lossObjective{base, exs}
	f, err := sparse.Fisher(pm, []*nn.Linear{l}, obj, sparse.FisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w := l.Weight.Value.Data
	for _, ix := range []int{0, 5, 37, 100} {
		var want float64
		for i := range exs {
			loss := func(delta float32) float64 {
				old := w[ix]
				w[ix] = old + delta
				v, _ := obj.Loss(&nn.Pass{}, []int{i})
				w[ix] = old
				return float64(v.Value.Data[0])
			}
			const h = 1e-2
			g := (loss(h) - loss(-h)) / (2 * h)
			want += g * g
		}
		if d := math.Abs(float64(f[0][ix]) - want); d > 2e-3*math.Max(want, 1e-3)+1e-6 {
			t.Errorf("Fisher[%d] = %g, finite differences %g", ix, f[0][ix], want)
		}
	}
	if l.Weight.RequiresGrad() || l.Weight.Grad != nil {
		t.Error("Fisher left the weight trainable or its gradient allocated")
	}
}

type lossObjective struct {
	m   *llama.Model
	exs []data.Example
}

func (o lossObjective) Len() int { return len(o.exs) }

func (o lossObjective) Loss(p *nn.Pass, idx []int) (*autograd.Var, error) {
	ids := o.exs[idx[0]].IDs
	in := llama.Input{IDs: ids, Batch: 1, T: len(ids)}
	return o.m.Loss(p, in, llama.LMLabels(in))
}

func TestBadInput(t *testing.T) {
	for _, d := range []string{"0", "-0.1", "1.5"} {
		m := fishmask.New(fishmask.NewConfig())
		err := peft.DecodeConfig([]byte(`{"peft_type":"FISHMASK","density":`+d+`}`), m.Config(), "recipe", true)
		if err == nil || !strings.Contains(err.Error(), "density") {
			t.Errorf("density %s: %v", d, err)
		}
	}
	dir, _ := trainFishMask(t, 0.02)
	path := filepath.Join(dir, peft.WeightsFile)
	ts, meta, err := format.ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(edit func(map[string]*format.Tensor)) string {
		cp := map[string]*format.Tensor{}
		for k, v := range ts {
			c := *v
			c.Data = append([]byte(nil), v.Data...)
			cp[k] = &c
		}
		edit(cp)
		var list []*format.Tensor
		for _, v := range cp {
			list = append(list, v)
		}
		if err := format.WriteSafetensors(path, list, meta); err != nil {
			t.Fatal(err)
		}
		pm := peft.Wrap(methodtest.TinyBase(t))
		_, err := pm.LoadAdapter(dir, peft.DefaultAdapter)
		if err == nil {
			return ""
		}
		for _, l := range pm.Linears() {
			if len(l.Deltas) != 0 {
				t.Errorf("%s keeps a hook after a failed load", l.Name)
			}
		}
		return err.Error()
	}
	var name string
	for k := range ts {
		if strings.HasSuffix(k, sparse.SuffixIndices) {
			name = strings.TrimSuffix(k, sparse.SuffixIndices)
			break
		}
	}
	if msg := rewrite(func(m map[string]*format.Tensor) {
		d := m[name+sparse.SuffixIndices].Data
		binary.LittleEndian.PutUint64(d[len(d)-8:], 1<<40)
	}); !strings.Contains(msg, "outside") || !strings.Contains(msg, name) {
		t.Errorf("index outside its tensor: %q", msg)
	}
	if msg := rewrite(func(m map[string]*format.Tensor) {
		binary.LittleEndian.PutUint64(m[name+sparse.SuffixBase].Data, 12345)
	}); !strings.Contains(msg, "another base") {
		t.Errorf("other base: %q", msg)
	}
	if msg := rewrite(func(m map[string]*format.Tensor) {
		binary.LittleEndian.PutUint64(m[name+sparse.SuffixShape].Data, 99)
	}); !strings.Contains(msg, "shape") {
		t.Errorf("other shape: %q", msg)
	}
	if msg := rewrite(func(m map[string]*format.Tensor) {
		clear(m)
	}); !strings.Contains(msg, "holds no sparse delta") {
		t.Errorf("a file without tensors: %q", msg)
	}
}

// A FishMask run resumed from a checkpoint ends bitwise where the
// uninterrupted run does: the mask is selected again, identically, and
// the values and optimizer state come back.
func TestResumeBitwise(t *testing.T) {
	run := func(dir string, steps int, resume bool) map[string][]float32 {
		c := fishmask.NewConfig()
		c.Density, c.NumSamples = 0.02, 6
		pm := peft.Wrap(methodtest.TinyBase(t))
		a, err := pm.AddAdapter(peft.DefaultAdapter, fishmask.New(c))
		if err != nil {
			t.Fatal(err)
		}
		cfg := train.DefaultConfig()
		cfg.Steps, cfg.BatchSize, cfg.LR, cfg.Schedule, cfg.Warmup, cfg.SaveEvery = steps, 2, 1e-2, "constant", 0, 2
		r := &train.Run{Model: pm, Train: methodtest.Examples(12), OutputDir: dir, Fingerprint: "fm", Config: cfg, Resume: resume}
		if _, err := r.Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		out := map[string][]float32{}
		for _, p := range a.Params {
			out[p.Name] = p.Var.Value.Data
		}
		return out
	}
	ref := run(t.TempDir(), 4, false)
	dir := t.TempDir()
	run(dir, 2, false)
	got := run(dir, 4, true)
	if len(got) != len(ref) || len(got) == 0 {
		t.Fatalf("%d tensors resumed, %d uninterrupted", len(got), len(ref))
	}
	for name, v := range ref {
		for i := range v {
			if math.Float32bits(v[i]) != math.Float32bits(got[name][i]) {
				t.Fatalf("%s[%d]: resumed %v, uninterrupted %v", name, i, got[name][i], v[i])
			}
		}
	}
}

// FisherTopK with its sums bounded to a few targets at a time (one pass
// over the examples per group) selects exactly what the global top-k of
// the whole Fisher does, and leaves no probe, gradient or trainable weight.
func TestFisherTopKBoundedMatchesWhole(t *testing.T) {
	base := methodtest.TinyBase(t)
	pm := peft.Wrap(base)
	ts, err := pm.Targets(&peft.BaseConfig{TargetModules: peft.ModuleRegex("all-linear")})
	if err != nil {
		t.Fatal(err)
	}
	obj := lossObjective{base, methodtest.Examples(12)[:4]}
	whole, err := sparse.Fisher(pm, ts, obj, sparse.FisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{1, 37, 400, 5000} {
		want := sparse.TopK(whole, k)
		for _, mb := range []int64{1, 600, 2000} {
			got, err := sparse.FisherTopK(pm, ts, obj, sparse.FisherOptions{MaxBytes: mb}, k)
			if err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if !slices.Equal(got[i], want[i]) {
					t.Fatalf("k %d, %d bytes: target %s selects %v, the whole Fisher %v", k, mb, ts[i].Name, got[i], want[i])
				}
			}
		}
	}
	for _, l := range ts {
		if len(l.Deltas) != 0 || l.Weight.RequiresGrad() || l.Weight.Grad != nil {
			t.Fatalf("%s keeps %d hooks or a gradient after the Fisher", l.Name, len(l.Deltas))
		}
	}
}
