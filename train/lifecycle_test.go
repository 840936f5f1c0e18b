package train_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

// lifecycle is LoRA with every part of the trainer's lifecycle: it records
// the dropout mask each micro-batch's pass draws (through its extra loss
// term, a small L2 penalty on the B factors), zeroes one tensor's gradient
// before each update, trains another at learning rate 0, and counts its
// updates in checkpointed state.
type lifecycle struct {
	*lora.Method
	masks   []string // each micro-batch's mask, in order
	updates float64
	params  nn.Params
}

func (m *lifecycle) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	ps, err := m.Method.Attach(pm, a)
	m.params = ps
	return ps, err
}

func (m *lifecycle) ExtraLoss(p *nn.Pass) (*autograd.Var, error) {
	ones := tensor.New(64)
	for i := range ones.Data {
		ones.Data[i] = 1
	}
	kept := p.Dropout(autograd.Const(ones), 0.5, "probe").Value.Data
	m.masks = append(m.masks, fmt.Sprint(kept))
	var l2 *autograd.Var
	for _, q := range m.params {
		if q.Var.Value.Shape[1] == m.Cfg.R { // a B factor [out, r]
			sq := p.Tape.Sum(p.Tape.Mul(q.Var, q.Var))
			if l2 == nil {
				l2 = sq
			} else {
				l2 = p.Tape.Add(l2, sq)
			}
		}
	}
	return p.Tape.Scale(l2, 1e-3), nil
}

func (m *lifecycle) BeforeUpdate(int) error {
	m.params[0].Var.Grad.Zero()
	return nil
}

func (m *lifecycle) AfterUpdate(int) error { m.updates++; return nil }

func (m *lifecycle) ParamGroups() []peft.ParamGroup {
	return []peft.ParamGroup{{Name: "frozen", Params: []string{m.params[2].Name}, LRScale: 0}}
}

func (m *lifecycle) TrainState() peft.State {
	js, _ := json.Marshal(m.updates)
	return peft.State{Tensors: map[string]*tensor.Tensor{"updates": tensor.FromData([]float32{float32(m.updates)}, 1)}, JSON: js}
}

func (m *lifecycle) RestoreTrainState(s peft.State) error {
	var u float64
	if err := json.Unmarshal(s.JSON, &u); err != nil {
		return err
	}
	if t := s.Tensors["updates"]; t == nil || float64(t.Data[0]) != u {
		return fmt.Errorf("state tensor %v disagrees with its JSON %v", s.Tensors["updates"], u)
	}
	m.updates = u
	return nil
}

// newLifecycle attaches the lifecycle method to a small random model and
// makes its training data.
func newLifecycle(t *testing.T) (*lifecycle, nn.Params, *peft.Model, []data.Example) {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	base, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	c := lora.NewConfig()
	c.LoraDropout, c.Seed, c.TargetModules = 0.3, 7, peft.ModuleRegex("all-linear")
	c.InitLoraWeights = lora.InitRandom // B ≠ 0: every factor gets a gradient
	m := &lifecycle{Method: lora.New(c)}
	pm := peft.Wrap(base)
	a, err := pm.AddAdapter("default", m)
	if err != nil {
		t.Fatal(err)
	}
	exs := methodtest.Examples(16)
	return m, a.Params, pm, exs
}

// lifecycleRun trains the lifecycle method for steps updates into dir.
func lifecycleRun(t *testing.T, dir string, steps int, resume bool) (*lifecycle, nn.Params) {
	t.Helper()
	m, ps, pm, exs := newLifecycle(t)
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.GradAccum, cfg.LR, cfg.Schedule, cfg.Warmup, cfg.SaveEvery, cfg.Seed = steps, 2, 2, 1e-2, "constant", 0, 2, 3
	run := &train.Run{Model: pm, Train: exs, OutputDir: dir, Fingerprint: "lifecycle", Resume: resume, Config: cfg}
	if _, err := run.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m, ps
}

// Every hook of the trainer's lifecycle runs at its point, the two
// micro-batches of an accumulated update draw different dropout masks, and
// a run resumed from a checkpoint ends bitwise where the uninterrupted run
// does, its method state included.
func TestTrainerLifecycle(t *testing.T) {
	_, init, _, _ := newLifecycle(t)
	ref, refParams := lifecycleRun(t, t.TempDir(), 4, false)
	if len(ref.masks) != 8 {
		t.Fatalf("%d micro-batches recorded in 4 updates of 2", len(ref.masks))
	}
	for i, a := range ref.masks {
		for _, b := range ref.masks[i+1:] {
			if a == b {
				t.Errorf("micro-batch %d (update %d) drew a mask another micro-batch drew too", i, i/2)
			}
		}
	}
	if ref.updates != 4 {
		t.Errorf("AfterUpdate ran %v times in 4 updates", ref.updates)
	}
	for i, p := range refParams {
		same := slices.Equal(p.Var.Value.Data, init[i].Var.Value.Data)
		if want := i == 0 || i == 2; same != want {
			t.Errorf("%s (index %d) unchanged = %v: the gradient mask (0) and the zero-rate group (2) keep their tensors, the others train", p.Name, i, same)
		}
	}

	dir := t.TempDir()
	lifecycleRun(t, dir, 2, false)
	resumed, params := lifecycleRun(t, dir, 4, true)
	if resumed.updates != 4 {
		t.Errorf("the resumed run's method counts %v updates, want 4 (2 restored + 2)", resumed.updates)
	}
	if !slices.Equal(resumed.masks, ref.masks[4:]) {
		t.Error("updates 3 and 4 of the resumed run drew other dropout masks than the uninterrupted run's")
	}
	for i, p := range params {
		for j, v := range p.Var.Value.Data {
			if math.Float32bits(v) != math.Float32bits(refParams[i].Var.Value.Data[j]) {
				t.Fatalf("%s[%d]: resumed %v, uninterrupted %v", p.Name, j, v, refParams[i].Var.Value.Data[j])
			}
		}
	}
}

// A run with the 8-bit optimizer resumed from its checkpoint ends bitwise
// where the uninterrupted run does. The model is big enough that LoRA's q,
// v and gate A factors (64×64) keep 8-bit state and the gate's B (32×64)
// float32 state, so the checkpoint holds both.
func TestTrainerResumeAdamW8bit(t *testing.T) {
	run := func(dir string, steps int, resume bool) nn.Params {
		t.Helper()
		cfg := llama.Config{HiddenSize: 64, IntermediateSize: 32, NumHiddenLayers: 1, NumAttentionHeads: 4, NumKeyValueHeads: 4,
			VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
		base, err := llama.NewRandom(cfg, 5)
		if err != nil {
			t.Fatal(err)
		}
		c := lora.NewConfig()
		c.R, c.LoraAlpha, c.Seed, c.TargetModules = 64, 64, 7, peft.ModuleList("q_proj", "v_proj", "gate_proj")
		c.InitLoraWeights = lora.InitRandom
		pm := peft.Wrap(base)
		a, err := pm.AddAdapter("default", lora.New(c))
		if err != nil {
			t.Fatal(err)
		}
		exs := methodtest.Examples(8)
		tc := train.DefaultConfig()
		tc.Steps, tc.BatchSize, tc.LR, tc.Schedule, tc.Warmup, tc.SaveEvery, tc.Optimizer = steps, 2, 1e-2, "constant", 0, 2, "adamw_8bit"
		r := &train.Run{Model: pm, Train: exs, OutputDir: dir, Fingerprint: "adamw8bit", Resume: resume, Config: tc}
		if _, err := r.Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		return a.Params
	}
	ref := run(t.TempDir(), 4, false)
	dir := t.TempDir()
	run(dir, 2, false)
	ck, err := train.LoadCheckpoint(train.CheckpointDir(dir, 2))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, ps := range ck.Optimizer.Params {
		kinds[fmt.Sprint(sortedNames(ps.Buffers), sortedNames(ps.Codes))]++
	}
	if want := map[string]int{"[absmax1 absmax2] [state1 state2]": 5, "[exp_avg exp_avg_sq] []": 1}; fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Fatalf("checkpointed optimizer buffers %v, want %v", kinds, want)
	}
	got := run(dir, 4, true)
	for i, p := range got {
		for j, v := range p.Var.Value.Data {
			if math.Float32bits(v) != math.Float32bits(ref[i].Var.Value.Data[j]) {
				t.Fatalf("%s[%d]: resumed %v, uninterrupted %v", p.Name, j, v, ref[i].Var.Value.Data[j])
			}
		}
	}
}

func sortedNames[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
