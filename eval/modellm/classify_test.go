package modellm

import (
	"context"
	"math"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/llama"
)

func TestClassifyMatchesOneByOne(t *testing.T) {
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 13, MaxPositionEmbeddings: 64, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2, RoPE: autograd.RoPEHalf}
	m, err := llama.NewRandom(cfg, 9)
	if err != nil {
		t.Fatal(err)
	}
	lm := &LM{Model: m, BatchTokens: 12} // forces several batches
	seqs := [][]int{{1, 4, 5}, {1, 7, 8, 9, 10, 3}, {1}, {1, 2, 3, 4, 5, 6, 7}, {1, 12}}
	if _, err := lm.Classify(context.Background(), seqs); err == nil {
		t.Fatal("Classify without a head succeeded")
	}
	if err := m.AddScoreHead(3, 4); err != nil {
		t.Fatal(err)
	}
	got, err := lm.Classify(context.Background(), seqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(seqs) {
		t.Fatalf("%d rows for %d sequences", len(got), len(seqs))
	}
	for i, s := range seqs {
		want, err := m.ClassifyLogits(nil, llama.Input{IDs: s, Batch: 1, T: len(s)})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range want.Value.Data {
			if math.Abs(got[i][k]-float64(v)) > 1e-5 {
				t.Errorf("sequence %d class %d: %v batched, %v alone", i, k, got[i][k], v)
			}
		}
	}
	if _, err := lm.Classify(context.Background(), [][]int{{1}, {}}); err == nil {
		t.Error("an empty sequence was accepted")
	}
}
