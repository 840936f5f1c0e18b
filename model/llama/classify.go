package llama

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// Classification head names, as Hugging Face's LlamaForSequenceClassification
// has them: a Linear "score" [num_labels, hidden] without bias.
const (
	ScoreModule = "score"
	NameScore   = ScoreModule + ".weight"
)

// InitializerRange is the standard deviation Hugging Face's LLaMA config
// initialises new Linear weights with (initializer_range).
const InitializerRange = 0.02

// AddScoreHead gives the model a sequence-classification head over
// numLabels classes, initialised as Hugging Face does: N(0, 0.02²), drawn
// from a generator seeded by seed. The head starts frozen, like every base
// weight; a PEFT adapter trains a copy of it through modules_to_save.
func (m *Model) AddScoreHead(numLabels int, seed uint64) error {
	if numLabels < 1 {
		return fmt.Errorf("llama: a classification head needs at least one label, got %d", numLabels)
	}
	if m.Score != nil {
		return fmt.Errorf("llama: the model already has a classification head (%d labels)", m.Score.Out())
	}
	w := tensor.New(numLabels, m.Config.HiddenSize)
	w.Normal(tensor.NewRNG(seed), 0, InitializerRange)
	m.setScore(w)
	return nil
}

func (m *Model) setScore(w *tensor.Tensor) {
	m.Score = nn.NewLinear(ScoreModule, autograd.Param(NameScore, w, false), nil)
}

// NumLabels is the classification head's number of classes (0 without a
// head).
func (m *Model) NumLabels() int {
	if m.Score == nil {
		return 0
	}
	return m.Score.Out()
}

// LastTokenRows returns, for each sequence of a batch, the row of its last
// real (non-padding) token in the [Batch·T, hidden] output of Forward:
// the token Hugging Face's LlamaForSequenceClassification pools. Padding
// may sit on either side. A sequence with no real token is an error.
func LastTokenRows(in Input) ([]int, error) {
	if in.Batch <= 0 || in.T <= 0 || (in.Mask != nil && len(in.Mask) != in.Batch*in.T) {
		return nil, fmt.Errorf("llama: mask of %d entries for batch %d × length %d", len(in.Mask), in.Batch, in.T)
	}
	rows := make([]int, in.Batch)
	for b := range rows {
		rows[b] = b*in.T + in.T - 1
		if in.Mask == nil {
			continue
		}
		for rows[b] >= b*in.T && !in.Mask[rows[b]] {
			rows[b]--
		}
		if rows[b] < b*in.T {
			return nil, fmt.Errorf("llama: sequence %d of the batch has no real token", b)
		}
	}
	return rows, nil
}

// ClassifyLogits runs the decoder and the classification head on each
// sequence's last real token: [Batch, numLabels] logits. With a recording
// tape in the pass the result can be differentiated.
func (m *Model) ClassifyLogits(p *nn.Pass, in Input) (*autograd.Var, error) {
	if m.Score == nil {
		return nil, fmt.Errorf("llama: the model has no classification head (AddScoreHead, or load a SEQ_CLS adapter)")
	}
	if in.Segments != nil {
		return nil, fmt.Errorf("llama: classification pools one token per sequence: it does not take packed segments")
	}
	rows, err := LastTokenRows(in)
	if err != nil {
		return nil, err
	}
	h, p, _, _, err := m.forward(p, in)
	if err != nil {
		return nil, err
	}
	if virtual := h.Value.Rows()/in.Batch - in.T; virtual > 0 {
		for b := range rows { // the rows of the forward, virtual ones included
			rows[b] += (b + 1) * virtual
		}
	}
	return m.Score.Forward(p, p.Tape.GatherRows(h, rows)), nil
}
