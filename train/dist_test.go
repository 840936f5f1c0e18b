package train_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/dist"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

// dpRank is one rank's result.
type dpRank struct {
	losses []float64
	evals  []float64
	params nn.Params
	sum    train.Summary
	err    error
}

// dpSetup describes a data-parallel test run.
type dpSetup struct {
	ranks, steps, batch, accum int
	dirs                       []string // one output directory per rank
	resume                     bool
	dropout                    float64
	saveEvery                  int
	// data changes a rank's training data (nil: the same everywhere).
	data func(rank int, exs []data.Example) []data.Example
	// after runs after each update on each rank.
	after func(rank int, rec train.Record, cancel context.CancelFunc, c dist.Communicator)
}

// dpExamples is training data of varied lengths, so ranks hold different
// numbers of targets and their losses must be weighted.
func dpExamples() []data.Example {
	g := tensor.NewRNG(11)
	var exs []data.Example
	for i := 0; i < 24; i++ {
		ids := []int{1}
		for j := 0; j < 3+g.IntN(9); j++ {
			ids = append(ids, 3+g.IntN(16))
		}
		exs = append(exs, data.Example{IDs: ids, Labels: ids})
	}
	return exs
}

// dpModel is the lifecycle method (extra loss, gradient mask, parameter
// groups, state) on a small random model.
func dpModel(t *testing.T, dropout float64) (*lifecycle, *peft.Model, nn.Params) {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	base, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	c := lora.NewConfig()
	c.LoraDropout, c.Seed, c.TargetModules = dropout, 7, peft.ModuleRegex("all-linear")
	c.InitLoraWeights = lora.InitRandom
	m := &lifecycle{Method: lora.New(c)}
	pm := peft.Wrap(base)
	a, err := pm.AddAdapter("default", m)
	if err != nil {
		t.Fatal(err)
	}
	return m, pm, a.Params
}

// runRanks trains s.ranks ranks, each in its own goroutine with its own
// model, over an in-process group (ranks = 0: one process, no group).
func runRanks(t *testing.T, s dpSetup) []dpRank {
	t.Helper()
	n := max(s.ranks, 1)
	comms := make([]dist.Communicator, n)
	if s.ranks > 0 {
		comms = dist.NewLocal(s.ranks)
	}
	out := make([]dpRank, n)
	var wg sync.WaitGroup
	for r := 0; r < n; r++ {
		_, pm, ps := dpModel(t, s.dropout)
		exs := dpExamples()
		if s.data != nil {
			exs = s.data(r, exs)
		}
		cfg := train.DefaultConfig()
		cfg.Steps, cfg.BatchSize, cfg.GradAccum, cfg.LR, cfg.Schedule, cfg.Warmup, cfg.Seed = s.steps, s.batch, s.accum, 1e-2, "cosine", 1, 3
		cfg.SaveEvery, cfg.EvalEvery = s.saveEvery, 2
		ctx, cancel := context.WithCancel(context.Background())
		run := &train.Run{Model: pm, Train: exs, Eval: exs[:7], OutputDir: s.dirs[r], Fingerprint: "dp", Resume: s.resume, Config: cfg, Comm: comms[r]}
		res := &out[r]
		res.params = ps
		run.AfterStep = func(rec train.Record) {
			res.losses = append(res.losses, rec.Loss)
			if rec.EvalLoss != nil {
				res.evals = append(res.evals, *rec.EvalLoss)
			}
			if s.after != nil {
				s.after(r, rec, cancel, comms[r])
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			res.sum, res.err = run.Execute(ctx)
		}()
	}
	wg.Wait()
	return out
}

func dirs(t *testing.T, n int) []string {
	d := make([]string, n)
	for i := range d {
		d[i] = t.TempDir()
	}
	return d
}

// Two ranks, each computing half of every batch, follow one process with
// the same global batch: the same loss at every step and the same
// parameters, within float32 summation tolerance; the ranks agree with
// each other bit for bit, two runs with two ranks agree bit for bit, and
// only rank 0 writes. Both ways of sharing an update are covered: ranks
// dividing the batch, and gradient accumulation making up the difference.
func TestDataParallelMatchesOneProcess(t *testing.T) {
	for _, c := range []struct{ batch, accum int }{{4, 2}, {3, 2}} {
		t.Run(fmt.Sprintf("batch%d_accum%d", c.batch, c.accum), func(t *testing.T) {
			one := runRanks(t, dpSetup{steps: 4, batch: c.batch, accum: c.accum, dirs: dirs(t, 1)})[0]
			if one.err != nil {
				t.Fatal(one.err)
			}
			d := dirs(t, 2)
			two := runRanks(t, dpSetup{ranks: 2, steps: 4, batch: c.batch, accum: c.accum, dirs: d})
			again := runRanks(t, dpSetup{ranks: 2, steps: 4, batch: c.batch, accum: c.accum, dirs: dirs(t, 2)})
			for r, res := range two {
				if res.err != nil {
					t.Fatalf("rank %d: %v", r, res.err)
				}
				for i, l := range res.losses {
					near(t, fmt.Sprintf("rank %d loss at step %d", r, i+1), l, one.losses[i], 1e-5)
					if math.Float64bits(l) != math.Float64bits(again[r].losses[i]) {
						t.Errorf("rank %d step %d: loss %v, the same 2-rank run again %v", r, i+1, l, again[r].losses[i])
					}
				}
				for i, e := range res.evals {
					near(t, fmt.Sprintf("rank %d eval loss %d", r, i), e, one.evals[i], 1e-5)
				}
				near(t, "tokens", float64(res.sum.Tokens), float64(one.sum.Tokens), 0)
				for i, p := range res.params {
					for j, v := range p.Var.Value.Data {
						near(t, p.Name, float64(v), float64(one.params[i].Var.Value.Data[j]), 1e-4)
						if math.Float32bits(v) != math.Float32bits(two[0].params[i].Var.Value.Data[j]) {
							t.Fatalf("%s[%d]: rank %d has %v, rank 0 %v", p.Name, j, r, v, two[0].params[i].Var.Value.Data[j])
						}
					}
				}
			}
			if len(two[0].losses) != 4 || len(two[1].losses) != 4 {
				t.Fatalf("%d and %d steps recorded", len(two[0].losses), len(two[1].losses))
			}
			if fs, _ := os.ReadDir(d[1]); len(fs) != 0 {
				t.Errorf("rank 1 wrote %d files into its output directory", len(fs))
			}
			if _, err := os.Stat(two[0].sum.MetricsPath); err != nil {
				t.Errorf("rank 0 wrote no metrics: %v", err)
			}
		})
	}
}

// A run resumed on two ranks from rank 0's checkpoint (rank 1 never sees
// it: its output directory is another, empty one) ends bitwise where the
// uninterrupted two-rank run does.
func TestDataParallelResume(t *testing.T) {
	ref := runRanks(t, dpSetup{ranks: 2, steps: 4, batch: 2, accum: 1, dirs: dirs(t, 2), saveEvery: 2})
	d := dirs(t, 2)
	first := runRanks(t, dpSetup{ranks: 2, steps: 2, batch: 2, accum: 1, dirs: d, saveEvery: 2})
	if first[0].err != nil || first[1].err != nil {
		t.Fatal(first[0].err, first[1].err)
	}
	resumed := runRanks(t, dpSetup{ranks: 2, steps: 4, batch: 2, accum: 1, dirs: d, resume: true, saveEvery: 2})
	for r := range resumed {
		if resumed[r].err != nil {
			t.Fatalf("rank %d: %v", r, resumed[r].err)
		}
		for i, p := range resumed[r].params {
			if !tensor.SameBits(p.Var.Value.Data, ref[r].params[i].Var.Value.Data) {
				t.Fatalf("rank %d: %s differs from the uninterrupted run's", r, p.Name)
			}
		}
	}
	if fs, _ := os.ReadDir(d[1]); len(fs) != 0 {
		t.Errorf("rank 1 wrote %d files", len(fs))
	}
}

// near fails unless got is within tol·max(1, |want|) of want.
func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if d := math.Abs(got - want); !(d <= tol*math.Max(1, math.Abs(want))) {
		t.Errorf("%s = %.10g, want %.10g (diff %.3g)", what, got, want, d)
	}
}

// What the ranks cannot share, or do not share, stops every rank with a
// message saying why: a batch the ranks do not divide, different data on
// one rank, a rank interrupted (every rank stops at the same update, rank
// 0 saving a checkpoint), a rank that ends the job.
func TestDataParallelErrors(t *testing.T) {
	res := runRanks(t, dpSetup{ranks: 2, steps: 2, batch: 3, accum: 1, dirs: dirs(t, 2)})
	for r, x := range res {
		if x.err == nil || !strings.Contains(x.err.Error(), "2 ranks cannot share an update of batch_size 3 × grad_accum 1") {
			t.Errorf("rank %d: %v", r, x.err)
		}
	}
	res = runRanks(t, dpSetup{ranks: 2, steps: 2, batch: 2, accum: 1, dirs: dirs(t, 2), data: func(r int, exs []data.Example) []data.Example {
		if r == 1 {
			exs[5].IDs[1]++
		}
		return exs
	}})
	for r, x := range res {
		if x.err == nil || !strings.Contains(x.err.Error(), "rank 1 has a different recipe and data") {
			t.Errorf("rank %d: %v", r, x.err)
		}
	}
	d := dirs(t, 2)
	res = runRanks(t, dpSetup{ranks: 2, steps: 6, batch: 2, accum: 1, dirs: d, after: func(r int, rec train.Record, cancel context.CancelFunc, _ dist.Communicator) {
		if r == 1 && rec.Step == 2 {
			cancel()
		}
	}})
	if !errors.Is(res[1].err, context.Canceled) || res[0].err == nil || !strings.Contains(res[0].err.Error(), "another rank was interrupted") {
		t.Errorf("rank 0: %v; rank 1: %v", res[0].err, res[1].err)
	}
	if len(res[0].losses) != 3 || len(res[1].losses) != 3 {
		t.Errorf("ranks stopped after %d and %d updates, want 3 each (the update under way ends)", len(res[0].losses), len(res[1].losses))
	}
	if ck, ok, _ := train.LatestCheckpoint(d[0]); !ok || !strings.HasSuffix(ck, "checkpoint-00000003") {
		t.Errorf("rank 0 saved %q on stopping", ck)
	}
	// The rank that writes names the step and the checkpoint to resume from.
	if msg := res[0].err.Error(); !strings.Contains(msg, "interrupted at step 3 of 6") ||
		!strings.Contains(msg, "checkpoint-00000003 written; continue with --resume") {
		t.Errorf("rank 0's error does not say where to continue: %v", res[0].err)
	}
	if !strings.Contains(res[1].err.Error(), "interrupted at step 3 of 6") {
		t.Errorf("rank 1's error does not name the step: %v", res[1].err)
	}
	res = runRanks(t, dpSetup{ranks: 2, steps: 6, batch: 2, accum: 1, dirs: dirs(t, 2), after: func(r int, rec train.Record, _ context.CancelFunc, c dist.Communicator) {
		if r == 1 && rec.Step == 2 {
			c.Abort(1)
		}
	}})
	for r, x := range res {
		if x.err == nil || !strings.Contains(x.err.Error(), "rank 1 ended the job") {
			t.Errorf("rank %d: %v", r, x.err)
		}
	}
}
