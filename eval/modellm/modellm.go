// Package modellm scores evaluation requests with a LLaMA model (with or
// without an active adapter): it implements eval.LM.
package modellm

import (
	"context"
	"fmt"
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/eval"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// LM scores requests with a model. Requests are packed into padded batches
// of at most BatchTokens positions (default 4096), and only the rows that
// predict continuation tokens go through the LM head.
type LM struct {
	Model       *llama.Model
	BatchTokens int
}

// MaxLength implements eval.MaxLengther.
func (lm *LM) MaxLength() int { return lm.Model.Config.MaxPositionEmbeddings }

// LogLikelihood implements eval.LM.
func (lm *LM) LogLikelihood(ctx context.Context, reqs []eval.Request) ([]float64, error) {
	out := make([]float64, len(reqs))
	budget := lm.BatchTokens
	if budget <= 0 {
		budget = 4096
	}
	for start := 0; start < len(reqs); {
		end, longest := nextBatch(start, len(reqs), budget, func(i int) int {
			return len(reqs[i].Context) + len(reqs[i].Continuation) - 1
		})
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := lm.score(reqs[start:end], longest, out[start:end]); err != nil {
			return nil, err
		}
		start = end
	}
	return out, nil
}

// nextBatch grows a batch from item start while batch × longest stays
// within budget positions (a batch has at least one item), returning its
// end and its longest length.
func nextBatch(start, n, budget int, length func(int) int) (end, longest int) {
	end = start
	for end < n {
		l := max(longest, length(end))
		if end > start && l*(end-start+1) > budget {
			break
		}
		longest = l
		end++
	}
	return end, longest
}

// score runs one right-padded batch: sequence i is context + continuation
// without its last token; rows from len(context)-1 on predict the
// continuation.
func (lm *LM) score(reqs []eval.Request, T int, out []float64) error {
	in := llama.Input{Batch: len(reqs), T: T, IDs: make([]int, len(reqs)*T), Mask: make([]bool, len(reqs)*T)}
	var rows, targets []int
	for b, r := range reqs {
		if len(r.Context) == 0 || len(r.Continuation) == 0 {
			return fmt.Errorf("modellm: request %d has an empty context or continuation", b)
		}
		seq := append(append([]int(nil), r.Context...), r.Continuation...)
		seq = seq[:len(seq)-1]
		copy(in.IDs[b*T:], seq)
		for t := range seq {
			in.Mask[b*T+t] = true
		}
		for j, tok := range r.Continuation {
			rows = append(rows, b*T+len(r.Context)-1+j)
			targets = append(targets, tok)
		}
	}
	h, err := lm.Model.Forward(nil, in)
	if err != nil {
		return err
	}
	picked := tensor.New(len(rows), h.Value.Cols())
	for i, r := range rows {
		copy(picked.Row(i), h.Value.Row(r))
	}
	logits := lm.Model.Logits(nil, autograd.Const(picked)).Value
	logp := make([]float64, len(rows))
	parallel.For(len(rows), 16, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			logp[i] = logSoftmaxAt(logits.Row(i), targets[i])
		}
	})
	i := 0
	for b, r := range reqs {
		var s float64
		for range r.Continuation {
			s += logp[i]
			i++
		}
		out[b] = s
	}
	return nil
}

// logSoftmaxAt is log softmax(x)[k], computed in float64.
func logSoftmaxAt(x []float32, k int) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - m)
	}
	return float64(x[k]) - m - math.Log(s)
}

// Classify implements eval.Classifier with the model's classification head
// (llama.Model.ClassifyLogits): sequences are right-padded into batches of
// at most BatchTokens positions.
func (lm *LM) Classify(ctx context.Context, seqs [][]int) ([][]float64, error) {
	if lm.Model.Score == nil {
		return nil, fmt.Errorf("modellm: the model has no classification head")
	}
	budget := lm.BatchTokens
	if budget <= 0 {
		budget = 4096
	}
	out := make([][]float64, 0, len(seqs))
	for start := 0; start < len(seqs); {
		end, longest := nextBatch(start, len(seqs), budget, func(i int) int { return len(seqs[i]) })
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		in := llama.Input{Batch: end - start, T: longest, IDs: make([]int, (end-start)*longest), Mask: make([]bool, (end-start)*longest)}
		for b, s := range seqs[start:end] {
			if len(s) == 0 {
				return nil, fmt.Errorf("modellm: sequence %d is empty", start+b)
			}
			copy(in.IDs[b*longest:], s)
			for t := range s {
				in.Mask[b*longest+t] = true
			}
		}
		logits, err := lm.Model.ClassifyLogits(nil, in)
		if err != nil {
			return nil, err
		}
		for b := 0; b < in.Batch; b++ {
			row := make([]float64, logits.Value.Cols())
			for k, v := range logits.Value.Row(b) {
				row[k] = float64(v)
			}
			out = append(out, row)
		}
		start = end
	}
	return out, nil
}
