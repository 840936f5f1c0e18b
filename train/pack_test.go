package train_test

import (
	"context"
	"math"
	"testing"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

// Training on packed sequences trains what the same examples train
// unpacked: with every example in one micro-batch either way, each step's
// loss agrees within 1e-5 and the LoRA factors after three AdamW steps
// within 1e-4.
func TestPackedTrainingMatchesUnpacked(t *testing.T) {
	g := tensor.NewRNG(4)
	var exs []data.Example
	for i := 0; i < 9; i++ {
		ids := []int{1}
		for j := 0; j < 2+g.IntN(6); j++ {
			ids = append(ids, 3+g.IntN(16))
		}
		labels := append([]int(nil), ids...)
		labels[1] = data.IgnoreIndex // a prompt token
		exs = append(exs, data.Example{IDs: ids, Labels: labels})
	}
	packed, err := data.Pack(exs, 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(packed) >= len(exs) || len(packed[0].Segments) < 2 {
		t.Fatalf("packing 9 short examples into 16 tokens made %d sequences", len(packed))
	}
	run := func(set []data.Example) ([]float64, nn.Params) {
		cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
			VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
		base, err := llama.NewRandom(cfg, 5)
		if err != nil {
			t.Fatal(err)
		}
		c := lora.NewConfig()
		c.Seed, c.TargetModules, c.InitLoraWeights = 7, peft.ModuleRegex("all-linear"), lora.InitRandom
		pm := peft.Wrap(base)
		a, err := pm.AddAdapter("default", lora.New(c))
		if err != nil {
			t.Fatal(err)
		}
		tc := train.DefaultConfig()
		tc.Steps, tc.BatchSize, tc.GradAccum, tc.LR, tc.Schedule, tc.Warmup, tc.Seed = 3, len(set), 1, 1e-2, "constant", 0, 3
		var losses []float64
		r := &train.Run{Model: pm, Train: set, OutputDir: t.TempDir(), Fingerprint: "pack", Config: tc,
			AfterStep: func(rec train.Record) { losses = append(losses, rec.Loss) }}
		if _, err := r.Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		return losses, a.Params
	}
	wantLoss, want := run(exs)
	gotLoss, got := run(packed)
	for s := range wantLoss {
		if d := math.Abs(gotLoss[s] - wantLoss[s]); d > 1e-5 {
			t.Errorf("step %d: packed loss %v, unpacked %v", s+1, gotLoss[s], wantLoss[s])
		}
	}
	for i, p := range got {
		for j, v := range p.Var.Value.Data {
			w := want[i].Var.Value.Data[j]
			if d := math.Abs(float64(v - w)); d > 1e-4*(1+math.Abs(float64(w))) {
				t.Fatalf("%s[%d]: packed %v, unpacked %v", p.Name, j, v, w)
			}
		}
	}
}
