package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// trainedRun returns parameters (one without a gradient, one frozen) and an
// AdamW that has taken two steps over them.
func trainedRun(t *testing.T) (nn.Params, *AdamW) {
	t.Helper()
	rng := tensor.NewRNG(5)
	ps := nn.Params{
		randParam("model.layers.0.self_attn.q_proj.lora_A.weight", rng, 4, 16),
		randParam("model.layers.0.self_attn.q_proj.lora_B.weight", rng, 16, 4),
		param("never.reached", []float32{1, 2, 3}, nil, true),
		param("frozen", []float32{9}, nil, false),
	}
	opt, err := NewAdamW(ps, DefaultAdamW())
	if err != nil {
		t.Fatal(err)
	}
	opt.Step(1e-3)
	ps[0].Var.Grad.Normal(rng, 0, 1)
	opt.Step(2e-3)
	return ps, opt
}

func sampleCheckpoint(ps nn.Params, opt Optimizer) *Checkpoint {
	ck := &Checkpoint{
		Step: 2, Epoch: 1, DataPos: 12345,
		RNG:         []uint64{1, math.MaxUint64, 0x9e3779b97f4a7c15},
		Fingerprint: "run-a",
		Meta:        json.RawMessage(`{"lr": 0.0002, "method": {"r": 8, "alpha": 16}}`),
	}
	ck.Capture(ps, opt)
	return ck
}

func tensorsEqual(t *testing.T, what string, a, b *tensor.Tensor) {
	t.Helper()
	if a == nil || b == nil || !tensor.SameShape(a.Shape, b.Shape) || !tensor.SameBits(a.Data, b.Data) {
		t.Errorf("%s: tensors differ (%s vs %s)", what, describe(a), describe(b))
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	ps, opt := trainedRun(t)
	ck := sampleCheckpoint(ps, opt)
	dir := filepath.Join(t.TempDir(), "ck")
	if err := SaveCheckpoint(dir, ck); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary directory left behind: %v", err)
	}
	got, err := LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Step != 2 || got.Epoch != 1 || got.DataPos != 12345 || got.Fingerprint != "run-a" {
		t.Errorf("counters: got %+v", got)
	}
	if len(got.RNG) != 3 || got.RNG[0] != 1 || got.RNG[1] != math.MaxUint64 || got.RNG[2] != 0x9e3779b97f4a7c15 {
		t.Errorf("RNG state %x, want %x", got.RNG, ck.RNG)
	}
	var m1, m2 bytes.Buffer
	json.Compact(&m1, ck.Meta)
	json.Compact(&m2, got.Meta)
	if m1.String() != m2.String() {
		t.Errorf("meta %s, want %s", m2.String(), m1.String())
	}
	if len(got.Params) != 3 {
		t.Errorf("%d parameter tensors, want 3 (frozen excluded)", len(got.Params))
	}
	for name, want := range ck.Params {
		tensorsEqual(t, name, got.Params[name], want)
	}
	o := got.Optimizer
	if o == nil || o.Kind != "adamw" || o.Hyper["beta2"] != 0.999 {
		t.Fatalf("optimizer state %+v", o)
	}
	for name, want := range ck.Optimizer.Params {
		g := o.Params[name]
		if g == nil || g.Step != want.Step || len(g.Buffers) != len(want.Buffers) {
			t.Fatalf("optimizer state of %s: %+v, want %+v", name, g, want)
		}
		for b, wt := range want.Buffers {
			tensorsEqual(t, name+"."+b, g.Buffers[b], wt)
		}
	}
	if o.Params["never.reached"].Step != 0 || o.Params["model.layers.0.self_attn.q_proj.lora_A.weight"].Step != 2 {
		t.Error("per-parameter step counts lost")
	}

	// The files are plain safetensors with PyTorch's metadata.
	ts, meta, err := format.ReadSafetensors(filepath.Join(dir, OptimizerFile))
	if err != nil || meta["format"] != "pt" || ts["model.layers.0.self_attn.q_proj.lora_B.weight.exp_avg_sq"] == nil {
		t.Errorf("optimizer.safetensors: %v, metadata %v, %d tensors", err, meta, len(ts))
	}

	// Resuming continues bit for bit like the uninterrupted run.
	ps2, _ := trainedRun(t)
	for _, p := range ps2 { // scramble: Restore must overwrite
		p.Var.Value.Data[0] = 42
	}
	opt2, _ := NewAdamW(ps2, DefaultAdamW())
	if err := got.Restore("run-a", ps2, opt2); err != nil {
		t.Fatal(err)
	}
	if ps2[3].Var.Value.Data[0] != 42 {
		t.Error("Restore wrote a frozen parameter")
	}
	for i := range ps {
		if ps[i].Var.Grad != nil {
			ps2[i].Var.Grad = ps[i].Var.Grad.Clone()
		}
	}
	opt.Step(3e-3)
	opt2.Step(3e-3)
	for i := 0; i < 3; i++ {
		tensorsEqual(t, "after resume "+ps[i].Name, ps2[i].Var.Value, ps[i].Var.Value)
	}
}

func TestCheckpointCorruption(t *testing.T) {
	ps, opt := trainedRun(t)
	base := t.TempDir()
	fresh := func() string {
		dir, err := os.MkdirTemp(base, "ck")
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(dir, "checkpoint")
		if err := SaveCheckpoint(dir, sampleCheckpoint(ps, opt)); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	edits := []struct {
		file string
		edit func([]byte) []byte
	}{
		{ParamsFile, func(b []byte) []byte { return b[:len(b)-7] }},           // truncated
		{OptimizerFile, func(b []byte) []byte { b[len(b)-3] ^= 1; return b }}, // bit flip in the data
		{OptimizerFile, func(b []byte) []byte { return nil }},                 // empty
		{StateFile, func(b []byte) []byte { return b[:len(b)/2] }},            // truncated JSON
		{StateFile, func(b []byte) []byte { return bytes.Replace(b, []byte(checkpointFormat), []byte("other"), 1) }},
	}
	for _, e := range edits {
		dir := fresh()
		path := filepath.Join(dir, e.file)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, e.edit(b), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = LoadCheckpoint(dir)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("corrupt %s: error %v does not name the file", e.file, err)
		}
	}
	dir := fresh()
	os.Remove(filepath.Join(dir, ParamsFile))
	if _, err := LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), ParamsFile) {
		t.Errorf("missing params file: %v", err)
	}
	if _, err := LoadCheckpoint(filepath.Join(base, "nothing")); err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Errorf("missing checkpoint: %v", err)
	}
}

func TestCheckpointRestoreRefuses(t *testing.T) {
	ps, opt := trainedRun(t)
	ck := sampleCheckpoint(ps, opt)
	before := ps[0].Var.Value.Clone()

	err := ck.Restore("run-b", ps, opt)
	if !errors.Is(err, ErrFingerprint) || !strings.Contains(err.Error(), "run-a") || !strings.Contains(err.Error(), "run-b") {
		t.Errorf("fingerprint mismatch: %v", err)
	}
	// A run that trains a different set of parameters.
	other := nn.Params{ps[0], ps[1], param("new.adapter", []float32{0}, nil, true)}
	if err := ck.Restore("run-a", other, nil); err == nil || !strings.Contains(err.Error(), "new.adapter") {
		t.Errorf("missing tensor: %v", err)
	}
	if err := ck.Restore("run-a", ps[:2], nil); err == nil || !strings.Contains(err.Error(), "never.reached") {
		t.Errorf("extra tensor: %v", err)
	}
	reshaped := nn.Params{ps[0], ps[2], param(ps[1].Name, make([]float32, 64), nil, true)}
	if err := ck.Restore("run-a", reshaped, nil); err == nil || !strings.Contains(err.Error(), "[16 4]") {
		t.Errorf("shape mismatch: %v", err)
	}
	sgd, _ := NewSGD(ps, SGDConfig{Momentum: 0.9})
	if err := ck.Restore("run-a", ps, sgd); err == nil {
		t.Error("AdamW state restored into SGD")
	}
	tensorsEqual(t, "parameter after refused restores", ps[0].Var.Value, before)
}

func TestSaveRotatingAndLatest(t *testing.T) {
	ps, opt := trainedRun(t)
	out := t.TempDir()
	if _, ok, err := LatestCheckpoint(filepath.Join(out, "missing")); ok || err != nil {
		t.Fatalf("LatestCheckpoint of a missing directory: %v, %v", ok, err)
	}
	for step := 1; step <= 4; step++ {
		ck := sampleCheckpoint(ps, opt)
		ck.Step = step * 100
		dir, err := SaveRotating(out, ck, 2)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"checkpoint-00000100", "checkpoint-00000200", "checkpoint-00000300", "checkpoint-00000400"}[step-1]; filepath.Base(dir) != want {
			t.Errorf("checkpoint directory %s", dir)
		}
	}
	// Debris that must be ignored: an interrupted save with a higher step,
	// a directory without trainer_state.json, an unrelated name.
	os.MkdirAll(filepath.Join(out, "checkpoint-00000500.tmp"), 0o755)
	os.WriteFile(filepath.Join(out, "checkpoint-00000500.tmp", StateFile), []byte("{"), 0o644)
	os.MkdirAll(filepath.Join(out, "checkpoint-900"), 0o755)
	os.MkdirAll(filepath.Join(out, "checkpoint-x1"), 0o755)
	all, err := ListCheckpoints(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Step != 300 || all[1].Step != 400 {
		t.Fatalf("checkpoints kept: %+v, want steps 300 and 400", all)
	}
	dir, ok, err := LatestCheckpoint(out)
	if err != nil || !ok || dir != CheckpointDir(out, 400) {
		t.Fatalf("LatestCheckpoint = %s, %v, %v", dir, ok, err)
	}
	ck, err := LoadCheckpoint(dir)
	if err != nil || ck.Step != 400 {
		t.Fatalf("load latest: %v (step %v)", err, ck)
	}

	// Saving over an existing checkpoint replaces it; a leftover .tmp from
	// an interrupted save of the same step does not get in the way.
	os.MkdirAll(dir+".tmp", 0o755)
	os.WriteFile(filepath.Join(dir+".tmp", "junk"), []byte("x"), 0o644)
	ck.Epoch = 7
	if err := SaveCheckpoint(dir, ck); err != nil {
		t.Fatal(err)
	}
	if again, err := LoadCheckpoint(dir); err != nil || again.Epoch != 7 {
		t.Errorf("overwritten checkpoint: %v, %+v", err, again)
	}
	for _, leftover := range []string{dir + ".tmp", dir + ".old"} {
		if _, err := os.Stat(leftover); !os.IsNotExist(err) {
			t.Errorf("%s left behind", leftover)
		}
	}
}

func TestFingerprint(t *testing.T) {
	a, err := Fingerprint(map[string]any{"seed": 1, "lr": 2e-4})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Fingerprint(map[string]any{"lr": 2e-4, "seed": 1})
	c, _ := Fingerprint(map[string]any{"seed": 2, "lr": 2e-4})
	if a != b || a == c || len(a) != 16 {
		t.Errorf("fingerprints %q %q %q", a, b, c)
	}
	if _, err := Fingerprint(math.NaN()); err == nil {
		t.Error("NaN fingerprinted")
	}
}

func FuzzParseState(f *testing.F) {
	f.Add([]byte(`{"format":"gopeft-checkpoint","version":1,"step":3,"rng":[1],"params":["a"],"files":{"params.safetensors":"00"}}`))
	f.Add([]byte(`{"format":"gopeft-checkpoint","version":1,"optimizer":{"kind":"adamw","params":{"a":{"step":-1}}},"files":{"params.safetensors":""}}`))
	f.Add([]byte(`{"format":"gopeft-checkpoint","version":2}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseState("trainer_state.json", data)
		if err != nil {
			if !strings.Contains(err.Error(), "trainer_state.json") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		if _, ok := st.Files[ParamsFile]; !ok || st.Step < 0 || st.Format != checkpointFormat || st.Version != checkpointVersion {
			t.Errorf("accepted invalid state %+v", st)
		}
	})
}

// TestFailedSaveKeepsPrevious: a save that fails part-way (here: invalid
// meta, found after the tensors are written) leaves the previous checkpoint
// loadable and no temporary directory.
func TestFailedSaveKeepsPrevious(t *testing.T) {
	ps, opt := trainedRun(t)
	dir := filepath.Join(t.TempDir(), "checkpoint-00000002")
	if err := SaveCheckpoint(dir, sampleCheckpoint(ps, opt)); err != nil {
		t.Fatal(err)
	}
	bad := sampleCheckpoint(ps, opt)
	bad.Step = 99
	bad.Optimizer.Hyper["lr"] = math.NaN() // not encodable: fails after the tensor files
	if err := SaveCheckpoint(dir, bad); err == nil {
		t.Fatal("save with a NaN hyperparameter succeeded")
	}
	ck, err := LoadCheckpoint(dir)
	if err != nil || ck.Step != 2 {
		t.Fatalf("previous checkpoint damaged: %v", err)
	}
	if _, err := os.Stat(dir + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary directory left behind: %v", err)
	}
}
