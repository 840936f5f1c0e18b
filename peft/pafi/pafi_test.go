package pafi_test

import (
	"math"
	"testing"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/pafi"
)

// PaFi selects the k entries of smallest |θ|: none left out is smaller
// than one selected.
func TestSmallestMagnitudes(t *testing.T) {
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000}
	m, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	pm := peft.Wrap(m)
	ts := pm.Linears()[:7]
	const k = 50
	idx, err := pafi.Smallest(pm, ts, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	var maxIn float64
	minOut := math.Inf(1)
	n := 0
	for ti, l := range ts {
		sel := map[int32]bool{}
		for _, i := range idx[ti] {
			sel[i] = true
		}
		n += len(idx[ti])
		for i, v := range l.Weight.Value.Data {
			a := math.Abs(float64(v))
			if sel[int32(i)] {
				maxIn = math.Max(maxIn, a)
			} else {
				minOut = math.Min(minOut, a)
			}
		}
	}
	if n != k || maxIn > minOut {
		t.Fatalf("%d selected; largest selected |θ| %g, smallest left out %g", n, maxIn, minOut)
	}
}
