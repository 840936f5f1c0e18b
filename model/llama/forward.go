package llama

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// Input is a batch of token sequences, all T long: Batch × T ids, sequence
// by sequence. Mask, when set, marks real tokens (true) and padding (false);
// padding may sit on either side. Positions count real tokens only, so a
// left-padded sequence is computed exactly as it would be alone.
type Input struct {
	IDs   []int
	Batch int
	T     int
	Mask  []bool
	// Cache, when set, holds earlier tokens' keys and values: the batch
	// continues those sequences, and its keys and values are appended.
	Cache *KVCache
}

func (in *Input) check(vocab int) error {
	if in.Batch <= 0 || in.T <= 0 || len(in.IDs) != in.Batch*in.T {
		return fmt.Errorf("llama: input of %d ids for batch %d × length %d", len(in.IDs), in.Batch, in.T)
	}
	if in.Mask != nil && len(in.Mask) != len(in.IDs) {
		return fmt.Errorf("llama: mask of %d entries for %d ids", len(in.Mask), len(in.IDs))
	}
	for i, id := range in.IDs {
		if id < 0 || id >= vocab {
			if in.Mask != nil && !in.Mask[i] {
				continue
			}
			return fmt.Errorf("llama: token id %d at position %d is outside the vocabulary of %d", id, i, vocab)
		}
	}
	if in.Cache != nil && in.Cache.batch != in.Batch {
		return fmt.Errorf("llama: cache for batch %d used with batch %d", in.Cache.batch, in.Batch)
	}
	return nil
}

// Forward runs the decoder and returns the final normalised hidden states
// [Batch·T, hidden]. With a recording tape the computation can be
// differentiated; with nil it is plain inference.
func (m *Model) Forward(tp *autograd.Tape, in Input) (*autograd.Var, error) {
	cfg := &m.Config
	if err := in.check(cfg.VocabSize); err != nil {
		return nil, err
	}
	if in.Cache != nil && in.Cache.Len()+in.T > in.Cache.capacity {
		return nil, fmt.Errorf("llama: %d cached + %d new tokens exceed the cache's %d positions", in.Cache.Len(), in.T, in.Cache.capacity)
	}
	ids := in.IDs
	if in.Mask != nil { // padding may hold any id: look up a valid one
		ids = append([]int(nil), ids...)
		for i, real := range in.Mask {
			if !real {
				ids[i] = 0
			}
		}
	}
	pos, keyMask := m.positions(in)
	x := tp.Embedding(m.Embed, ids)
	shape := autograd.AttnShape{Batch: in.Batch, T: in.T, Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads, HeadDim: cfg.HeadSize()}
	angles := m.rope.Angles(pos) // every layer rotates the same positions
	for _, b := range m.Layers {
		x = m.block(tp, b, x, angles, shape, keyMask, in.Cache)
	}
	if in.Cache != nil {
		in.Cache.commit(in.T, in.Mask)
	}
	return tp.RMSNorm(x, m.Norm, float32(cfg.RMSNormEps)), nil
}

// positions gives each row its RoPE position (cached real tokens plus real
// tokens before it) and the key mask over cached and new keys (nil when no
// key is padding).
func (m *Model) positions(in Input) ([]int, []bool) {
	pos := make([]int, in.Batch*in.T)
	past := 0
	if in.Cache != nil {
		past = in.Cache.Len()
	}
	padded := in.Mask != nil || (in.Cache != nil && in.Cache.padded)
	var keyMask []bool
	if padded {
		keyMask = make([]bool, 0, in.Batch*(past+in.T))
	}
	for b := 0; b < in.Batch; b++ {
		n := 0
		if in.Cache != nil {
			n = in.Cache.real[b]
			if padded {
				keyMask = append(keyMask, in.Cache.mask[b][:past]...)
			}
		}
		for t := 0; t < in.T; t++ {
			i := b*in.T + t
			pos[i] = n
			real := in.Mask == nil || in.Mask[i]
			if real {
				n++
			}
			if padded {
				keyMask = append(keyMask, real)
			}
		}
	}
	return pos, keyMask
}

func (m *Model) block(tp *autograd.Tape, b *Block, x *autograd.Var, angles *autograd.RoPEAngles, shape autograd.AttnShape, keyMask []bool, cache *KVCache) *autograd.Var {
	eps := float32(m.Config.RMSNormEps)
	h := tp.RMSNorm(x, b.InputNorm, eps)
	qkv := linears(tp, h, b.Q, b.K, b.V)
	q := tp.RoPEAt(qkv[0], shape.Heads, angles)
	k := tp.RoPEAt(qkv[1], shape.KVHeads, angles)
	v := qkv[2]
	var pk, pv *autograd.Var
	switch {
	case cache != nil:
		pk, pv = cache.prefix(b.Index)
		shape.PrefixPerBatch, shape.PrefixLen = true, cache.length
		cache.append(b.Index, k.Value, v.Value)
	case b.PrefixKV != nil:
		pk, pv = b.PrefixKV(tp, shape.Batch)
	}
	attn := b.O.Forward(tp, tp.Attention(q, k, v, pk, pv, shape, keyMask))
	if b.AfterAttention != nil {
		attn = b.AfterAttention(tp, h, attn)
	}
	x = tp.Add(x, attn)
	u := tp.RMSNorm(x, b.PostAttentionNorm, eps)
	gu := linears(tp, u, b.Gate, b.Up)
	ffn := b.Down.Forward(tp, tp.SwiGLU(gu[0], gu[1]))
	if b.AfterFFN != nil {
		ffn = b.AfterFFN(tp, u, ffn)
	}
	return tp.Add(x, ffn)
}

// linears applies several layers to the same input: as one autograd
// Linears (whose few-row products share one split over the threads) when
// every layer is a plain weight, else layer by layer.
func linears(tp *autograd.Tape, x *autograd.Var, ls ...*nn.Linear) []*autograd.Var {
	ws := make([]*autograd.Var, len(ls))
	for i, l := range ls {
		if len(l.Deltas) > 0 || l.Bias != nil {
			out := make([]*autograd.Var, len(ls))
			for j, l := range ls {
				out[j] = l.Forward(tp, x)
			}
			return out
		}
		ws[i] = l.Weight
	}
	return tp.Linears(x, ws...)
}

// Logits returns the LM head's output for the given hidden rows.
func (m *Model) Logits(tp *autograd.Tape, hidden *autograd.Var) *autograd.Var {
	return m.LMHead.Forward(tp, hidden)
}

// Loss is the mean next-token cross-entropy of a batch: targets[i] is the
// token row i should predict, or autograd.IgnoreIndex. The LM head and the
// softmax are fused so the rows × vocab logits are never held at once; a
// head with deltas (a trained or adapted lm_head) is computed in full.
func (m *Model) Loss(tp *autograd.Tape, in Input, targets []int) (*autograd.Var, error) {
	if len(targets) != len(in.IDs) {
		return nil, fmt.Errorf("llama: %d targets for %d tokens", len(targets), len(in.IDs))
	}
	h, err := m.Forward(tp, in)
	if err != nil {
		return nil, err
	}
	if len(m.LMHead.Deltas) > 0 || m.LMHead.Bias != nil {
		return tp.CrossEntropy(m.Logits(tp, h), targets), nil
	}
	return tp.LMHeadCrossEntropy(h, m.LMHead.Weight, targets, 64), nil
}

// NextTokenTargets shifts a batch's ids left by one within each sequence:
// row t predicts token t+1; the last row of each sequence and padding
// predict nothing.
func NextTokenTargets(in Input) []int {
	tg := make([]int, len(in.IDs))
	for b := 0; b < in.Batch; b++ {
		for t := 0; t < in.T; t++ {
			i := b*in.T + t
			tg[i] = autograd.IgnoreIndex
			if t+1 < in.T && (in.Mask == nil || (in.Mask[i] && in.Mask[i+1])) {
				tg[i] = in.IDs[i+1]
			}
		}
	}
	return tg
}

// KVCache keeps each layer's keys (after RoPE) and values for incremental
// decoding, for a fixed batch size and capacity.
type KVCache struct {
	batch, capacity, kvDim int
	length                 int
	k, v                   [][]float32 // per layer: batch × capacity × kvDim
	real                   []int       // real (non-padding) tokens cached per sequence
	mask                   [][]bool    // per sequence: which cached positions are real
	padded                 bool
}

// NewKVCache allocates a cache for batch sequences of up to capacity tokens.
func (m *Model) NewKVCache(batch, capacity int) *KVCache {
	c := &KVCache{batch: batch, capacity: capacity, kvDim: m.Config.KVDim(), real: make([]int, batch), mask: make([][]bool, batch)}
	for range m.Layers {
		c.k = append(c.k, make([]float32, batch*capacity*c.kvDim))
		c.v = append(c.v, make([]float32, batch*capacity*c.kvDim))
	}
	for b := range c.mask {
		c.mask[b] = make([]bool, capacity)
	}
	return c
}

// Len is the number of positions cached.
func (c *KVCache) Len() int { return c.length }

// prefix returns layer l's cache buffers as [batch·capacity, kvDim], read
// in place: each sequence's first Len rows are filled.
func (c *KVCache) prefix(l int) (k, v *autograd.Var) {
	if c.length == 0 {
		return nil, nil
	}
	view := func(buf []float32) *autograd.Var {
		return autograd.Const(tensor.FromData(buf, c.batch*c.capacity, c.kvDim))
	}
	return view(c.k[l]), view(c.v[l])
}

// append stores layer l's new keys and values [batch·T, kvDim] after the
// cached ones.
func (c *KVCache) append(l int, k, v *tensor.Tensor) {
	t := k.Rows() / c.batch
	for b := 0; b < c.batch; b++ {
		dst := (b*c.capacity + c.length) * c.kvDim
		src := b * t * c.kvDim
		copy(c.k[l][dst:dst+t*c.kvDim], k.Data[src:src+t*c.kvDim])
		copy(c.v[l][dst:dst+t*c.kvDim], v.Data[src:src+t*c.kvDim])
	}
}

// commit advances the cache by t positions once every layer has appended.
func (c *KVCache) commit(t int, mask []bool) {
	for b := 0; b < c.batch; b++ {
		for j := 0; j < t; j++ {
			real := mask == nil || mask[b*t+j]
			c.mask[b][c.length+j] = real
			if real {
				c.real[b]++
			} else {
				c.padded = true
			}
		}
	}
	c.length += t
}

// Reset empties the cache so that it can hold new sequences, keeping its
// buffers.
func (c *KVCache) Reset() {
	c.length = 0
	clear(c.real)
	for _, m := range c.mask {
		clear(m)
	}
	c.padded = false
}

// Repeat returns a cache for n sequences that each continue this cache's
// single sequence, with room for extra more positions: a prompt computed
// once can then be continued n ways in one batch (scoring the choices of a
// question, sampling several completions).
func (c *KVCache) Repeat(n, extra int) (*KVCache, error) {
	if c.batch != 1 {
		return nil, fmt.Errorf("llama: Repeat needs a cache of one sequence, this one has %d", c.batch)
	}
	r := &KVCache{batch: n, capacity: c.length + extra, kvDim: c.kvDim, length: c.length,
		real: make([]int, n), mask: make([][]bool, n), padded: c.padded}
	rows := c.length * c.kvDim
	for l := range c.k {
		k := make([]float32, n*r.capacity*c.kvDim)
		v := make([]float32, n*r.capacity*c.kvDim)
		for b := 0; b < n; b++ {
			copy(k[b*r.capacity*c.kvDim:], c.k[l][:rows])
			copy(v[b*r.capacity*c.kvDim:], c.v[l][:rows])
		}
		r.k, r.v = append(r.k, k), append(r.v, v)
	}
	for b := 0; b < n; b++ {
		r.real[b] = c.real[0]
		r.mask[b] = make([]bool, r.capacity)
		copy(r.mask[b], c.mask[0][:c.length])
	}
	return r, nil
}
