package diffpruning_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/diffpruning"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-6*(1+math.Abs(b)) }

// The hard-concrete gate on hand-computed entries: α = log 2, u = ½ gives
// s = ⅔, s̄ = ½, z = ½, so with w = 2 and an upstream gradient 1, ∂w = ½
// and ∂α = w·(r−l)·s(1−s) = 2·3·2/9 = 4/3; u = 0.2, α = 0 gives s = 0.2,
// s̄ = −0.9, z = 0 and no gradient to α; α = 5, u = ½ saturates at z = 1.
func TestGateHandComputed(t *testing.T) {
	w := autograd.Param("w", tensor.FromData([]float32{2, 3, 4}, 1, 3), true)
	a := autograd.Param("a", tensor.FromData([]float32{float32(math.Log(2)), 0, 5}, 1, 3), true)
	tp := autograd.NewTape()
	out := diffpruning.Gated(tp, w, a, []float32{0.5, 0.2, 0.5})
	tp.Backward(tp.Sum(out))
	wantOut := []float64{1, 0, 4}
	wantDW := []float64{0.5, 0, 1}
	wantDA := []float64{4.0 / 3, 0, 0}
	for i := range wantOut {
		if !near(float64(out.Value.Data[i]), wantOut[i]) || !near(float64(w.Grad.Data[i]), wantDW[i]) || !near(float64(a.Grad.Data[i]), wantDA[i]) {
			t.Fatalf("entry %d: z⊙w %v ∂w %v ∂α %v, want %v %v %v", i, out.Value.Data[i], w.Grad.Data[i], a.Grad.Data[i], wantOut[i], wantDW[i], wantDA[i])
		}
	}
	// The L0 term at α = log(−l/r) = 0 is λ·σ(0) = λ/2 per entry, with
	// gradient λ·¼.
	al := autograd.Param("al", tensor.FromData([]float32{0, 0}, 2), true)
	tp = autograd.NewTape()
	l0 := diffpruning.L0(tp, 0.1, []*autograd.Var{al})
	tp.Backward(l0)
	if !near(float64(l0.Value.Data[0]), 0.1) || !near(float64(al.Grad.Data[0]), 0.025) {
		t.Fatalf("L0 %v, ∂α %v; want 0.1, 0.025", l0.Value.Data[0], al.Grad.Data[0])
	}
}

// With a fixed u, the gate's manual gradients and the L0 term's match
// central finite differences (α kept where 0 < s̄ < 1, away from the clip).
func TestGradientsFiniteDifferences(t *testing.T) {
	g := tensor.NewRNG(3)
	const n = 12
	u := make([]float32, n)
	wv, av := make([]float32, n), make([]float32, n)
	for i := range u {
		u[i] = 0.3 + 0.4*g.Float32()
		av[i] = 0.6 * (g.Float32() - 0.5)
		wv[i] = g.Float32() - 0.5
	}
	w := autograd.Param("w", tensor.FromData(wv, 3, 4), true)
	a := autograd.Param("a", tensor.FromData(av, 3, 4), true)
	x := autograd.Param("x", tensor.New(2, 4).Normal(g, 0, 1), true)
	worst, err := autograd.GradCheck([]*autograd.Var{w, a, x}, func(tp *autograd.Tape) *autograd.Var {
		d := diffpruning.Gated(tp, w, a, u)
		y := tp.Linear(x, d)
		return tp.Add(tp.Sum(y), diffpruning.L0(tp, 0.3, []*autograd.Var{a}))
	})
	if err != nil {
		t.Fatalf("worst %v: %v", worst, err)
	}
}

const density = 0.02

// run trains diff pruning (3 relaxation updates, then pruning, then the
// fixed mask) into dir, checkpointing every 2 updates.
func run(t *testing.T, dir string, steps int, resume bool) (*diffpruning.Method, *peft.Model, []float32) {
	t.Helper()
	base := methodtest.TinyBase(t)
	var before []float32
	for _, p := range base.Params() {
		before = append(before, p.Var.Value.Data...)
	}
	c := diffpruning.NewConfig()
	c.Density, c.L0Steps, c.L0Lambda, c.AlphaInit, c.AlphaLRScale = density, 3, 1e-3, 2, 1
	m := diffpruning.New(c)
	pm := peft.Wrap(base)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.LR, cfg.Schedule, cfg.Warmup, cfg.SaveEvery = steps, 2, 1e-2, "constant", 0, 2
	r := &train.Run{Model: pm, Train: methodtest.Examples(8), OutputDir: dir, Fingerprint: "diff", Config: cfg, Resume: resume}
	if _, err := r.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m, pm, before
}

// The three stages from one run: after pruning only the kept entries of w
// are nonzero and stay so through the fixed-mask stage (≤ ⌊density·P⌋);
// the saved sparse delta loads to the trained logits, and the merged model
// differs from the base only at those entries, bitwise elsewhere.
func TestStagesSaveAndLoad(t *testing.T) {
	m, pm, before := run(t, t.TempDir(), 6, false)
	if m.Mask == nil {
		t.Fatal("never pruned")
	}
	all, _ := pm.Base.Params().Count()
	k := int(math.Floor(density * float64(all)))
	nonzero := 0
	for t2, w := range m.W {
		for i, v := range w.Value.Data {
			if v != 0 {
				nonzero++
				if m.Mask[t2][i] == 0 {
					t.Fatalf("%s[%d] = %v outside the mask", w.Name, i, v)
				}
			}
		}
	}
	if nonzero == 0 || nonzero > k {
		t.Fatalf("%d entries of w nonzero, budget %d", nonzero, k)
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
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := pm.Save(dir); err != nil {
		t.Fatal(err)
	}
	base := methodtest.TinyBase(t)
	pm2 := peft.Wrap(base)
	a, err := pm2.LoadAdapter(dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := a.Params.Count(); n != nonzero {
		t.Fatalf("the file holds %d entries, %d were kept", n, nonzero)
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
		for _, v := range p.Var.Value.Data {
			if math.Float32bits(v) != math.Float32bits(before[j]) {
				n++
			}
			j++
		}
	}
	if n == 0 || n > nonzero {
		t.Fatalf("merged model differs at %d entries; %d kept", n, nonzero)
	}
}

// Runs stopped before pruning (step 2) and after it (step 4), then
// resumed, end bitwise where the uninterrupted run does: w, α, the mask.
func TestResumeBitwise(t *testing.T) {
	ref, _, _ := run(t, t.TempDir(), 6, false)
	for _, stop := range []int{2, 4} {
		dir := t.TempDir()
		run(t, dir, stop, false)
		got, _, _ := run(t, dir, 6, true)
		for i := range ref.W {
			for _, pair := range [][2]*autograd.Var{{ref.W[i], got.W[i]}, {ref.Alpha[i], got.Alpha[i]}} {
				for e, v := range pair[0].Value.Data {
					if math.Float32bits(v) != math.Float32bits(pair[1].Value.Data[e]) {
						t.Fatalf("stopped at %d: %s[%d] is %v resumed, %v uninterrupted", stop, pair[0].Name, e, pair[1].Value.Data[e], v)
					}
				}
			}
			for e, v := range ref.Mask[i] {
				if got.Mask[i][e] != v {
					t.Fatalf("stopped at %d: mask %d differs at %d", stop, i, e)
				}
			}
		}
	}
}

func TestBadConfig(t *testing.T) {
	for _, mod := range []func(*diffpruning.Config){
		func(c *diffpruning.Config) { c.Density = 0 },
		func(c *diffpruning.Config) { c.Density = 1.5 },
		func(c *diffpruning.Config) { c.L0Steps = -1 },
		func(c *diffpruning.Config) { c.AlphaLRScale = 0 },
		func(c *diffpruning.Config) { c.L0Lambda = math.NaN() },
	} {
		c := diffpruning.NewConfig()
		mod(c)
		if _, err := peft.Wrap(methodtest.TinyBase(t)).AddAdapter(peft.DefaultAdapter, diffpruning.New(c)); err == nil {
			t.Errorf("config %+v accepted", *c)
		}
	}
}
