package llama

import (
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/gopeft/gopeft/tensor"
)

// NumParams is how many weights the config describes (the LM head counted
// once when tied), computed with overflow checks: ok is false when the
// count does not fit in 63 bits, which no file can hold.
func (c *Config) NumParams() (n uint64, ok bool) {
	overflow := false
	mul := func(a, b uint64) uint64 {
		hi, lo := bits.Mul64(a, b)
		overflow = overflow || hi != 0
		return lo
	}
	add := func(a, b uint64) uint64 {
		s, carry := bits.Add64(a, b, 0)
		overflow = overflow || carry != 0
		return s
	}
	u := func(x int) uint64 { return uint64(max(x, 0)) }
	d, h, kv, q := u(c.HiddenSize), u(c.IntermediateSize), u(c.NumKeyValueHeads), u(c.NumAttentionHeads)
	hd := u(c.HeadSize())
	kv, q = mul(kv, hd), mul(q, hd)
	heads := uint64(1)
	if !c.TieWordEmbeddings {
		heads = 2
	}
	n = add(mul(mul(u(c.VocabSize), d), heads), d)
	// Per layer: q, k, v, o; gate, up, down; two norms.
	layer := add(add(mul(q, d), mul(mul(kv, d), 2)), mul(d, q))
	layer = add(add(layer, mul(mul(h, d), 3)), mul(d, 2))
	if c.AttentionBias {
		layer = add(layer, add(add(q, mul(kv, 2)), d))
	}
	if c.MLPBias {
		layer = add(layer, add(mul(h, 2), d))
	}
	n = add(n, mul(layer, u(c.NumHiddenLayers)))
	return n, !overflow && n <= 1<<63-1
}

// checkSize compares the weights the config describes with those given,
// with overflow checks, before anything is allocated per layer: a config.json claiming
// num_hidden_layers 1000000000 beside a 1 MB file is refused here rather
// than growing a billion-entry shape table.
func checkSize(cfg *Config, tensors map[string]*tensor.Tensor) error {
	var have uint64
	for _, t := range tensors {
		have += uint64(t.Numel())
	}
	need, ok := cfg.NumParams()
	if !ok {
		return fmt.Errorf("the config describes an impossibly large model (hidden_size %d, intermediate_size %d, num_hidden_layers %d, vocab_size %d)",
			cfg.HiddenSize, cfg.IntermediateSize, cfg.NumHiddenLayers, cfg.VocabSize)
	}
	// With no more layers than tensors, the shape table is small and New's
	// per-tensor checks name what is missing; beyond that, say it here.
	if need > have && cfg.NumHiddenLayers > len(tensors) {
		return fmt.Errorf("the config (hidden_size %d, intermediate_size %d, num_hidden_layers %d, vocab_size %d) needs %d weights, the file holds %d",
			cfg.HiddenSize, cfg.IntermediateSize, cfg.NumHiddenLayers, cfg.VocabSize, need, have)
	}
	return nil
}

// ErrNonFinite is returned (wrapped) by CheckFinite.
var ErrNonFinite = errors.New("non-finite weight")

// CheckFinite returns an error naming the first weight, in state-dict
// order, that holds a NaN or an infinity, and where. Such a model computes
// NaN logits, which generation would turn into a stream of token 0; a
// check of every value is cheap next to reading it.
func (m *Model) CheckFinite() error {
	for _, p := range m.Params() {
		if i := FirstNonFinite(p.Var.Value); i >= 0 {
			return fmt.Errorf("%w: %s holds %v at index %d", ErrNonFinite, p.Name, valueAt(p.Var.Value, i), i)
		}
	}
	return nil
}

// FirstNonFinite is the index of t's first NaN or infinite value, or -1.
func FirstNonFinite(t *tensor.Tensor) int {
	for i, v := range t.Data {
		if v-v != 0 { // NaN - NaN and Inf - Inf are NaN
			return i
		}
	}
	for i, h := range t.Half {
		if h&0x7f80 == 0x7f80 { // bfloat16 exponent all ones: Inf or NaN
			return i
		}
	}
	return -1
}

func valueAt(t *tensor.Tensor, i int) float32 {
	if t.Data != nil {
		return t.Data[i]
	}
	return math.Float32frombits(uint32(t.Half[i]) << 16)
}
