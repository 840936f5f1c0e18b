package llama

import (
	"fmt"

	"slices"

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
	// Segments, when set, packs several examples into each sequence: one
	// id per token (Batch·T), and a new example starts wherever the id
	// differs from the previous token's. Each example is computed as if it
	// were alone: its positions restart at 0 (as Hugging Face's packing
	// with restarting position_ids), it attends to no other example's
	// tokens, and Loss predicts nothing across a boundary. Prefix keys
	// (prefix tuning) are seen by every example; virtual tokens, a KV
	// cache and classification do not combine with packing.
	Segments []int
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
	if in.Segments != nil {
		if len(in.Segments) != len(in.IDs) {
			return fmt.Errorf("llama: %d segment ids for %d tokens", len(in.Segments), len(in.IDs))
		}
		if in.Cache != nil {
			return fmt.Errorf("llama: packed segments cannot continue a KV cache")
		}
	}
	return nil
}

// segStarts gives each row of a packed input the index (within its
// sequence) of its segment's first token; nil without segments.
func segStarts(in Input) []int {
	if in.Segments == nil {
		return nil
	}
	st := make([]int, len(in.Segments))
	for i := range st {
		if t := i % in.T; t > 0 && in.Segments[i] == in.Segments[i-1] {
			st[i] = st[i-1]
		} else {
			st[i] = t
		}
	}
	return st
}

// Forward runs the decoder and returns the final normalised hidden states
// of the input's rows [Batch·T, hidden]. The pass says whether the
// computation is recorded for a backward (its tape), whether this is
// training, its seed and which adapter each sequence runs; a nil pass is
// inference with the model's default adapter. Virtual tokens that a hook
// prepends are computed but not returned (ForwardVirtual returns them).
func (m *Model) Forward(p *nn.Pass, in Input) (*autograd.Var, error) {
	h, p, virtual, _, err := m.forward(p, in)
	if err != nil || virtual == 0 {
		return h, err
	}
	rows := make([]int, 0, in.Batch*in.T)
	for b := 0; b < in.Batch; b++ {
		for t := 0; t < in.T; t++ {
			rows = append(rows, b*(virtual+in.T)+virtual+t)
		}
	}
	return p.Tape.GatherRows(h, rows), nil
}

// ForwardVirtual is Forward that also returns the rows of the virtual
// tokens a hook prepends: each sequence's virtual rows first, then its
// own, [Batch·(virtual+T), hidden].
func (m *Model) ForwardVirtual(p *nn.Pass, in Input) (h *autograd.Var, virtual int, err error) {
	h, _, virtual, _, err = m.forward(p, in)
	return h, virtual, err
}

// forward runs the decoder; it returns the hidden states of every row, the
// pass as begun, and the number of virtual rows it prepended to each
// sequence with their mask (batch × virtual; nil when all are real).
func (m *Model) forward(p *nn.Pass, in Input) (*autograd.Var, *nn.Pass, int, []bool, error) {
	cfg := &m.Config
	if err := in.check(cfg.VocabSize); err != nil {
		return nil, nil, 0, nil, err
	}
	p, err := p.Begin(in.Batch, m.Adapter)
	if err != nil {
		return nil, nil, 0, nil, err
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
	x := m.Embed.Lookup(p, ids)
	// Virtual tokens and prefixes start a sequence: with a cache, only its
	// first call adds them (the cache then holds them).
	virtual := 0
	var virtMask []bool
	var pre prefixes
	if in.Cache == nil || in.Cache.Len() == 0 {
		if x, in, virtual, err = m.prependVirtual(p, x, in); err != nil {
			return nil, nil, 0, nil, err
		}
		if virtual > 0 && in.Segments != nil {
			return nil, nil, 0, nil, fmt.Errorf("llama: packed segments with %d virtual tokens (prompt tuning): each example would need its own; train without packing", virtual)
		}
		if virtual > 0 && in.Mask != nil {
			for b := 0; b < in.Batch; b++ {
				virtMask = append(virtMask, in.Mask[b*in.T:b*in.T+virtual]...)
			}
		}
		if pre, err = m.prefixes(p); err != nil {
			return nil, nil, 0, nil, err
		}
		if in.Cache != nil && virtual+pre.n > 0 {
			// The capacity asked for stays free for the input's tokens.
			in.Cache.grow(virtual + pre.n)
			if pre.n > 0 {
				in.Cache.startWith(pre)
				pre = prefixes{} // read from the cache from here on
			}
		}
	}
	if in.Cache != nil && in.Cache.Len()+in.T > in.Cache.capacity {
		return nil, nil, 0, nil, fmt.Errorf("llama: %d cached + %d new tokens exceed the cache's %d positions", in.Cache.Len(), in.T, in.Cache.capacity)
	}
	pos, keyMask := m.positions(in, pre)
	shape := autograd.AttnShape{Batch: in.Batch, T: in.T, Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads, HeadDim: cfg.HeadSize(), SegStart: segStarts(in)}
	angles := m.rope.Angles(pos) // every layer rotates the same positions
	for _, b := range m.Layers {
		var pk, pv *autograd.Var
		if pre.n > 0 {
			pk, pv = pre.k[b.Index], pre.v[b.Index]
		}
		if m.checkpointed(b.Index) && p.Tape != nil && in.Cache == nil {
			x0 := x
			x = p.Tape.Checkpoint(func(tp *autograd.Tape) *autograd.Var {
				q := *p
				q.Tape = tp
				return m.block(&q, b, x0, angles, shape, keyMask, nil, pk, pv)
			})
			continue
		}
		mark := p.Tape.Mark()
		x = m.block(p, b, x, angles, shape, keyMask, in.Cache, pk, pv)
		// Past the block, the forward reads only its output: let go of
		// the values no backward reads either.
		p.Tape.DropUnsaved(mark, x)
	}
	if in.Cache != nil {
		in.Cache.commit(in.T, in.Mask)
	}
	return m.Norm.Forward(p, x), p, virtual, virtMask, nil
}

// prependVirtual places the prompt hooks' virtual tokens before every
// sequence: real for the sequences whose adapter owns them, padding for
// the others. It returns the embeddings, the input with T and the mask
// extended (IDs are left as they were: they have been looked up), and the
// number of virtual tokens.
func (m *Model) prependVirtual(p *nn.Pass, x *autograd.Var, in Input) (*autograd.Var, Input, int, error) {
	var virt *autograd.Var
	var owners []string // owner of each virtual token
	for _, h := range m.Embed.Hooks {
		if !p.Applies(h.Owner()) {
			continue
		}
		v := h.VirtualTokens(p, m.Embed)
		if v.Value.Cols() != m.Config.HiddenSize || len(v.Value.Shape) != 2 {
			return nil, in, 0, fmt.Errorf("llama: virtual tokens of %s have shape %v, want [n, %d]", h.Owner(), v.Value.Shape, m.Config.HiddenSize)
		}
		for range v.Value.Rows() {
			owners = append(owners, h.Owner())
		}
		if virt == nil {
			virt = v
		} else {
			virt = p.Tape.ConcatSeq(virt, v, 1, false)
		}
	}
	n := len(owners)
	if n == 0 {
		return x, in, 0, nil
	}
	T := n + in.T
	mask := make([]bool, in.Batch*T)
	padded := false
	for b := 0; b < in.Batch; b++ {
		for j, o := range owners {
			mask[b*T+j] = p.Uses(o, b)
			padded = padded || !mask[b*T+j]
		}
		for t := 0; t < in.T; t++ {
			mask[b*T+n+t] = in.Mask == nil || in.Mask[b*in.T+t]
		}
	}
	if in.Mask == nil && !padded {
		mask = nil
	}
	in.T, in.Mask = T, mask
	return p.Tape.ConcatSeq(virt, x, in.Batch, true), in, n, nil
}

// Prepended is how many positions the hooks that a pass runs (nil: the
// default adapter) place before a sequence's own tokens: virtual tokens
// and key/value prefixes, which the real tokens' positions follow. A
// sequence of T tokens then needs Prepended + T positions of the context.
// It asks the hooks for their rows, as a forward would, whatever the
// method; with several adapters in the pass it counts every one's.
func (m *Model) Prepended(p *nn.Pass) (int, error) {
	batch := 1
	if p != nil && len(p.Adapters) > 1 {
		batch = len(p.Adapters)
	}
	p, err := p.Begin(batch, m.Adapter)
	if err != nil {
		return 0, err
	}
	p.Tape = nil
	n := 0
	for _, h := range m.Embed.Hooks {
		if p.Applies(h.Owner()) {
			n += h.VirtualTokens(p, m.Embed).Value.Rows()
		}
	}
	pre, err := m.prefixes(p)
	return n + pre.n, err
}

// prefixes are every layer's key/value prefixes ([n, kvDim] each) and, per
// sequence, which of the n rows it sees (batch × n, sequence-major).
type prefixes struct {
	n    int
	k, v []*autograd.Var
	seen []bool
}

// prefixes gathers the attention sites' prefix hooks. Every layer must
// give the same rows: the real tokens' positions start after them.
func (m *Model) prefixes(p *nn.Pass) (prefixes, error) {
	var pre prefixes
	kvDim := m.Config.KVDim()
	for _, b := range m.Layers {
		var k, v *autograd.Var
		var owners []string
		for _, h := range b.Attn.Hooks {
			if !p.Applies(h.Owner()) {
				continue
			}
			hk, hv := h.PrefixKV(p, b.Attn)
			if len(hk.Value.Shape) != 2 || hk.Value.Cols() != kvDim || !tensor.SameShape(hk.Value.Shape, hv.Value.Shape) {
				return pre, fmt.Errorf("llama: %s: prefix of %s has keys %v and values %v, want [n, %d] each", b.Attn.Name, h.Owner(), hk.Value.Shape, hv.Value.Shape, kvDim)
			}
			for range hk.Value.Rows() {
				owners = append(owners, h.Owner())
			}
			if k == nil {
				k, v = hk, hv
			} else {
				k, v = p.Tape.ConcatSeq(k, hk, 1, false), p.Tape.ConcatSeq(v, hv, 1, false)
			}
		}
		seen := make([]bool, p.Batch()*len(owners))
		for s := 0; s < p.Batch(); s++ {
			for j, o := range owners {
				seen[s*len(owners)+j] = p.Uses(o, s)
			}
		}
		if b.Index > 0 && (len(owners) != pre.n || !slices.Equal(seen, pre.seen)) {
			return pre, fmt.Errorf("llama: %s has %d prefix rows, layer 0 has %d: prefixes must cover every layer alike", b.Attn.Name, len(owners), pre.n)
		}
		pre.n, pre.seen = len(owners), seen
		pre.k, pre.v = append(pre.k, k), append(pre.v, v)
	}
	return pre, nil
}

// positions gives each row its RoPE position (cached real tokens, prefix
// rows it sees and real tokens before it in its packed segment) and the key
// mask over prefix, cached and new keys (nil when every key is visible).
func (m *Model) positions(in Input, pre prefixes) ([]int, []bool) {
	pos := make([]int, in.Batch*in.T)
	past := 0
	if in.Cache != nil {
		past = in.Cache.Len()
	}
	padded := in.Mask != nil || (in.Cache != nil && in.Cache.padded) || slices.Contains(pre.seen, false)
	var keyMask []bool
	if padded {
		keyMask = make([]bool, 0, in.Batch*(pre.n+past+in.T))
	}
	for b := 0; b < in.Batch; b++ {
		n := 0
		seen := pre.seen[b*pre.n : (b+1)*pre.n]
		for _, s := range seen {
			if s {
				n++
			}
		}
		if padded {
			keyMask = append(keyMask, seen...)
		}
		if in.Cache != nil {
			n += in.Cache.real[b]
			if padded {
				keyMask = append(keyMask, in.Cache.mask[b][:past]...)
			}
		}
		start := n
		for t := 0; t < in.T; t++ {
			i := b*in.T + t
			if in.Segments != nil && t > 0 && in.Segments[i] != in.Segments[i-1] {
				n = start // a packed example starts again after the prefix
			}
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

func (m *Model) block(p *nn.Pass, b *Block, x *autograd.Var, angles *autograd.RoPEAngles, shape autograd.AttnShape, keyMask []bool, cache *KVCache, pk, pv *autograd.Var) *autograd.Var {
	tp := p.Tape
	h := b.InputNorm.Forward(p, x)
	qkv := linears(p, h, b.Q, b.K, b.V)
	q := tp.RoPEAt(qkv[0], shape.Heads, angles)
	k := tp.RoPEAt(qkv[1], shape.KVHeads, angles)
	v := qkv[2]
	if cache != nil {
		pk, pv = cache.prefix(b.Index)
		shape.PrefixPerBatch, shape.PrefixLen = true, cache.length
		cache.append(b.Index, k.Value, v.Value)
	}
	attn := b.O.Forward(p, tp.Attention(q, k, v, pk, pv, shape, keyMask))
	x = tp.Add(x, b.AttnOut.Forward(p, x, h, attn))
	u := b.PostAttentionNorm.Forward(p, x)
	gu := linears(p, u, b.Gate, b.Up)
	ffn := b.Down.Forward(p, tp.SwiGLU(gu[0], gu[1]))
	return tp.Add(x, b.MLPOut.Forward(p, x, u, ffn))
}

// linears applies several layers to the same input: as one autograd
// Linears (whose few-row products share one split over the threads) when
// every layer is a plain weight in this pass, else layer by layer.
func linears(p *nn.Pass, x *autograd.Var, ls ...*nn.Linear) []*autograd.Var {
	ws := make([]*autograd.Var, len(ls))
	for i, l := range ls {
		w, ok := l.Plain(p)
		if !ok {
			out := make([]*autograd.Var, len(ls))
			for j, l := range ls {
				out[j] = l.Forward(p, x)
			}
			return out
		}
		ws[i] = w
	}
	return p.Tape.Linears(x, ws...)
}

// Logits returns the LM head's output for the given hidden rows: the
// pass's sequences' rows, sequence by sequence (as Forward returns them),
// or any rows when the pass runs one adapter.
func (m *Model) Logits(p *nn.Pass, hidden *autograd.Var) *autograd.Var {
	batch := hidden.Value.Rows()
	if p != nil && len(p.Adapters) > 1 {
		batch = len(p.Adapters)
	}
	p, err := p.Begin(batch, m.Adapter)
	if err != nil {
		panic(err) // a caller's bug: the pass was built for another batch
	}
	return m.LMHead.Forward(p, hidden)
}

// Loss is the mean next-token cross-entropy of a batch. labels are aligned
// with the ids, as Hugging Face's are: row t is trained to predict
// labels[t+1], and autograd.IgnoreIndex (-100) marks tokens not to predict;
// padding rows predict nothing. Virtual tokens get label -100, so the last
// one predicts the sequence's first label, as in PEFT. The LM head and the
// softmax are fused so the rows × vocab logits are never held at once; a
// head with hooks or a bias is computed in full.
func (m *Model) Loss(p *nn.Pass, in Input, labels []int) (*autograd.Var, error) {
	if len(labels) != len(in.IDs) {
		return nil, fmt.Errorf("llama: %d labels for %d tokens", len(labels), len(in.IDs))
	}
	h, p, virtual, virtMask, err := m.forward(p, in)
	if err != nil {
		return nil, err
	}
	T := virtual + in.T
	targets := make([]int, in.Batch*T)
	for b := 0; b < in.Batch; b++ {
		for t := 0; t < T; t++ {
			i, next := b*T+t, t+1-virtual // next: the input position row t predicts
			targets[i] = autograd.IgnoreIndex
			var real bool
			if t < virtual {
				real = virtMask == nil || virtMask[b*virtual+t]
			} else {
				real = in.Mask == nil || in.Mask[b*in.T+t-virtual]
			}
			if real && next >= 0 && next < in.T && (in.Segments == nil || t < virtual || in.Segments[b*in.T+next] == in.Segments[b*in.T+next-1]) {
				targets[i] = labels[b*in.T+next] // never across packed examples
			}
		}
	}
	if w, ok := m.LMHead.Plain(p); ok {
		return p.Tape.LMHeadCrossEntropy(h, w, targets, 64), nil
	}
	return p.Tape.CrossEntropy(m.LMHead.Forward(p, h), targets), nil
}

// LMLabels are the labels of plain language modelling: each real token is
// its own label, padding IgnoreIndex.
func LMLabels(in Input) []int {
	labels := make([]int, len(in.IDs))
	for i, id := range in.IDs {
		labels[i] = id
		if in.Mask != nil && !in.Mask[i] {
			labels[i] = autograd.IgnoreIndex
		}
	}
	return labels
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

// grow makes room for extra more positions in an empty cache.
func (c *KVCache) grow(extra int) {
	c.capacity += extra
	for l := range c.k {
		c.k[l] = make([]float32, c.batch*c.capacity*c.kvDim)
		c.v[l] = make([]float32, c.batch*c.capacity*c.kvDim)
	}
	for b := range c.mask {
		c.mask[b] = make([]bool, c.capacity)
	}
}

// startWith stores every layer's prefix as the first positions of an empty
// cache: each sequence the rows it sees, the others as padding.
func (c *KVCache) startWith(pre prefixes) {
	for l := range c.k {
		c.append(l, repeatRows(pre.k[l].Value, c.batch), repeatRows(pre.v[l].Value, c.batch))
	}
	c.commit(pre.n, pre.seen)
}

// repeatRows stacks n copies of t's rows.
func repeatRows(t *tensor.Tensor, n int) *tensor.Tensor {
	src := t.F32()
	out := tensor.New(n*t.Rows(), t.Cols())
	for i := 0; i < n; i++ {
		copy(out.Data[i*len(src):], src)
	}
	return out
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
