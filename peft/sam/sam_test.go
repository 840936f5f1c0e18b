package sam_test

import (
	"math"
	"slices"
	"sort"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/sam"
	"github.com/gopeft/gopeft/tensor"
)

type objective struct {
	m   *llama.Model
	ids [][]int
}

func (o objective) Len() int { return len(o.ids) }

func (o objective) Loss(p *nn.Pass, idx []int) (*autograd.Var, error) {
	ids := o.ids[idx[0]]
	in := llama.Input{IDs: ids, Batch: 1, T: len(ids)}
	return o.m.Loss(p, in, llama.LMLabels(in))
}

// SAM keeps, per tensor, the ⌊density·numel⌋ entries of largest squared
// summed gradient: checked against the sum of autograd's weight gradients
// (with the weights made trainable), sorted by hand.
func TestSelectAgainstAutograd(t *testing.T) {
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 19, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	m, err := llama.NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	g := tensor.NewRNG(2)
	var obj objective
	obj.m = m
	for i := 0; i < 4; i++ {
		ids := []int{1}
		for j := 0; j < 6; j++ {
			ids = append(ids, 3+g.IntN(16))
		}
		obj.ids = append(obj.ids, ids)
	}
	pm := peft.Wrap(m)
	ts := []*nn.Linear{m.Layers[0].Q, m.Layers[1].Down}
	const density = 0.05
	got, err := sam.Select(pm, ts, obj, density, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ts {
		l.Weight.SetTrainable(true)
	}
	for i := range obj.ids {
		tp := autograd.NewTape()
		loss, _ := obj.Loss(&nn.Pass{Tape: tp}, []int{i})
		tp.Backward(loss)
	}
	for n, l := range ts {
		sum := l.Weight.Grad.Data
		order := make([]int, len(sum))
		for i := range order {
			order[i] = i
		}
		sort.SliceStable(order, func(a, b int) bool { return sum[order[a]]*sum[order[a]] > sum[order[b]]*sum[order[b]] })
		k := int(density * float64(len(sum)))
		want := make([]int32, k)
		for i := range want {
			want[i] = int32(order[i])
		}
		slices.Sort(want)
		if !slices.Equal(got[n], want) {
			// Allow float rounding to swap entries of equal score only.
			for i := range want {
				a, b := float64(sum[want[i]]), float64(sum[got[n][i]])
				if math.Abs(a*a-b*b) > 1e-6*math.Max(a*a, 1e-12) {
					t.Fatalf("%s: SAM keeps %v, the summed gradient's largest squares are %v", l.Name, got[n], want)
				}
			}
		}
		l.Weight.SetTrainable(false)
	}
}
