package full

import (
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
)

func small(t *testing.T) *llama.Model {
	t.Helper()
	cfg := llama.Config{HiddenSize: 16, IntermediateSize: 24, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 11, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, TieWordEmbeddings: true, BOSTokenID: 1, EOSTokenID: 2}
	m, err := llama.NewRandom(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFullTrainsEveryBaseTensor(t *testing.T) {
	m := small(t)
	pm := peft.Wrap(m)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New()); err != nil {
		t.Fatal(err)
	}
	all, trainable := m.Params().Count()
	if all != trainable || all == 0 {
		t.Fatalf("%d of %d parameters trainable", trainable, all)
	}
	in := llama.Input{IDs: []int{1, 4, 5, 6, 7}, Batch: 1, T: 5}
	tp := autograd.NewTape()
	loss, err := m.Loss(&nn.Pass{Tape: tp, Training: true}, in, llama.LMLabels(in))
	if err != nil {
		t.Fatal(err)
	}
	tp.Backward(loss)
	for _, p := range m.Params() {
		if p.Var.Grad == nil {
			t.Errorf("%s got no gradient", p.Name)
		}
	}
}

func TestFullRefusesBF16Weights(t *testing.T) {
	m := small(t)
	m.ToBF16()
	_, err := peft.Wrap(m).AddAdapter(peft.DefaultAdapter, New())
	if err == nil || !strings.Contains(err.Error(), "float32") {
		t.Fatalf("full fine-tuning of a bf16 model: %v", err)
	}
}
