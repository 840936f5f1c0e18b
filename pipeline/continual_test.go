package pipeline

import (
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

// EWC's penalty gradient λ F (θ − θ*) against finite differences.
func TestEWCGradient(t *testing.T) {
	rng := tensor.NewRNG(5)
	var params nn.Params
	var fisher []*tensor.Tensor
	for i, shape := range [][]int{{3, 4}, {5}} {
		v := autograd.Param("p", tensor.New(shape...).Normal(rng, 0, 1), true)
		params = append(params, nn.Param{Name: string(rune('a' + i)), Var: v})
		f := tensor.New(shape...).Normal(rng, 0, 1)
		for k := range f.Data {
			f.Data[k] *= f.Data[k] // a Fisher is ≥ 0
		}
		fisher = append(fisher, f)
	}
	e, err := NewEWC(0.7, params, fisher)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range params { // move away from the anchor
		for k := range p.Var.Value.Data {
			p.Var.Value.Data[k] += float32(rng.Float64()) - 0.5
		}
	}
	worst, err := autograd.GradCheck([]*autograd.Var{params[0].Var, params[1].Var}, func(tp *autograd.Tape) *autograd.Var {
		l, err := e.TermLoss(&nn.Pass{Tape: tp}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
	if err != nil {
		t.Fatalf("EWC gradient: %v (worst %g)", err, worst)
	}
	// Its state round-trips.
	st := e.TrainState()
	e2, _ := NewEWC(0.7, params, nil)
	if err := e2.RestoreTrainState(st); err != nil {
		t.Fatal(err)
	}
	for i := range params {
		if !tensor.SameBits(e2.fisher[i].Data, e.fisher[i].Data) || !tensor.SameBits(e2.anchor[i].Data, e.anchor[i].Data) {
			t.Error("EWC state did not round-trip")
		}
	}
}

// The distillation loss's gradient against finite differences, padding
// rows left out.
func TestSoftCrossEntropyGradient(t *testing.T) {
	rng := tensor.NewRNG(9)
	student := autograd.Param("s", tensor.New(4, 7).Normal(rng, 0, 2), true)
	teacher := tensor.New(4, 7).Normal(rng, 0, 2)
	mask := []bool{true, false, true, true}
	worst, err := autograd.GradCheck([]*autograd.Var{student}, func(tp *autograd.Tape) *autograd.Var {
		return SoftCrossEntropy(tp, student, teacher, mask, 2, 0.5)
	})
	if err != nil {
		t.Fatalf("distillation gradient: %v (worst %g)", err, worst)
	}
	// KL of a distribution with itself is zero.
	if l := SoftCrossEntropy(nil, autograd.Const(teacher), teacher, nil, 2, 1); l.Value.Data[0] > 1e-6 || l.Value.Data[0] < -1e-6 {
		t.Errorf("KL(p‖p) = %v", l.Value.Data[0])
	}
}

// The Fisher is computed without dropout: a LoRA with dropout 0.5 gives
// the same Fisher under any run seed as the same LoRA without dropout.
func TestFisherWithoutDropout(t *testing.T) {
	sTr, _ := textSets(t, "data/text/tinyshakespeare.txt", 4, 1)
	fisherOf := func(dropout float64, seed uint64) []*tensor.Tensor {
		pm := peft.Wrap(stories(t))
		m, _ := loraMethod(4, dropout)()
		m.Config().Base().Seed = 3
		if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
			t.Fatal(err)
		}
		ps := train.Trainable(pm.TrainableParams())
		for _, p := range ps { // B starts at zero: give the factors values so every gradient flows
			for k := range p.Var.Value.Data {
				p.Var.Value.Data[k] = float32(k%7-3) * 0.01
			}
		}
		f, err := Fisher(&train.Run{Model: pm, Config: cfg(1, seed)}, ps, sTr)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	ref := fisherOf(0, 1)
	nonzero := false
	for _, f := range ref {
		for _, v := range f.Data {
			nonzero = nonzero || v > 0
		}
	}
	if !nonzero {
		t.Fatal("the Fisher is all zeros")
	}
	for _, seed := range []uint64{1, 99} {
		got := fisherOf(0.5, seed)
		for i := range ref {
			if !tensor.SameBits(got[i].Data, ref[i].Data) {
				t.Fatalf("seed %d: the Fisher with lora_dropout 0.5 differs from the one without dropout", seed)
			}
		}
	}
}
