package fishdip_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/fishdip"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/train"
)

// run trains Fish-Dip (a refresh every 2 updates) into dir and returns the
// method, its wrapped model and the base as it was.
func run(t *testing.T, dir string, steps int, resume bool) (*fishdip.Method, *peft.Model, []float32) {
	t.Helper()
	base := methodtest.TinyBase(t)
	var before []float32
	for _, p := range base.Params() {
		before = append(before, p.Var.Value.ToF32().Data...)
	}
	c := fishdip.NewConfig()
	c.Density, c.ReevaluateAfterSteps, c.NumSamples = 0.02, 2, 4
	m := fishdip.New(c)
	pm := peft.Wrap(base)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.LR, cfg.Schedule, cfg.Warmup, cfg.SaveEvery, cfg.WeightDecay = steps, 2, 2e-2, "constant", 0, 3, 0.1
	r := &train.Run{Model: pm, Train: methodtest.Examples(12), OutputDir: dir, Fingerprint: "dip", Config: cfg, Resume: resume}
	if _, err := r.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m, pm, before
}

// The mask moves (the saved delta changes more entries than one mask
// holds), the merged model differs from the base exactly at the saved
// entries, and the saved file applies on load as the trained hooks did.
func TestRefreshMovesTheMask(t *testing.T) {
	m, pm, before := run(t, t.TempDir(), 6, false)
	all, _ := pm.Base.Params().Count()
	k := int(math.Floor(0.02 * float64(all)))
	changed := m.Changed()
	if changed <= k {
		t.Fatalf("after 3 refreshes %d entries changed, one mask holds %d: the mask never moved", changed, k)
	}
	if got := m.Cfg.ChangedDensity * float64(all); math.Abs(got-float64(changed)) > 0.5 {
		t.Fatalf("changed_density records %v entries, %d changed", got, changed)
	}
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := pm.Save(dir); err != nil {
		t.Fatal(err)
	}
	ids := []int{1, 4, 5, 6, 7, 8}
	in := llama.Input{IDs: ids, Batch: 1, T: len(ids)}
	logits := func(lm *llama.Model) []float32 {
		h, err := lm.Forward(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		return lm.Logits(nil, h).Value.Data
	}
	trained := logits(pm.Base)

	base := methodtest.TinyBase(t)
	pm2 := peft.Wrap(base)
	if _, err := pm2.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	for i, v := range logits(base) {
		if math.Abs(float64(v-trained[i])) > 1e-5 {
			t.Fatalf("loaded logit %d is %v, trained %v", i, v, trained[i])
		}
	}
	merged, err := pm2.MergeAndUnload()
	if err != nil {
		t.Fatal(err)
	}
	n, j := 0, 0
	for _, p := range merged.Params() {
		for _, v := range p.Var.Value.ToF32().Data {
			if math.Float32bits(v) != math.Float32bits(before[j]) {
				n++
			}
			j++
		}
	}
	if n == 0 || n > changed {
		t.Fatalf("the merged model differs from the base at %d entries; the delta changes %d", n, changed)
	}
}

// A run stopped between refreshes and resumed ends bitwise where the
// uninterrupted run does: masks, frozen changes, slots and the optimizer's
// moved moments all come back.
func TestResumeBitwise(t *testing.T) {
	ref, _, _ := run(t, t.TempDir(), 7, false)
	dir := t.TempDir()
	run(t, dir, 3, false)
	got, _, _ := run(t, dir, 7, true)
	a, err := ref.SaveTensors()
	if err != nil {
		t.Fatal(err)
	}
	b, err := got.SaveTensors()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%d tensors resumed, %d uninterrupted", len(b), len(a))
	}
	for i := range a {
		if a[i].Name != b[i].Name || string(a[i].Data) != string(b[i].Data) {
			t.Fatalf("tensor %s differs after resuming", a[i].Name)
		}
	}
	sa, sb := ref.TrainState(), got.TrainState()
	if string(sa.JSON) != string(sb.JSON) {
		t.Fatal("the masks differ after resuming")
	}
}

func TestBadConfig(t *testing.T) {
	for _, mod := range []func(*fishdip.Config){
		func(c *fishdip.Config) { c.Density = 0 },
		func(c *fishdip.Config) { c.ReevaluateAfterSteps = 0 },
		func(c *fishdip.Config) { c.NumSamples = 0 },
		func(c *fishdip.Config) { c.MaxFisherMiB = -1 },
	} {
		c := fishdip.NewConfig()
		mod(c)
		if c.Validate() == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}
