package llama

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// This file serves continuous batching: every sequence owns a KV cache of
// one sequence (NewKVCache(1, n)), is prefilled alone (Prefill, which is
// exactly Generate's first call), and then decodes in a batch with
// whatever else is running (DecodeStep), the caches gathered step by step.
// Sequences join and leave the batch between any two steps.

// Prefill runs a new sequence's prompt through its empty one-sequence
// cache and returns the logits of the prompt's last position: what
// Generate computes before its first draw. The pass names the sequence's
// adapter (nil: the model's default).
func (m *Model) Prefill(p *nn.Pass, prompt []int, cache *KVCache) ([]float32, error) {
	if cache == nil || cache.batch != 1 || cache.Len() != 0 {
		return nil, fmt.Errorf("llama: prefill needs an empty cache of one sequence")
	}
	if len(prompt) == 0 {
		return nil, fmt.Errorf("llama: prefill needs at least one prompt token (BOS)")
	}
	in := Input{IDs: prompt, Batch: 1, T: len(prompt), Cache: cache}
	h, err := m.Forward(p, in)
	if err != nil {
		return nil, err
	}
	last := autograd.Const(h.Value.RowsView(in.T-1, in.T))
	return m.Logits(p, last).Value.Data, nil
}

// DecodeStep continues len(ids) sequences by one token each: sequence s
// appends ids[s] to caches[s] (a prefilled one-sequence cache). The pass
// names each sequence's adapter (one entry per sequence, or one for all).
// The projections run once over the whole batch, with each adapter's
// hooks on its own rows; attention runs per sequence over its own cache,
// the call Generate makes for that sequence alone. It returns the logits
// [len(ids), vocab].
func (m *Model) DecodeStep(p *nn.Pass, ids []int, caches []*KVCache) (*tensor.Tensor, error) {
	B := len(ids)
	if B == 0 || len(caches) != B {
		return nil, fmt.Errorf("llama: decode step of %d tokens for %d caches", B, len(caches))
	}
	cfg := &m.Config
	for s, c := range caches {
		switch {
		case c == nil || c.batch != 1:
			return nil, fmt.Errorf("llama: decode step: sequence %d needs a cache of one sequence", s)
		case c.Len() == 0:
			return nil, fmt.Errorf("llama: decode step: sequence %d has not been prefilled", s)
		case c.Len()+1 > c.capacity:
			return nil, fmt.Errorf("llama: decode step: sequence %d: %d cached + 1 new token exceed the cache's %d positions", s, c.Len(), c.capacity)
		}
		if id := ids[s]; id < 0 || id >= cfg.VocabSize {
			return nil, fmt.Errorf("llama: decode step: token id %d of sequence %d is outside the vocabulary of %d", id, s, cfg.VocabSize)
		}
	}
	if p != nil && p.Tape != nil {
		return nil, fmt.Errorf("llama: decode step is inference only (the pass has a tape)")
	}
	p, err := p.Begin(B, m.Adapter)
	if err != nil {
		return nil, err
	}
	pos := make([]int, B)
	masks := make([][]bool, B)
	for s, c := range caches {
		ps, km := m.positions(Input{IDs: ids[s : s+1], Batch: 1, T: 1, Cache: c}, prefixes{})
		pos[s], masks[s] = ps[0], km
	}
	x := m.Embed.Lookup(p, ids)
	angles := m.rope.Angles(pos)
	shape := autograd.AttnShape{Batch: 1, T: 1, Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads, HeadDim: cfg.HeadSize(), PrefixPerBatch: true}
	for _, b := range m.Layers {
		x = m.stepBlock(p, b, x, angles, shape, masks, caches)
	}
	for _, c := range caches {
		c.commit(1, nil)
	}
	h := m.Norm.Forward(p, x)
	return m.Logits(p, h).Value, nil
}

// stepBlock is block for one token per sequence, each sequence attending
// over its own cache.
func (m *Model) stepBlock(p *nn.Pass, b *Block, x *autograd.Var, angles *autograd.RoPEAngles, shape autograd.AttnShape, masks [][]bool, caches []*KVCache) *autograd.Var {
	tp := p.Tape
	h := b.InputNorm.Forward(p, x)
	qkv := linears(p, h, b.Q, b.K, b.V)
	q := tp.RoPEAt(qkv[0], shape.Heads, angles)
	k := tp.RoPEAt(qkv[1], shape.KVHeads, angles)
	v := qkv[2]
	attn := tensor.New(len(caches), q.Value.Cols())
	for s, c := range caches {
		row := func(t *tensor.Tensor) *autograd.Var { return autograd.Const(t.RowsView(s, s+1)) }
		pk, pv := c.prefix(b.Index)
		sh := shape
		sh.PrefixLen = c.length
		ks, vs := row(k.Value), row(v.Value)
		c.append(b.Index, ks.Value, vs.Value)
		a := tp.Attention(row(q.Value), ks, vs, pk, pv, sh, masks[s])
		copy(attn.Row(s), a.Value.F32())
	}
	out := b.O.Forward(p, autograd.Const(attn))
	x = tp.Add(x, b.AttnOut.Forward(p, x, h, out))
	u := b.PostAttentionNorm.Forward(p, x)
	gu := linears(p, u, b.Gate, b.Up)
	ffn := b.Down.Forward(p, tp.SwiGLU(gu[0], gu[1]))
	return tp.Add(x, b.MLPOut.Forward(p, x, u, ffn))
}

// Capacity is the number of positions the cache can hold.
func (c *KVCache) Capacity() int { return c.capacity }

// Bytes is the memory the cache's key and value buffers take.
func (c *KVCache) Bytes() int64 {
	var n int64
	for l := range c.k {
		n += int64(len(c.k[l])+len(c.v[l])) * 4
	}
	return n
}
