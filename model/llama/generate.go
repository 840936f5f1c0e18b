package llama

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/tensor"
)

// Sampling chooses the next token from logits. Temperature 0 is greedy
// (the first highest logit, as llama2.c picks); otherwise logits are divided
// by Temperature, restricted to the TopK most likely (0: all) and to the
// smallest set whose probability reaches TopP (0 or 1: all), and sampled with
// a generator seeded by Seed.
type Sampling struct {
	Temperature float64
	TopK        int
	TopP        float64
	Seed        uint64
}

// Validate refuses settings that would otherwise mean something else than
// they say: a negative or NaN temperature, a top-p outside (0, 1], a
// negative top-k. TopP's zero value is taken as 1 (no cut), so that the
// zero Sampling is plain greedy decoding; a command line should refuse an
// explicit 0.
func (s Sampling) Validate() error {
	switch {
	case !(s.Temperature >= 0) || math.IsInf(s.Temperature, 0):
		return fmt.Errorf("temperature %v: must be a finite number ≥ 0 (0: greedy)", s.Temperature)
	case !(s.TopP >= 0 && s.TopP <= 1):
		return fmt.Errorf("top-p %v: must be in (0, 1] (1: no nucleus cut)", s.TopP)
	case s.TopK < 0:
		return fmt.Errorf("top-k %d: must be ≥ 0 (0: no cut)", s.TopK)
	}
	return nil
}

// Sampler draws tokens under one Sampling; it owns the random stream.
type Sampler struct {
	Sampling
	rng   *tensor.RNG
	probs []candidate
}

type candidate struct {
	id int
	p  float64
}

// NewSampler returns a sampler whose draws depend only on s.
func NewSampler(s Sampling) *Sampler { return &Sampler{Sampling: s, rng: tensor.NewRNG(s.Seed)} }

// Sample picks a token from one row of logits.
func (s *Sampler) Sample(logits []float32) int {
	if s.Temperature <= 0 {
		return tensor.Argmax(logits)
	}
	max := float64(logits[tensor.Argmax(logits)])
	c := s.probs[:0]
	var sum float64
	for i, l := range logits {
		p := math.Exp((float64(l) - max) / s.Temperature)
		c = append(c, candidate{i, p})
		sum += p
	}
	s.probs = c
	if (s.TopK > 0 && s.TopK < len(c)) || (s.TopP > 0 && s.TopP < 1) {
		sort.SliceStable(c, func(a, b int) bool { return c[a].p > c[b].p })
		if s.TopK > 0 && s.TopK < len(c) {
			c = c[:s.TopK]
		}
		kept := 0.0
		for _, x := range c {
			kept += x.p
		}
		if s.TopP > 0 && s.TopP < 1 {
			acc := 0.0
			for i, x := range c {
				acc += x.p
				if acc >= s.TopP*kept {
					c = c[:i+1]
					break
				}
			}
		}
		sum = 0
		for _, x := range c {
			sum += x.p
		}
	}
	r := s.rng.Float64() * sum
	for _, x := range c {
		r -= x.p
		if r < 0 {
			return x.id
		}
	}
	return c[len(c)-1].id
}

// GenerateOptions controls Generate.
type GenerateOptions struct {
	Sampling
	MaxNewTokens int
	// Stop lists extra token ids that end generation (EOS always does).
	Stop []int
}

// Generate continues prompt (token ids, BOS included if wanted) and calls
// emit with each new token as it is chosen; emit returning false stops.
// It returns the new tokens, the stop token excluded.
func (m *Model) Generate(ctx context.Context, prompt []int, opt GenerateOptions, emit func(id int) bool) ([]int, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("llama: generate needs at least one prompt token (BOS)")
	}
	if opt.MaxNewTokens < 0 {
		return nil, fmt.Errorf("llama: max new tokens must not be negative, got %d", opt.MaxNewTokens)
	}
	if err := opt.Sampling.Validate(); err != nil {
		return nil, fmt.Errorf("llama: %w", err)
	}
	// The cache is sized for the whole sequence up front: bound it by the
	// context rather than by whatever length was asked for. Virtual tokens
	// and prefixes that the adapter's hooks place first take positions too.
	n, err := m.Prepended(nil)
	if err != nil {
		return nil, err
	}
	if ctxLen := m.Config.MaxPositionEmbeddings; n+len(prompt)+opt.MaxNewTokens > ctxLen {
		if n > 0 {
			return nil, fmt.Errorf("llama: the adapter's %d virtual or prefix positions, the prompt's %d tokens and %d new ones exceed the model's context of %d (max_position_embeddings)",
				n, len(prompt), opt.MaxNewTokens, ctxLen)
		}
		return nil, fmt.Errorf("llama: the prompt's %d tokens and %d new ones exceed the model's context of %d (max_position_embeddings)",
			len(prompt), opt.MaxNewTokens, ctxLen)
	}
	capacity := len(prompt) + opt.MaxNewTokens
	cache := m.NewKVCache(1, capacity)
	stop := map[int]bool{m.Config.EOSTokenID: true}
	if m.StopAtBOS {
		stop[m.Config.BOSTokenID] = true
	}
	for _, id := range opt.Stop {
		stop[id] = true
	}
	sampler := NewSampler(opt.Sampling)
	var out []int
	next := prompt
	for len(out) < opt.MaxNewTokens {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		logits, err := m.lastLogits(Input{IDs: next, Batch: 1, T: len(next), Cache: cache})
		if err != nil {
			return out, err
		}
		for i, l := range logits {
			if l-l != 0 { // NaN or ±Inf
				return out, fmt.Errorf("llama: the logit of token %d is %v at generation step %d: the model computes non-finite values", i, l, len(out)+1)
			}
		}
		id := sampler.Sample(logits)
		if stop[id] {
			break
		}
		out = append(out, id)
		if emit != nil && !emit(id) {
			break
		}
		next = []int{id}
	}
	return out, nil
}

// lastLogits runs the batch (of one sequence) and returns the logits of its
// last position only: the LM head is applied to that row alone.
func (m *Model) lastLogits(in Input) ([]float32, error) {
	h, err := m.Forward(nil, in)
	if err != nil {
		return nil, err
	}
	last := autograd.Const(h.Value.RowsView(in.T-1, in.T))
	return m.Logits(nil, last).Value.Data, nil
}
