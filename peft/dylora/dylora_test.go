package dylora

import (
	"context"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tokenizer"
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

func logits(t *testing.T, m *llama.Model, p *nn.Pass, ids []int) []float32 {
	t.Helper()
	h, err := m.Forward(p, llama.Input{IDs: ids, Batch: 1, T: len(ids)})
	if err != nil {
		t.Fatal(err)
	}
	return m.Logits(p, h).Value.Data
}

func randomConfig(rmax int, targets ...string) *Config {
	c := NewConfig()
	c.RMax, c.LoraAlpha, c.InitLoraWeights, c.Seed = rmax, 6, lowrank.InitRandom, 2
	c.TargetModules = peft.ModuleList(targets...)
	return c
}

// TestTruncatedForwardAndGradients: at rank b the layer adds
// (α/b)·B[:, :b]·A[:b]·x; its gradients match finite differences, and the
// frozen mode's are the same in row/column b and zero before.
func TestTruncatedForwardAndGradients(t *testing.T) {
	g := tensor.NewRNG(1)
	R, in, out, rows := 5, 7, 6, 4
	A := autograd.Param("A", tensor.New(R, in).Normal(g, 0, 1), true)
	B := autograd.Param("B", tensor.New(out, R).Normal(g, 0, 1), true)
	x := autograd.Param("x", tensor.New(rows, in).Normal(g, 0, 1), true)
	y := autograd.Param("y", tensor.New(rows, out).Normal(g, 0, 1), true)
	for b := 1; b <= R; b++ {
		s := float32(1.5 / float64(b))
		got := truncated(nil, y, x, A, B, b, s, false).Value.Data
		for i := 0; i < rows; i++ {
			for j := 0; j < out; j++ {
				want := float64(y.Value.Data[i*out+j])
				for q := 0; q < b; q++ {
					var ax float64
					for k := 0; k < in; k++ {
						ax += float64(A.Value.Data[q*in+k]) * float64(x.Value.Data[i*in+k])
					}
					want += float64(s) * float64(B.Value.Data[j*R+q]) * ax
				}
				if math.Abs(want-float64(got[i*out+j])) > 1e-5 {
					t.Fatalf("rank %d: out[%d,%d] = %v, want %v", b, i, j, got[i*out+j], want)
				}
			}
		}
		if _, err := autograd.GradCheck([]*autograd.Var{A, B, x, y}, func(tp *autograd.Tape) *autograd.Var {
			return truncated(tp, y, x, A, B, b, s, false)
		}); err != nil {
			t.Errorf("rank %d: %v", b, err)
		}
		full := map[*autograd.Var][]float32{}
		for _, v := range []*autograd.Var{A, B, x} {
			full[v] = append([]float32(nil), v.Grad.Data...)
			v.Grad = nil
		}
		tp := autograd.NewTape()
		r := tensor.New(rows, out).Normal(tensor.NewRNG(99), 0, 1) // GradCheck's weights
		tp.BackwardFrom(truncated(tp, y, x, A, B, b, s, true), r)
		for i, v := range A.Grad.Data {
			if want := full[A][i]; (i/in == b-1 && math.Abs(float64(v-want)) > 1e-5*(1+math.Abs(float64(want)))) || (i/in != b-1 && v != 0) {
				t.Fatalf("frozen, rank %d: dA[%d] = %v (unfrozen %v)", b, i, v, want)
			}
		}
		for i, v := range B.Grad.Data {
			if want := full[B][i]; (i%R == b-1 && math.Abs(float64(v-want)) > 1e-5*(1+math.Abs(float64(want)))) || (i%R != b-1 && v != 0) {
				t.Fatalf("frozen, rank %d: dB[%d] = %v (unfrozen %v)", b, i, v, want)
			}
		}
		if !slices.Equal(x.Grad.Data, full[x]) {
			t.Errorf("frozen, rank %d: the input's gradient changed", b)
		}
		for _, v := range []*autograd.Var{A, B, x, y} {
			v.Grad = nil
		}
	}
}

// TestRankPerPass: a training pass draws one rank from its seed for every
// layer, covering r_min…r_max; passes that do not train use SetRank's.
func TestRankPerPass(t *testing.T) {
	pm := smallModel(t)
	c := randomConfig(6, "q_proj", "v_proj")
	c.RMin = 2
	m := New(c)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for seed := uint64(0); seed < 200; seed++ {
		p := &nn.Pass{Training: true, Seed: seed}
		b := m.passRank(p)
		if b < 2 || b > 6 {
			t.Fatalf("seed %d drew rank %d outside [2, 6]", seed, b)
		}
		seen[b] = true
		if m.passRank(p) != b {
			t.Fatal("the same pass drew two ranks")
		}
	}
	if len(seen) != 5 {
		t.Errorf("200 passes drew ranks %v, want all of 2…6", seen)
	}
	if m.passRank(&nn.Pass{}) != 6 {
		t.Error("inference does not run at r_max by default")
	}
	if err := m.SetRank(3); err != nil || m.passRank(&nn.Pass{}) != 3 {
		t.Errorf("SetRank(3): %v, inference at %d", err, m.passRank(&nn.Pass{}))
	}
	if err := m.SetRank(7); err == nil {
		t.Error("SetRank beyond r_max accepted")
	}
}

// TestModelGradientsMergeAndSave: gradients through a model against finite
// differences; merged logits equal unmerged at every rank; the file holds
// the full factors and reloads to the same model.
func TestModelGradientsMergeAndSave(t *testing.T) {
	pm := smallModel(t)
	m := New(randomConfig(4, "q_proj", "down_proj"))
	a, err := pm.AddAdapter(peft.DefaultAdapter, m)
	if err != nil {
		t.Fatal(err)
	}
	var inputs []*autograd.Var
	for _, p := range a.Params {
		p.Var.Value.Normal(tensor.NewRNG(3), 0, 0.4)
		inputs = append(inputs, p.Var)
	}
	ids := []int{1, 3, 5, 7, 9}
	// Two training passes whose seeds draw ranks 2 and 4.
	var seeds []uint64
	for _, want := range []int{2, 4} {
		seed := uint64(0)
		for m.passRank(&nn.Pass{Training: true, Seed: seed}) != want {
			seed++
		}
		seeds = append(seeds, seed)
	}
	for _, seed := range seeds {
		p := &nn.Pass{Training: true, Seed: seed}
		if _, err := autograd.GradCheckModel(inputs, func(tp *autograd.Tape) *autograd.Var {
			q := *p
			q.Tape = tp
			return llamaLogits(t, pm.Base, &q, ids)
		}); err != nil {
			t.Errorf("seed %d: %v", seed, err)
		}
	}
	pm.DisableAdapters()
	base := logits(t, pm.Base, nil, ids)
	pm.EnableAdapters()
	var prev []float32
	for b := 1; b <= 4; b++ {
		if err := m.SetRank(b); err != nil {
			t.Fatal(err)
		}
		unmerged := logits(t, pm.Base, nil, ids)
		if prev != nil && methodtest.MaxAbsDiff(prev, unmerged) < 1e-4 {
			t.Errorf("rank %d gives rank %d's logits", b, b-1)
		}
		prev = unmerged
		if err := pm.Merge(); err != nil {
			t.Fatal(err)
		}
		if d := methodtest.MaxAbsDiff(unmerged, logits(t, pm.Base, nil, ids)); d > 1e-4 {
			t.Errorf("rank %d: merged logits differ from unmerged by %g", b, d)
		}
		if err := m.SetRank(1 + b%4); err == nil {
			t.Error("SetRank accepted another rank while merged")
		}
		if err := pm.Unmerge(); err != nil {
			t.Fatal(err)
		}
	}
	pm.DisableAdapters()
	if d := methodtest.MaxAbsDiff(base, logits(t, pm.Base, nil, ids)); d > 1e-5 {
		t.Errorf("after merges and unmerges the base moved by %g", d)
	}
	pm.EnableAdapters()

	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if a := ts["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]; a == nil || !reflect.DeepEqual(a.Shape, []int{4, 24}) {
		t.Errorf("down_proj's lora_A saved as %v, want [r_max, in] = [4 24]", a)
	}
	pm2 := smallModel(t)
	b, err := pm2.LoadAdapter(dir, "again")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Method.(peft.RankSelector).SetRank(2); err != nil {
		t.Fatal(err)
	}
	m.SetRank(2)
	// (The first model's base went through four merges and unmerges.)
	if d := methodtest.MaxAbsDiff(logits(t, pm.Base, nil, ids), logits(t, pm2.Base, nil, ids)); d > 1e-5 {
		t.Errorf("the reloaded adapter at rank 2 differs by %g", d)
	}
}

func llamaLogits(t *testing.T, m *llama.Model, p *nn.Pass, ids []int) *autograd.Var {
	h, err := m.Forward(p, llama.Input{IDs: ids, Batch: 1, T: len(ids)})
	if err != nil {
		t.Fatal(err)
	}
	return m.Logits(p, h)
}

// TestFrozenUpdatesOnlyRankB: in frozen mode one update from a fresh
// optimizer changes only row b of every A and column b of every B.
func TestFrozenUpdatesOnlyRankB(t *testing.T) {
	pm := smallModel(t)
	c := randomConfig(4, "q_proj", "up_proj")
	c.Frozen = true
	m := New(c)
	a, err := pm.AddAdapter(peft.DefaultAdapter, m)
	if err != nil {
		t.Fatal(err)
	}
	before := map[string][]float32{}
	for _, p := range a.Params {
		before[p.Name] = append([]float32(nil), p.Var.Value.Data...)
	}
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.GradAccum, cfg.LR, cfg.WeightDecay, cfg.Seed = 1, 2, 1, 1e-2, 0, 9
	cfg.Schedule, cfg.Warmup = "constant", 0
	exs := []data.Example{{IDs: []int{1, 4, 5, 6, 7}, Labels: []int{1, 4, 5, 6, 7}}, {IDs: []int{1, 8, 9, 3, 2}, Labels: []int{1, 8, 9, 3, 2}}}
	run := &train.Run{Model: pm, Train: exs, OutputDir: t.TempDir(), Fingerprint: "frozen", Config: cfg}
	if _, err := run.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := m.passRank(&nn.Pass{Training: true, Seed: train.MicroBatchSeed(cfg.Seed, 0, 0)})
	t.Logf("the update ran at rank %d", b)
	for _, ly := range m.layers {
		in, R := ly.linear.In(), c.RMax
		for i, v := range ly.f.A.Value.Data {
			if moved := v != before[ly.f.A.Name][i]; moved != (i/in == b-1) {
				t.Fatalf("%s[%d] (row %d) moved = %v at rank %d", ly.f.A.Name, i, i/in, moved, b)
			}
		}
		for i, v := range ly.f.B.Value.Data {
			if moved := v != before[ly.f.B.Name][i]; moved != (i%R == b-1) {
				t.Fatalf("%s[%d] (column %d) moved = %v at rank %d", ly.f.B.Name, i, i%R, moved, b)
			}
		}
	}
}

// TestRanksDegradeGracefully trains one DyLoRA adapter briefly on
// Shakespeare and evaluates it at every rank: each rank beats the base,
// and perplexity falls (within noise) as the rank grows.
func TestRanksDegradeGracefully(t *testing.T) {
	if testing.Short() {
		t.Skip("trains 150 steps")
	}
	base, err := llama.Load(shared.Path(t, "data/models/stories260K/stories260K.bin"), llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(shared.Path(t, "data/models/stories260K/tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	opt := data.Options{SeqLen: 64, EvalFraction: 0.1, Split: "train"}
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	tr, err := data.Load(text, data.FormatText, tok, opt)
	if err != nil {
		t.Fatal(err)
	}
	opt.Split = "eval"
	ev, err := data.Load(text, data.FormatText, tok, opt)
	if err != nil {
		t.Fatal(err)
	}
	pm := peft.Wrap(base)
	c := NewConfig()
	c.RMax, c.LoraAlpha, c.Seed, c.TargetModules = 8, 16, 1, peft.ModuleRegex("all-linear")
	m := New(c)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	evalSet := ev.Examples[:min(64, len(ev.Examples))]
	evalLoss := func() float64 {
		cfg := train.DefaultConfig()
		cfg.Steps, cfg.BatchSize = 1, 8
		var total float64
		var n int
		for i := 0; i < len(evalSet); i += 8 {
			batch := evalSet[i:min(i+8, len(evalSet))]
			ids, labels, mask, T := data.Batch(batch, 0)
			in := llama.Input{IDs: ids, Batch: len(batch), T: T, Mask: mask}
			l, err := pm.Base.Loss(&nn.Pass{}, in, labels)
			if err != nil {
				t.Fatal(err)
			}
			total += float64(l.Value.Data[0]) * float64(len(batch))
			n += len(batch)
		}
		return total / float64(n)
	}
	pm.DisableAdapters()
	baseLoss := evalLoss()
	pm.EnableAdapters()
	cfg := train.DefaultConfig()
	cfg.Steps, cfg.BatchSize, cfg.LR, cfg.Warmup, cfg.Seed = 150, 8, 3e-3, 10, 1
	run := &train.Run{Model: pm, Train: tr.Examples, OutputDir: t.TempDir(), Fingerprint: "dylora", Config: cfg}
	if _, err := run.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	var losses []float64
	for b := 1; b <= c.RMax; b++ {
		if err := m.SetRank(b); err != nil {
			t.Fatal(err)
		}
		losses = append(losses, evalLoss())
	}
	t.Logf("base perplexity %.2f; by rank 1…8: %.2f", math.Exp(baseLoss), expAll(losses))
	for b, l := range losses {
		if l >= baseLoss {
			t.Errorf("rank %d: loss %.4f, no better than the base's %.4f", b+1, l, baseLoss)
		}
		if b > 0 && l > losses[b-1]+0.02 {
			t.Errorf("rank %d is worse than rank %d: %.4f > %.4f", b+1, b, l, losses[b-1])
		}
	}
	if losses[0]-losses[len(losses)-1] < 0.005 {
		t.Errorf("rank 1 (%.4f) is as good as rank 8 (%.4f): the ranks do not matter", losses[0], losses[len(losses)-1])
	}
}

func expAll(ls []float64) []float64 {
	out := make([]float64, len(ls))
	for i, l := range ls {
		out[i] = math.Round(math.Exp(l)*100) / 100
	}
	return out
}
