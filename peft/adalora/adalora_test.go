package adalora

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

func smallModel(t *testing.T) *peft.Model {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	m, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	return peft.Wrap(m)
}

func config(initR, targetR, tinit, tfinal, deltaT, total int) *Config {
	c := NewConfig()
	c.InitR, c.TargetR, c.Tinit, c.Tfinal, c.DeltaT = initR, targetR, tinit, tfinal, deltaT
	c.TotalStep = &total
	c.LoraAlpha = 6
	c.Seed = 4
	return c
}

// TestGolden checks PEFT's AdaLoRA forward (divisor init_r + 1e-5 whatever
// rank a module kept), loss and gradients, from PEFT's sliced file.
func TestGolden(t *testing.T) {
	dir := methodtest.LoadGolden(t, "adalora").Dir
	pm := methodtest.BaseModel(t)
	a, err := pm.LoadAdapter(dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	m := a.Method.(*Method)
	for _, ly := range m.layers {
		if want := count(m.Cfg.RankPattern[ly.patternKey()]); ly.rank() != want {
			t.Errorf("%s holds %d triplets, rank_pattern keeps %d", ly.module, ly.rank(), want)
		}
	}
	g := methodtest.LoadGolden(t, filepath.Base(dir))
	methodtest.CheckLogits(t, pm.Base, g)
	methodtest.CheckLossAndGrads(t, pm, a, g)
}

// TestGoldenMergeAndSave: merged logits equal unmerged, and saving the
// loaded adapter writes PEFT's file back: names, shapes, values and config.
func TestGoldenMergeAndSave(t *testing.T) {
	golden := methodtest.LoadGolden(t, "adalora").Dir
	pm := methodtest.BaseModel(t)
	ids := []int{1, 328, 384, 353, 219, 207, 297, 389}
	base := methodtest.Logits(t, pm.Base, ids)
	if _, err := pm.LoadAdapter(golden, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	adapted := methodtest.Logits(t, pm.Base, ids)
	if methodtest.MaxAbsDiff(base, adapted) < 1e-2 {
		t.Fatal("the golden adapter hardly changes the logits")
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
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	want, _, err := format.ReadSafetensors(filepath.Join(golden, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("saved %d tensors, golden %d", len(got), len(want))
	}
	for n, w := range want {
		g, ok := got[n]
		if !ok || !reflect.DeepEqual(w.Shape, g.Shape) || string(w.Data) != string(g.Data) {
			t.Errorf("%s differs after save", n)
		}
	}
	var gcfg, ocfg map[string]any
	readJSON(t, filepath.Join(golden, peft.ConfigFile), &gcfg)
	readJSON(t, filepath.Join(dir, peft.ConfigFile), &ocfg)
	for k, v := range gcfg {
		if k != "inference_mode" && !reflect.DeepEqual(v, ocfg[k]) {
			t.Errorf("key %q: saved %v, golden %v", k, ocfg[k], v)
		}
	}
	for k := range ocfg {
		if _, ok := gcfg[k]; !ok {
			t.Errorf("saved config has key %q, which PEFT does not write", k)
		}
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// TestBudgetSchedule compares b(t) at every step with METHODS.md §6's
// formula, computed here independently.
func TestBudgetSchedule(t *testing.T) {
	for _, c := range []*Config{config(12, 8, 0, 0, 1, 100), config(4, 2, 20, 40, 10, 200), config(6, 1, 3, 5, 3, 17)} {
		layers := 10
		b0, bT := c.InitR*layers, c.TargetR*layers
		T := *c.TotalStep
		for step := 0; step < T+5; step++ {
			var want int
			var mask bool
			switch {
			case step <= c.Tinit:
				want = b0
			case step > T-c.Tfinal:
				want, mask = bT, true
			default:
				frac := 1 - float64(step-c.Tinit)/float64(T-c.Tfinal-c.Tinit)
				want = int(math.Floor(float64(bT) + float64(b0-bT)*math.Pow(frac, 3)))
				mask = step%c.DeltaT == 0
			}
			got, gotMask := Budget(c, b0, bT, step)
			if got != want || gotMask != mask {
				t.Errorf("init_r %d target_r %d tinit %d tfinal %d deltaT %d T %d: step %d: b = %d mask %v, want %d %v",
					c.InitR, c.TargetR, c.Tinit, c.Tfinal, c.DeltaT, T, step, got, gotMask, want, mask)
			}
		}
	}
}

// TestAllocationWithKnownScores drives the allocator with gradients that
// make every entry's sensitivity a known constant c_i per triplet, so the
// triplets rank by c_i: at each masking step exactly b(t) triplets keep
// λ ≠ 0, the kept ones are the b(t) highest c_i, and the final
// rank_pattern is the b_T highest.
func TestAllocationWithKnownScores(t *testing.T) {
	pm := smallModel(t)
	c := config(4, 2, 2, 3, 2, 15)
	c.TargetModules = peft.ModuleList("q_proj", "v_proj", "down_proj")
	m := New(c)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	type trip struct {
		layer, q int
		c        float32
	}
	var trips []trip
	perm := tensor.NewRNG(3).Perm(len(m.layers) * c.InitR)
	for li := range m.layers {
		for q := 0; q < c.InitR; q++ {
			trips = append(trips, trip{li, q, 0.1 + float32(perm[li*c.InitR+q])})
		}
	}
	// w = 1 and ∂L/∂w = c: I = |w·∂L/∂w| = c for every entry of the triplet.
	for _, tr := range trips {
		ly := m.layers[tr.layer]
		in, out, r := ly.linear.In(), ly.linear.Out(), ly.rank()
		for _, p := range []*autograd.Var{ly.A, ly.B, ly.E} {
			p.GradBuf()
		}
		for j := 0; j < in; j++ {
			ly.A.Value.Data[tr.q*in+j], ly.A.Grad.Data[tr.q*in+j] = 1, tr.c
		}
		for j := 0; j < out; j++ {
			ly.B.Value.Data[j*r+tr.q], ly.B.Grad.Data[j*r+tr.q] = 1, tr.c
		}
		ly.E.Value.Data[tr.q], ly.E.Grad.Data[tr.q] = 1, tr.c
	}
	sort.Slice(trips, func(i, j int) bool { return trips[i].c > trips[j].c })
	b0, bT := len(trips), c.TargetR*len(m.layers)
	T := *c.TotalStep
	for step := 0; step < T+3; step++ {
		if err := m.AfterUpdate(step); err != nil {
			t.Fatal(err)
		}
		budget, mask := Budget(c, b0, bT, step)
		if !mask && step != T-c.Tfinal {
			continue
		}
		for rank, tr := range trips {
			kept := m.layers[tr.layer].E.Value.Data[tr.q] != 0
			if want := rank < budget; kept != want {
				t.Fatalf("step %d (b = %d): triplet %d of %s with score rank %d kept = %v", step, budget, tr.q, m.layers[tr.layer].module, rank, kept)
			}
		}
	}
	for rank, tr := range trips {
		ly := m.layers[tr.layer]
		if got, want := c.RankPattern[ly.patternKey()][tr.q], rank < bT; got != want {
			t.Errorf("final rank_pattern[%s][%d] = %v, want %v", ly.patternKey(), tr.q, got, want)
		}
	}
}

// TestGradientsMatchFiniteDifferences checks Q, λ and P through a small
// model, and the regulariser's gradient.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	pm := smallModel(t)
	c := config(3, 2, 0, 0, 1, 10)
	c.TargetModules = peft.ModuleList("q_proj", "up_proj")
	m := New(c)
	a, err := pm.AddAdapter(peft.DefaultAdapter, m)
	if err != nil {
		t.Fatal(err)
	}
	g := tensor.NewRNG(5)
	var inputs []*autograd.Var
	for _, p := range a.Params {
		p.Var.Value.Normal(g, 0, 0.5)
		inputs = append(inputs, p.Var)
	}
	ids := []int{1, 3, 5, 7, 9, 2}
	if _, err := autograd.GradCheckModel(inputs, func(tp *autograd.Tape) *autograd.Var {
		p := &nn.Pass{Tape: tp}
		h, err := pm.Base.Forward(p, llama.Input{IDs: ids, Batch: 1, T: len(ids)})
		if err != nil {
			t.Fatal(err)
		}
		return pm.Base.Logits(p, h)
	}); err != nil {
		t.Error(err)
	}
	for _, cols := range []bool{false, true} {
		p := autograd.Param("p", tensor.New(5, 3).Normal(g, 0, 0.7), true)
		if _, err := autograd.GradCheck([]*autograd.Var{p}, func(tp *autograd.Tape) *autograd.Var {
			return orthDistance(tp, p, cols)
		}); err != nil {
			t.Errorf("orthogonality distance (columns %v): %v", cols, err)
		}
	}
}

// TestOrthRegulariserValue: ExtraLoss is γ·mean(‖QQᵀ−I‖_F, ‖PᵀP−I‖_F)
// computed directly, and a training run's logged loss includes it.
func TestOrthRegulariserValue(t *testing.T) {
	pm := smallModel(t)
	c := config(3, 2, 0, 0, 1, 10)
	m := New(c)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, ly := range m.layers {
		sum += frobDist(ly.A.Value, false) + frobDist(ly.B.Value, true)
	}
	want := c.OrthRegWeight * sum / float64(2*len(m.layers))
	got, err := m.ExtraLoss(&nn.Pass{Tape: autograd.NewTape()})
	if err != nil {
		t.Fatal(err)
	}
	if d := math.Abs(float64(got.Value.Data[0]) - want); d > 1e-5*want {
		t.Errorf("regulariser %v, direct %v", got.Value.Data[0], want)
	}

	// Two runs that differ only in orth_reg_weight log first losses that
	// differ by the regulariser at the initial parameters.
	first := func(w float64) float64 {
		pm := smallModel(t)
		c := config(3, 2, 0, 0, 1, 10)
		c.OrthRegWeight = w
		if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
			t.Fatal(err)
		}
		cfg := train.DefaultConfig()
		cfg.Steps, cfg.BatchSize, cfg.LR = 1, 2, 1e-3
		run := &train.Run{Model: pm, Train: methodtest.Examples(16), OutputDir: t.TempDir(), Fingerprint: "orth", Config: cfg}
		s, err := run.Execute(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return s.FirstLoss
	}
	if d := first(0.5) - first(0); math.Abs(d-want) > 1e-4 {
		t.Errorf("logged loss with orth_reg_weight 0.5 exceeds the one without by %v, the regulariser is %v", d, want)
	}
}

func frobDist(p *tensor.Tensor, cols bool) float64 {
	rows, n := p.Shape[0], p.Shape[1]
	at := func(i, j int) float64 { return float64(p.Data[i*n+j]) }
	r, k := rows, n
	if cols {
		r, k = n, rows
	}
	var s float64
	for i := 0; i < r; i++ {
		for j := 0; j < r; j++ {
			var m float64
			for q := 0; q < k; q++ {
				if cols {
					m += at(q, i) * at(q, j)
				} else {
					m += at(i, q) * at(j, q)
				}
			}
			if i == j {
				m--
			}
			s += m * m
		}
	}
	return math.Sqrt(s)
}

// trainRun trains AdaLoRA on a small model for steps updates into dir
// (resuming when asked) and returns the method and its parameters.
func trainRun(t *testing.T, dir string, steps int, resume bool) (*Method, nn.Params, *peft.Model) {
	t.Helper()
	pm := smallModel(t)
	c := config(4, 2, 0, 2, 1, 8) // masking at every update from 1 on
	c.TargetModules = peft.ModuleRegex("all-linear")
	c.OrthRegWeight = 0.1
	m := New(c)
	a, err := pm.AddAdapter(peft.DefaultAdapter, m)
	if err != nil {
		t.Fatal(err)
	}
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.GradAccum, cfg.LR, cfg.Schedule, cfg.Warmup, cfg.SaveEvery, cfg.Seed = steps, 2, 2, 2e-2, "constant", 0, 3, 3
	run := &train.Run{Model: pm, Train: methodtest.Examples(16), OutputDir: dir, Fingerprint: "adalora", Resume: resume, Config: cfg}
	if _, err := run.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m, a.Params, pm
}

// TestResumeIsBitwise: a run stopped after update 3 and resumed ends where
// the uninterrupted run does, bit for bit: parameters, the averages and
// the rank pattern (masking happens on both sides of the break).
func TestResumeIsBitwise(t *testing.T) {
	ref, refParams, _ := trainRun(t, t.TempDir(), 9, false)
	if ref.Cfg.RankPattern == nil {
		t.Fatal("the run never masked")
	}
	dir := t.TempDir()
	trainRun(t, dir, 3, false)
	got, params, _ := trainRun(t, dir, 9, true)
	for i, p := range params {
		for j, v := range p.Var.Value.Data {
			if math.Float32bits(v) != math.Float32bits(refParams[i].Var.Value.Data[j]) {
				t.Fatalf("%s[%d]: resumed %v, uninterrupted %v", p.Name, j, v, refParams[i].Var.Value.Data[j])
			}
		}
	}
	if !reflect.DeepEqual(ref.Cfg.RankPattern, got.Cfg.RankPattern) {
		t.Errorf("rank_pattern: resumed %v, uninterrupted %v", got.Cfg.RankPattern, ref.Cfg.RankPattern)
	}
	for i := range ref.alloc.avgIpt {
		if !slices.Equal(ref.alloc.avgIpt[i], got.alloc.avgIpt[i]) || !slices.Equal(ref.alloc.avgUnc[i], got.alloc.avgUnc[i]) {
			t.Fatalf("importance averages of tensor %d differ after resume", i)
		}
	}
}

// TestTrainedSaveLoad: after training, the file holds each module's kept
// triplets only, rank_pattern in its config, total ranks b_T; loading it
// resizes the modules, keeps the divisor at init_r, and gives the trained
// model's logits.
func TestTrainedSaveLoad(t *testing.T) {
	m, _, pm := trainRun(t, t.TempDir(), 9, false)
	ids := []int{1, 5, 7, 3, 9, 11}
	want := methodtest.Logits(t, pm.Base, ids)
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, ly := range m.layers {
		kept := count(m.Cfg.RankPattern[ly.patternKey()])
		total += kept
		for _, p := range []struct {
			suffix string
			shape  []int
		}{{".lora_A", []int{kept, ly.linear.In()}}, {".lora_B", []int{ly.linear.Out(), kept}}, {".lora_E", []int{kept, 1}}} {
			tt, ok := ts[peft.SavePrefix+ly.module+p.suffix]
			if !ok || !reflect.DeepEqual(tt.Shape, p.shape) {
				t.Errorf("%s%s: saved %v, want shape %v", ly.module, p.suffix, tt, p.shape)
			}
		}
	}
	if total != m.Cfg.TargetR*len(m.layers) {
		t.Errorf("the file keeps %d ranks, the final budget is %d", total, m.Cfg.TargetR*len(m.layers))
	}
	if len(ts) != 3*len(m.layers) {
		t.Errorf("%d tensors saved (ranknum must not be)", len(ts))
	}
	var cfg map[string]any
	readJSON(t, filepath.Join(dir, peft.ConfigFile), &cfg)
	if cfg["peft_type"] != "ADALORA" || cfg["rank_pattern"] == nil || cfg["total_step"] != float64(8) {
		t.Errorf("saved config: peft_type %v rank_pattern %v total_step %v", cfg["peft_type"], cfg["rank_pattern"], cfg["total_step"])
	}
	pm2 := smallModel(t)
	a, err := pm2.LoadAdapter(dir, "loaded")
	if err != nil {
		t.Fatal(err)
	}
	for _, ly := range a.Method.(*Method).layers {
		if want := float32(6) / (4 + 1e-5); ly.scale != want {
			t.Errorf("%s: scale %v after load, want lora_alpha/(init_r + 1e-5) = %v", ly.module, ly.scale, want)
		}
	}
	if d := methodtest.MaxAbsDiff(want, methodtest.Logits(t, pm2.Base, ids)); d > 1e-5 {
		t.Errorf("the reloaded adapter's logits differ from the trained model's by %g", d)
	}
}

// TestBadInput: AdaLoRA without total_step, a rank_pattern that does not
// match the tensors or names no module, and DoRA are refused naming the
// key and the tensor.
func TestBadInput(t *testing.T) {
	c := NewConfig()
	err := peft.DecodeConfig([]byte(`{"target_modules": ["q_proj"]}`), c, "recipe peft block", true)
	var ke *peft.KeyError
	if !errors.As(err, &ke) || ke.Key != "total_step" {
		t.Errorf("no total_step: %v", err)
	}
	c = NewConfig()
	if err := peft.DecodeConfig([]byte(`{"total_step": 10, "use_dora": true}`), c, "f", false); !errors.As(err, &ke) || ke.Key != "use_dora" {
		t.Errorf("use_dora: %v", err)
	}

	golden := methodtest.LoadGolden(t, "adalora").Dir
	copyWith := func(edit func(cfg map[string]any)) string {
		dir := t.TempDir()
		b, err := os.ReadFile(filepath.Join(golden, peft.WeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, peft.WeightsFile), b, 0o644)
		var cfg map[string]any
		readJSON(t, filepath.Join(golden, peft.ConfigFile), &cfg)
		edit(cfg)
		b, _ = json.Marshal(cfg)
		os.WriteFile(filepath.Join(dir, peft.ConfigFile), b, 0o644)
		return dir
	}
	key := "model.layers.0.self_attn.o_proj.lora_E"
	dir := copyWith(func(cfg map[string]any) {
		cfg["rank_pattern"].(map[string]any)[key] = []bool{true, true, true, true}
	})
	pm := methodtest.BaseModel(t)
	_, err = pm.LoadAdapter(dir, peft.DefaultAdapter)
	if err == nil || !strings.Contains(err.Error(), "o_proj.lora_") || !strings.Contains(err.Error(), key) {
		t.Errorf("rank_pattern not matching the tensors: %v", err)
	}
	dir = copyWith(func(cfg map[string]any) {
		cfg["rank_pattern"].(map[string]any)["model.layers.0.self_attn.q_proj.lora_E"] = []bool{true, true, true, true}
	})
	if _, err = pm.LoadAdapter(dir, peft.DefaultAdapter); err == nil || !strings.Contains(err.Error(), "q_proj.lora_E") {
		t.Errorf("rank_pattern key naming no target: %v", err)
	}
	dir = copyWith(func(cfg map[string]any) {
		cfg["rank_pattern"].(map[string]any)[key] = []bool{true, false}
	})
	if _, err = pm.LoadAdapter(dir, peft.DefaultAdapter); err == nil || !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "init_r") {
		t.Errorf("rank_pattern list of the wrong length: %v", err)
	}
	t.Logf("last error: %v", err)
	if len(pm.Adapters()) != 0 {
		t.Errorf("failed loads left adapters %v", pm.Adapters())
	}
}

// A module whose every triplet was pruned is saved with rank-0 tensors, as
// PEFT saves it, and loads back as a module that adds nothing.
func TestModulePrunedToRankZero(t *testing.T) {
	m, _, pm := trainRun(t, t.TempDir(), 9, false)
	ly := m.layers[0]
	keep := m.Cfg.RankPattern[ly.patternKey()]
	for q := range keep {
		keep[q] = false
		ly.E.Value.Data[q] = 0
	}
	ids := []int{1, 5, 7, 3, 9, 11}
	want := methodtest.Logits(t, pm.Base, ids)
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if a := ts[ly.A.Name]; a == nil || !reflect.DeepEqual(a.Shape, []int{0, ly.linear.In()}) {
		t.Fatalf("the pruned module's lora_A saved as %v, want shape [0 %d]", a, ly.linear.In())
	}
	pm2 := smallModel(t)
	if _, err := pm2.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(want, methodtest.Logits(t, pm2.Base, ids)); d > 1e-5 {
		t.Errorf("reloaded logits differ by %g", d)
	}
}
