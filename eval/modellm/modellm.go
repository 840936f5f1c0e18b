// Package modellm scores evaluation requests with a LLaMA model (with or
// without an active adapter): it implements eval.LM.
package modellm

import (
	"context"
	"fmt"
	"math"
	"slices"

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

// MaxLength implements eval.MaxLengther: the context less the positions
// the adapter's virtual tokens or prefix take (llama.Model.Prepended), so
// that a few-shot context is truncated to what fits after them.
func (lm *LM) MaxLength() int {
	n, err := lm.Model.Prepended(nil)
	if err != nil { // the forward will report it
		n = 0
	}
	return lm.Model.Config.MaxPositionEmbeddings - n
}

// LogLikelihood implements eval.LM. Consecutive requests with the same
// context (the choices of one question) share it: the context runs once,
// and the continuations run as one batch over copies of its KV cache.
func (lm *LM) LogLikelihood(ctx context.Context, reqs []eval.Request) ([]float64, error) {
	out := make([]float64, len(reqs))
	for _, r := range reqs {
		if len(r.Context) == 0 || len(r.Continuation) == 0 {
			return nil, fmt.Errorf("modellm: a request has an empty context or continuation")
		}
	}
	budget := lm.BatchTokens
	if budget <= 0 {
		budget = 4096
	}
	for start := 0; start < len(reqs); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if end := sameContext(reqs, start); end-start > 1 {
			if err := lm.scoreShared(reqs[start:end], out[start:end]); err != nil {
				return nil, err
			}
			start = end
			continue
		}
		end, longest := nextBatch(start, len(reqs), budget, func(i int) int {
			return len(reqs[i].Context) + len(reqs[i].Continuation) - 1
		})
		if end2 := sameContext(reqs, end-1); end2-(end-1) > 1 && end-1 > start {
			end-- // leave a shared-context group whole for the next round
		}
		if err := lm.score(reqs[start:end], longest, out[start:end]); err != nil {
			return nil, err
		}
		start = end
	}
	return out, nil
}

// sameContext returns the end of the run of requests from start whose
// context equals start's.
func sameContext(reqs []eval.Request, start int) int {
	end := start + 1
	for end < len(reqs) && slices.Equal(reqs[end].Context, reqs[start].Context) {
		end++
	}
	return end
}

// scoreShared scores requests that share one context.
func (lm *LM) scoreShared(reqs []eval.Request, out []float64) error {
	ctxIDs := reqs[0].Context
	cache := lm.Model.NewKVCache(1, len(ctxIDs))
	h, err := lm.Model.Forward(nil, llama.Input{IDs: ctxIDs, Batch: 1, T: len(ctxIDs), Cache: cache})
	if err != nil {
		return err
	}
	// Each continuation's first token is predicted by the context's last row.
	last := h.Value.Row(len(ctxIDs) - 1)
	var hidden [][]float32
	var targets []int
	for _, r := range reqs {
		hidden = append(hidden, last)
		targets = append(targets, r.Continuation[0])
	}
	T := 0
	for _, r := range reqs {
		T = max(T, len(r.Continuation)-1)
	}
	if T > 0 {
		batch, err := cache.Repeat(len(reqs), T)
		if err != nil {
			return err
		}
		in := llama.Input{Batch: len(reqs), T: T, IDs: make([]int, len(reqs)*T), Mask: make([]bool, len(reqs)*T), Cache: batch}
		for b, r := range reqs {
			copy(in.IDs[b*T:], r.Continuation[:len(r.Continuation)-1])
			for t := 0; t < len(r.Continuation)-1; t++ {
				in.Mask[b*T+t] = true
			}
		}
		h2, err := lm.Model.Forward(nil, in)
		if err != nil {
			return err
		}
		for b, r := range reqs {
			for j := 1; j < len(r.Continuation); j++ {
				hidden = append(hidden, h2.Value.Row(b*T+j-1))
				targets = append(targets, r.Continuation[j])
			}
		}
	}
	logp := lm.logProbs(hidden, targets)
	for b := range reqs {
		out[b] = logp[b]
	}
	i := len(reqs)
	for b, r := range reqs {
		for range r.Continuation[1:] {
			out[b] += logp[i]
			i++
		}
	}
	return nil
}

// logProbs applies the LM head to the given hidden rows only and returns
// log p(target) for each.
func (lm *LM) logProbs(hidden [][]float32, targets []int) []float64 {
	picked := tensor.New(len(hidden), lm.Model.Config.HiddenSize)
	for i, h := range hidden {
		copy(picked.Row(i), h)
	}
	logits := lm.Model.Logits(nil, autograd.Const(picked)).Value
	logp := make([]float64, len(hidden))
	parallel.For(len(hidden), 16, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			logp[i] = logSoftmaxAt(logits.Row(i), targets[i])
		}
	})
	return logp
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
	hidden := make([][]float32, len(rows))
	for i, r := range rows {
		hidden[i] = h.Value.Row(r)
	}
	logp := lm.logProbs(hidden, targets)
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
