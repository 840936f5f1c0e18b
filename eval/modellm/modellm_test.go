package modellm

import (
	"context"
	"math"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/eval"
	"github.com/gopeft/gopeft/model/llama"
)

// reference scores one request alone from the full logits matrix.
func reference(t *testing.T, m *llama.Model, r eval.Request) float64 {
	seq := append(append([]int(nil), r.Context...), r.Continuation...)
	h, err := m.Forward(nil, llama.Input{IDs: seq, Batch: 1, T: len(seq)})
	if err != nil {
		t.Fatal(err)
	}
	lg := m.Logits(nil, h).Value
	var s float64
	for j, tok := range r.Continuation {
		row := lg.Row(len(r.Context) - 1 + j)
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v))
		}
		s += float64(row[tok]) - math.Log(z)
	}
	return s
}

func TestLogLikelihoodMatchesOneByOne(t *testing.T) {
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 13, MaxPositionEmbeddings: 64, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2, RoPE: autograd.RoPEHalf}
	m, err := llama.NewRandom(cfg, 9)
	if err != nil {
		t.Fatal(err)
	}
	// Scale weights up so the distribution is far from uniform.
	for _, p := range m.Params() {
		if len(p.Var.Value.Shape) == 2 {
			for i := range p.Var.Value.Data {
				p.Var.Value.Data[i] *= 20
			}
		}
	}
	reqs := []eval.Request{
		{Context: []int{1, 4, 5}, Continuation: []int{6}},
		{Context: []int{1, 4, 5}, Continuation: []int{7, 8, 9}},
		{Context: []int{1}, Continuation: []int{12, 3}},
		{Context: []int{1, 2, 3, 4, 5, 6, 7}, Continuation: []int{8}},
	}
	for _, budget := range []int{0, 5} { // one batch, and one request a batch
		lm := &LM{Model: m, BatchTokens: budget}
		got, err := lm.LogLikelihood(context.Background(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range reqs {
			want := reference(t, m, r)
			if math.Abs(got[i]-want) > 1e-4 {
				t.Errorf("budget %d request %d: %v, one by one %v", budget, i, got[i], want)
			}
		}
	}
	if _, err := (&LM{Model: m}).LogLikelihood(context.Background(), []eval.Request{{Context: []int{1}}}); err == nil {
		t.Error("an empty continuation was accepted")
	}
}
