package nn

import (
	"fmt"
	"hash/fnv"

	"github.com/gopeft/gopeft/autograd"
)

// Pass is one call through a model: everything that belongs to the call
// rather than to the model. The model reads nothing per-call from its own
// fields, so two passes with different adapters, seeds or modes can use the
// same weights.
type Pass struct {
	// Tape records the computation for a backward; nil is plain inference.
	Tape *autograd.Tape
	// Training turns on what only training does (dropout).
	Training bool
	// Seed is this micro-batch's seed: every random draw of the pass
	// (dropout masks, DyLoRA's rank) is a function of it and of the site,
	// so two micro-batches differ and a resumed run repeats them.
	Seed uint64
	// Adapters names the adapter each sequence of the batch uses: one entry
	// per sequence, or a single entry for all of them. "" is the base model
	// alone. Empty: the model's default (llama.Model.Adapter).
	Adapters []string

	batch int
}

// Begin returns the pass a model's forward runs with: a copy of p (a nil p
// is inference) for batch sequences, with Adapters filled in with
// defaultAdapter when it is empty. It fails when Adapters has neither one
// entry nor one per sequence.
func (p *Pass) Begin(batch int, defaultAdapter string) (*Pass, error) {
	q := Pass{}
	if p != nil {
		q = *p
	}
	q.batch = batch
	switch len(q.Adapters) {
	case 0:
		q.Adapters = []string{defaultAdapter}
	case 1, batch:
	default:
		return nil, fmt.Errorf("nn: the pass names adapters for %d sequences, the batch has %d", len(q.Adapters), batch)
	}
	return &q, nil
}

// Batch is the number of sequences in the pass.
func (p *Pass) Batch() int { return p.batch }

// Uses reports whether sequence s of the batch runs the hooks of adapter
// owner. A hook owned by "" belongs to the model and always runs.
func (p *Pass) Uses(owner string, s int) bool {
	if owner == "" {
		return true
	}
	if len(p.Adapters) == 1 {
		return p.Adapters[0] == owner
	}
	return p.Adapters[s] == owner
}

// scope says which rows of an activation of rows rows (Batch sequences of
// equal length, sequence-major) a hook of owner applies to: all, none, or
// the listed rows.
func (p *Pass) scope(owner string, rows int) (all bool, idx []int) {
	if owner == "" || len(p.Adapters) == 1 {
		return p.Uses(owner, 0), nil
	}
	if p.batch <= 0 || rows%p.batch != 0 {
		panic(fmt.Sprintf("nn: %d rows do not split into %d sequences", rows, p.batch))
	}
	per := rows / p.batch
	for s := 0; s < p.batch; s++ {
		if p.Uses(owner, s) {
			for r := s * per; r < (s+1)*per; r++ {
				idx = append(idx, r)
			}
		}
	}
	return len(idx) == rows, idx
}

// Applies reports whether any sequence of the pass runs owner's hooks.
func (p *Pass) Applies(owner string) bool {
	for s := 0; s < max(p.batch, 1); s++ {
		if p.Uses(owner, s) {
			return true
		}
	}
	return false
}

// Route applies a hook of owner to the rows it owns: f receives xs (all
// with the same rows) restricted to those rows and returns the new value of
// xs[0] on them; the other rows of xs[0] pass through. When every sequence
// uses owner, f sees the whole batch; when none does, f is not called. So a
// method computes on "its" rows without knowing the batch mixes adapters.
func (p *Pass) Route(owner string, f func(xs ...*autograd.Var) *autograd.Var, xs ...*autograd.Var) *autograd.Var {
	all, idx := p.scope(owner, xs[0].Value.Rows())
	switch {
	case all:
		return f(xs...)
	case len(idx) == 0:
		return xs[0]
	}
	sub := make([]*autograd.Var, len(xs))
	for i, x := range xs {
		sub[i] = p.Tape.GatherRows(x, idx)
	}
	return p.Tape.ScatterRows(xs[0], f(sub...), idx)
}

// SeedFor is the seed of one random draw of the pass, named by key (a
// site's name and the adapter's, say): different keys, or different pass
// seeds, give independent streams.
func (p *Pass) SeedFor(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	z := p.Seed ^ h.Sum64()
	// splitmix64's finaliser: nearby seeds give unrelated streams.
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Dropout is inverted dropout with probability prob in training and the
// identity otherwise; its mask is drawn from SeedFor(key).
func (p *Pass) Dropout(x *autograd.Var, prob float32, key string) *autograd.Var {
	if !p.Training || prob == 0 {
		return x
	}
	return p.Tape.Dropout(x, prob, p.SeedFor(key))
}
