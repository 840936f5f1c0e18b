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
		// Grow the batch while batch × longest stays within the budget.
		end, longest := start, 0
		for end < len(reqs) {
			n := len(reqs[end].Context) + len(reqs[end].Continuation) - 1
			l := max(longest, n)
			if end > start && l*(end-start+1) > budget {
				break
			}
			longest = l
			end++
		}
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
