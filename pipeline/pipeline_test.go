package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

// losses collects every stage's per-step losses.
type losses map[int][]float64

func (l losses) hook(stage int, rec train.Record) { l[stage] = append(l[stage], rec.Loss) }

func readAdapter(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]float32{}
	for name, x := range ts {
		if out[name], err = x.Float32(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// A two-stage pipeline is the two stages run by hand: full fine-tuning
// then a LoRA on the result, and a LoRA continued by a second stage of the
// same settings. Every step's loss and the final adapter are bitwise equal.
func TestTwoStagesEqualByHand(t *testing.T) {
	sTr, sEv := textSets(t, "data/text/tinyshakespeare.txt", 16, 4)
	wTr, wEv := textSets(t, "data/text/wiki_demo.txt", 16, 4)
	for _, first := range []string{"FULL", "LORA"} {
		t.Run(first, func(t *testing.T) {
			m1 := loraMethod(4, 0.1)
			if first == "FULL" {
				m1 = fullMethod
			}
			c1, c2 := cfg(3, 7), cfg(3, 8)
			got := losses{}
			out := t.TempDir()
			p := &Pipeline{Base: stories(t), BaseName: "stories", OutputDir: out, AfterStep: got.hook, Stages: []Stage{
				{Name: "one", NewMethod: m1, Train: sTr, Eval: sEv, Config: c1},
				{Name: "two", NewMethod: loraMethod(4, 0.1), Train: wTr, Eval: wEv, Config: c2},
			}}
			if _, err := p.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			// By hand: the same runs, one after the other.
			base := stories(t)
			want := losses{}
			pm := peft.Wrap(base)
			meth, _ := m1()
			meth.Config().Base().Seed, meth.Config().Base().BaseModelNameOrPath = c1.Seed, "stories"
			if _, err := pm.AddAdapter(peft.DefaultAdapter, meth); err != nil {
				t.Fatal(err)
			}
			r1 := &train.Run{Model: pm, Train: sTr, Eval: sEv, Config: c1, OutputDir: t.TempDir(), AfterStep: func(r train.Record) { want.hook(0, r) }}
			if _, err := r1.Execute(context.Background()); err != nil {
				t.Fatal(err)
			}
			if first == "FULL" { // the model is the result; a LoRA goes on it
				pm = peft.Wrap(base)
				m2, _ := loraMethod(4, 0.1)()
				m2.Config().Base().Seed = c2.Seed
				if _, err := pm.AddAdapter(peft.DefaultAdapter, m2); err != nil {
					t.Fatal(err)
				}
			}
			r2 := &train.Run{Model: pm, Train: wTr, Eval: wEv, Config: c2, OutputDir: t.TempDir(), AfterStep: func(r train.Record) { want.hook(1, r) }}
			if _, err := r2.Execute(context.Background()); err != nil {
				t.Fatal(err)
			}
			for s := 0; s < 2; s++ {
				if len(got[s]) != 3 {
					t.Fatalf("stage %d ran %d steps", s, len(got[s]))
				}
				for i := range got[s] {
					if got[s][i] != want[s][i] {
						t.Errorf("stage %d step %d: pipeline loss %v, by hand %v", s, i+1, got[s][i], want[s][i])
					}
				}
			}
			saved := readAdapter(t, filepath.Join(out, "two"))
			for _, q := range pm.TrainableParams() {
				if !tensor.SameBits(saved[q.Name], q.Var.Value.Data) {
					t.Errorf("%s differs from the hand-run adapter", q.Name)
				}
			}
			for _, f := range []string{"one/metrics.jsonl", "one/loss.png", "two/metrics.jsonl", "two/loss.png", "two/adapter_config.json", StateFile} {
				if _, err := os.Stat(filepath.Join(out, f)); err != nil {
					t.Errorf("missing %s", f)
				}
			}
			if first == "FULL" {
				if _, err := os.Stat(filepath.Join(out, "one", format.HFConfigFile)); err != nil {
					t.Errorf("the FULL stage's model was not saved: %v", err)
				}
			}
		})
	}
}

// A pipeline stopped in its second stage resumes at that stage and step:
// the EWC Fisher comes back from the checkpoint, and every step's loss
// equals the uninterrupted run's.
func TestResumeMidStage(t *testing.T) {
	sTr, sEv := textSets(t, "data/text/tinyshakespeare.txt", 16, 4)
	wTr, wEv := textSets(t, "data/text/wiki_demo.txt", 16, 4)
	mk := func(out string, hook func(int, train.Record)) *Pipeline {
		c1, c2 := cfg(4, 1), cfg(5, 2)
		c1.SaveEvery, c2.SaveEvery = 2, 2
		return &Pipeline{Base: stories(t), OutputDir: out, AfterStep: hook, Continual: &Continual{Strategy: StrategyEWC, EWCLambda: 100, FisherSamples: 8},
			Stages: []Stage{
				{Name: "a", NewMethod: loraMethod(4, 0.1), Train: sTr, Eval: sEv, Config: c1},
				{Name: "b", NewMethod: loraMethod(4, 0.1), Train: wTr, Eval: wEv, Config: c2},
			}}
	}
	want := losses{}
	ref := mk(t.TempDir(), want.hook)
	wantRes, err := ref.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	got := losses{}
	p := mk(out, func(s int, r train.Record) {
		got.hook(s, r)
		if s == 1 && r.Step == 3 {
			cancel()
		}
	})
	if _, err := p.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("the stopped run returned %v", err)
	}
	got = losses{0: got[0], 1: got[1][:3]}
	p = mk(out, got.hook)
	p.Resume = true
	res, err := p.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stages[0].Restored || res.Stages[1].Restored {
		t.Errorf("restored: %v, %v", res.Stages[0].Restored, res.Stages[1].Restored)
	}
	for s := 0; s < 2; s++ {
		if len(got[s]) != len(want[s]) {
			t.Fatalf("stage %d: %d steps, want %d", s, len(got[s]), len(want[s]))
		}
		for i := range want[s] {
			if got[s][i] != want[s][i] {
				t.Errorf("stage %d step %d: resumed %v, uninterrupted %v", s, i+1, got[s][i], want[s][i])
			}
		}
	}
	a, b := readAdapter(t, filepath.Join(out, "b")), readAdapter(t, filepath.Join(ref.OutputDir, "b"))
	for name := range b {
		if !tensor.SameBits(a[name], b[name]) {
			t.Errorf("%s differs after the resume", name)
		}
	}
	ja, _ := json.Marshal(res.Report)
	jb, _ := json.Marshal(wantRes.Report)
	if string(ja) != string(jb) {
		t.Errorf("report after resume %s, uninterrupted %s", ja, jb)
	}
	// A finished pipeline resumed again rebuilds every stage and trains nothing.
	p = mk(out, func(int, train.Record) { t.Error("a finished pipeline trained again") })
	p.Resume = true
	if _, err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Not resuming refuses the directory; a changed stage refuses the resume.
	if _, err := mk(out, nil).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "holds a pipeline run") {
		t.Errorf("a new run over a pipeline's output: %v", err)
	}
	p = mk(out, nil)
	p.Resume, p.Stages[1].Fingerprint = true, "other data"
	if _, err := p.Run(context.Background()); !errors.Is(err, train.ErrFingerprint) {
		t.Errorf("resuming a changed pipeline: %v", err)
	}
}

// On Shakespeare then Wikipedia (stories260K, LoRA), plain sequential
// training raises the Shakespeare perplexity in the Wikipedia stage;
// replay and EWC raise it less. The report's files are written.
func TestContinualForgetting(t *testing.T) {
	if testing.Short() {
		t.Skip("trains eight stages")
	}
	sTr, sEv := textSets(t, "data/text/tinyshakespeare.txt", 64, 16)
	wTr, wEv := textSets(t, "data/text/wiki_demo.txt", 64, 16)
	rise := map[string]float64{}
	for _, c := range []*Continual{{Strategy: StrategyNone}, {Strategy: StrategyReplay, ReplayFraction: 0.5},
		{Strategy: StrategyEWC, EWCLambda: 1000, FisherSamples: 32}, {Strategy: StrategyLwF}} {
		c1, c2 := cfg(10, 1), cfg(10, 2)
		c1.LR, c2.LR = 1e-2, 1e-2
		out := t.TempDir()
		p := &Pipeline{Base: stories(t), Continual: c, OutputDir: out, Stages: []Stage{
			{Name: "shakespeare", NewMethod: loraMethod(8, 0), Train: sTr, Eval: sEv, Config: c1},
			{Name: "wiki", NewMethod: loraMethod(8, 0), Train: wTr, Eval: wEv, Config: c2},
		}}
		res, err := p.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		m := res.Report.Matrix
		rise[c.Strategy] = float64(m[1][0] - m[0][0])
		t.Logf("%s: Shakespeare perplexity %.2f → %.2f after the wiki stage; wiki %.2f → %.2f", c.Strategy, m[0][0], m[1][0], m[0][1], m[1][1])
		if m[0][0] >= res.Report.Before[0] || (c.Strategy == StrategyNone && m[1][1] >= m[0][1]) {
			t.Errorf("%s: a stage did not lower its own perplexity: %+v", c.Strategy, res.Report)
		}
		for _, f := range []string{ReportFile, ReportMDFile, ReportPNG} {
			if _, err := os.Stat(filepath.Join(out, f)); err != nil {
				t.Errorf("missing %s", f)
			}
		}
	}
	if rise[StrategyNone] <= 0 {
		t.Errorf("sequential training did not raise the Shakespeare perplexity: %v", rise)
	}
	for _, s := range []string{StrategyReplay, StrategyEWC} {
		if rise[s] >= rise[StrategyNone] {
			t.Errorf("%s raised the Shakespeare perplexity by %.3f, plain sequential training by %.3f", s, rise[s], rise[StrategyNone])
		}
	}
}

// Bad pipelines are refused before anything trains, naming stage and key.
func TestBadPipelines(t *testing.T) {
	ex := []data.Example{{IDs: []int{1, 2, 3}, Labels: []int{1, 2, 3}}}
	st := func(name string, m func() (peft.Method, error), merge bool) Stage {
		return Stage{Name: name, NewMethod: m, MergeBefore: merge, Train: ex, Eval: ex, Config: cfg(1, 1)}
	}
	cases := []struct {
		stages    []Stage
		continual *Continual
		want      string
	}{
		{[]Stage{st("a", loraMethod(4, 0), false), st("a", loraMethod(4, 0), false)}, nil, `stage "a": name: used twice`},
		{[]Stage{st("a", loraMethod(4, 0), false), st("b", fullMethod, false)}, nil, `stage "b": method: FULL cannot continue stage "a"'s LORA adapter: set merge_before`},
		{[]Stage{st("a", loraMethod(4, 0), false), st("b", loraMethod(8, 0), false)}, nil, `stage "b": peft: continuing stage "a"'s LORA adapter needs the same peft settings`},
		{[]Stage{st("a", loraMethod(4, 0), true)}, nil, `stage "a": merge_before: the first stage`},
		{[]Stage{st("a b", loraMethod(4, 0), false)}, nil, `stage "a b": name:`},
		{nil, &Continual{Strategy: "none"}, "continual: needs stages"},
		{[]Stage{st("a", loraMethod(4, 0), false)}, &Continual{Strategy: "forget"}, "continual.strategy"},
		{[]Stage{st("a", loraMethod(4, 0), false)}, &Continual{Strategy: "none", EWCLambda: 3}, "continual.ewc_lambda: is a setting of strategy ewc"},
		{[]Stage{{Name: "a", NewMethod: loraMethod(4, 0), Train: ex, Config: cfg(1, 1)}}, &Continual{Strategy: "none"}, `stage "a": data.eval_path`},
	}
	for _, c := range cases {
		p := &Pipeline{Stages: c.stages, Continual: c.continual}
		err := p.Check()
		var fe *FieldError
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.As(err, &fe) {
			t.Errorf("want an error with %q, got %v", c.want, err)
		}
	}
	// A LoRA merged before a FULL stage is fine.
	p := &Pipeline{Stages: []Stage{st("a", loraMethod(4, 0), false), st("b", fullMethod, true), st("c", loraMethod(2, 0), false)}}
	if err := p.Check(); err != nil {
		t.Error(err)
	}
}
