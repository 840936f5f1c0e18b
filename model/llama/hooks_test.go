package llama

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// prefixHook gives every layer fixed random keys and values.
type prefixHook struct {
	nn.OwnedBy
	k, v []*autograd.Var
}

func (h *prefixHook) PrefixKV(_ *nn.Pass, a *nn.Attention) (k, v *autograd.Var) {
	return h.k[a.Layer], h.v[a.Layer]
}

// promptHook gives fixed random virtual tokens.
type promptHook struct {
	nn.OwnedBy
	e *autograd.Var
}

func (h *promptHook) VirtualTokens(*nn.Pass, *nn.Embedding) *autograd.Var { return h.e }

func addPrefix(m *Model, owner string, n int, seed uint64) {
	g := tensor.NewRNG(seed)
	h := &prefixHook{OwnedBy: nn.OwnedBy{Adapter: owner}}
	for range m.Layers {
		h.k = append(h.k, autograd.Const(tensor.New(n, m.Config.KVDim()).Normal(g, 0, 1)))
		h.v = append(h.v, autograd.Const(tensor.New(n, m.Config.KVDim()).Normal(g, 0, 1)))
	}
	for _, b := range m.Layers {
		b.Attn.Hooks = append(b.Attn.Hooks, h)
	}
}

func addPrompt(m *Model, owner string, n int, seed uint64) {
	g := tensor.NewRNG(seed)
	m.Embed.Hooks = append(m.Embed.Hooks, &promptHook{OwnedBy: nn.OwnedBy{Adapter: owner},
		e: autograd.Const(tensor.New(n, m.Config.HiddenSize).Normal(g, 0, 1))})
}

// decodeLogits runs prompts (left-padded to a common length) through one
// cache, then the continuations a token per step, and returns each
// sequence's logits for every continuation token it predicts: the prompt's
// last row, then each step's.
func decodeLogits(t *testing.T, m *Model, pass *nn.Pass, prompts, steps [][]int) [][][]float32 {
	t.Helper()
	T := 0
	for _, p := range prompts {
		T = max(T, len(p))
	}
	var ids []int
	var mask []bool
	for _, p := range prompts {
		for i := 0; i < T; i++ {
			pad := i < T-len(p)
			mask = append(mask, !pad)
			id := 0
			if !pad {
				id = p[i-(T-len(p))]
			}
			ids = append(ids, id)
		}
	}
	cache := m.NewKVCache(len(prompts), T+len(steps[0]))
	h, err := m.Forward(pass, Input{IDs: ids, Batch: len(prompts), T: T, Mask: mask, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	out := make([][][]float32, len(prompts))
	lg := m.Logits(pass, h).Value
	for b := range prompts {
		out[b] = append(out[b], lg.Row(b*T+T-1))
	}
	for s := range steps[0] {
		next := make([]int, len(prompts))
		for b := range prompts {
			next[b] = steps[b][s]
		}
		if h, err = m.Forward(pass, Input{IDs: next, Batch: len(prompts), T: 1, Cache: cache}); err != nil {
			t.Fatal(err)
		}
		lg = m.Logits(pass, h).Value
		for b := range prompts {
			out[b] = append(out[b], lg.Row(b))
		}
	}
	return out
}

// Key/value prefixes and virtual tokens give the same logits with and
// without the KV cache, in a padded batch as alone, with grouped-query
// heads (smallConfig: 4 query heads over 2 key/value heads), and in a batch
// that mixes sequences with and without the adapter that owns them.
func TestPrefixAndVirtualTokensWithCacheAndPadding(t *testing.T) {
	prompts := [][]int{{1, 5, 9, 11}, {1, 8}, {1, 17, 21}}
	steps := [][]int{{4, 6, 7}, {30, 31, 32}, {12, 13, 14}}
	for _, kind := range []string{"prefix", "virtual", "both"} {
		t.Run(kind, func(t *testing.T) {
			m, err := NewRandom(smallConfig(), 11)
			if err != nil {
				t.Fatal(err)
			}
			plain := func(seq []int) [][]float32 { return logitsOf(t, m, seq) }
			var base [][][]float32
			for b, p := range prompts {
				base = append(base, plain(append(append([]int(nil), p...), steps[b]...)))
			}
			if kind != "virtual" {
				addPrefix(m, "a", 3, 5)
			}
			if kind != "prefix" {
				addPrompt(m, "a", 2, 6)
			}
			// Alone, without a cache: the reference.
			alone := make([][][]float32, len(prompts))
			for b, p := range prompts {
				seq := append(append([]int(nil), p...), steps[b]...)
				h, err := m.Forward(&nn.Pass{Adapters: []string{"a"}}, Input{IDs: seq, Batch: 1, T: len(seq)})
				if err != nil {
					t.Fatal(err)
				}
				lg := m.Logits(nil, h).Value
				for s := 0; s <= len(steps[b]); s++ {
					alone[b] = append(alone[b], lg.Row(len(p)-1+s))
				}
				if d := maxDiff(alone[b], base[b][len(p)-1:]); d < 1e-3 {
					t.Fatalf("sequence %d: the hooks change the logits by %g only; the test would prove nothing", b, d)
				}
			}
			got := decodeLogits(t, m, &nn.Pass{Adapters: []string{"a"}}, prompts, steps)
			for b := range prompts {
				if d := maxDiff(got[b], alone[b]); d > 1e-5 {
					t.Errorf("sequence %d: padded batch through the cache differs from alone by %g", b, d)
				}
			}
			// One batch, sequence 1 without the adapter: it decodes as the
			// base model does, the others as before.
			mixed := decodeLogits(t, m, &nn.Pass{Adapters: []string{"a", "", "a"}}, prompts, steps)
			for b := range prompts {
				want := alone[b]
				if b == 1 {
					want = base[b][len(prompts[b])-1:]
				}
				if d := maxDiff(mixed[b], want); d > 1e-5 {
					t.Errorf("mixed batch, sequence %d differs by %g", b, d)
				}
			}
			// A padded batch without a cache, padding on the right.
			T := 7
			in := Input{Batch: len(prompts), T: T, IDs: make([]int, len(prompts)*T), Mask: make([]bool, len(prompts)*T)}
			for b, p := range prompts {
				seq := append(append([]int(nil), p...), steps[b]...)
				copy(in.IDs[b*T:], seq)
				for i := range seq {
					in.Mask[b*T+i] = true
				}
			}
			h, err := m.Forward(&nn.Pass{Adapters: []string{"a"}}, in)
			if err != nil {
				t.Fatal(err)
			}
			lg := m.Logits(nil, h).Value
			for b, p := range prompts {
				for s := range alone[b] {
					if d := maxDiff([][]float32{lg.Row(b*T + len(p) - 1 + s)}, [][]float32{alone[b][s]}); d > 1e-5 {
						t.Errorf("right-padded batch, sequence %d row %d differs by %g", b, s, d)
					}
				}
			}
		})
	}
}

// Virtual tokens take positions 0..n−1 and the sequence's own tokens n..,
// as PEFT passes them: the forward with a prompt hook equals the plain
// forward of the embeddings [virtual; tokens].
func TestVirtualTokensArePrependedRows(t *testing.T) {
	m, err := NewRandom(smallConfig(), 3)
	if err != nil {
		t.Fatal(err)
	}
	seq := []int{1, 7, 3, 9}
	// Virtual tokens that are rows of the embedding table: the result must
	// then be the plain forward of those ids followed by seq.
	virt := []int{12, 30}
	e := tensor.New(len(virt), m.Config.HiddenSize)
	for i, id := range virt {
		copy(e.Row(i), m.Embed.Weight.Value.Row(id))
	}
	want, _, err := m.ForwardVirtual(nil, Input{IDs: append(append([]int(nil), virt...), seq...), Batch: 1, T: len(virt) + len(seq)})
	if err != nil {
		t.Fatal(err)
	}
	m.Embed.Hooks = append(m.Embed.Hooks, &promptHook{e: autograd.Const(e)})
	got, n, err := m.ForwardVirtual(nil, Input{IDs: seq, Batch: 1, T: len(seq)})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(virt) {
		t.Fatalf("ForwardVirtual reports %d virtual rows, want %d", n, len(virt))
	}
	for i := range want.Value.Data {
		if d := want.Value.Data[i] - got.Value.Data[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("element %d: %v with the hook, %v with the ids", i, got.Value.Data[i], want.Value.Data[i])
		}
	}
	// The loss extends the labels with -100: the last virtual row predicts
	// the first token, so 4 tokens give 4 terms.
	p := &nn.Pass{}
	loss, err := m.Loss(p, Input{IDs: seq, Batch: 1, T: len(seq)}, seq)
	if err != nil {
		t.Fatal(err)
	}
	lg := m.Logits(nil, got).Value
	var sum float64
	for t := 0; t < len(seq); t++ {
		sum += logSumExp(lg.Row(n-1+t)) - float64(lg.Row(n - 1 + t)[seq[t]])
	}
	if d := float64(loss.Value.Data[0]) - sum/float64(len(seq)); d > 1e-5 || d < -1e-5 {
		t.Errorf("loss %v, want the mean over %d terms %v", loss.Value.Data[0], len(seq), sum/float64(len(seq)))
	}
}

func logSumExp(xs []float32) float64 {
	m := float64(xs[0])
	for _, x := range xs {
		m = max(m, float64(x))
	}
	var s float64
	for _, x := range xs {
		s += math.Exp(float64(x) - m)
	}
	return m + math.Log(s)
}

// Prefixes that do not cover every layer alike are refused by name.
func TestPrefixOnSomeLayersIsAnError(t *testing.T) {
	m, err := NewRandom(smallConfig(), 3)
	if err != nil {
		t.Fatal(err)
	}
	addPrefix(m, "", 2, 1)
	m.Layers[1].Attn.Hooks = nil
	_, err = m.Forward(nil, Input{IDs: []int{1, 2}, Batch: 1, T: 2})
	if err == nil || err.Error() != fmt.Sprintf("llama: %s has 0 prefix rows, layer 0 has 2: prefixes must cover every layer alike", m.Layers[1].Attn.Name) {
		t.Errorf("err = %v", err)
	}
}

// In a batch that mixes sequences with and without a prompt adapter, the
// loss is the same sum of terms as each sequence alone: the virtual rows
// of the sequence without it are padding and predict nothing.
func TestLossWithVirtualTokensInAMixedBatch(t *testing.T) {
	m, err := NewRandom(smallConfig(), 4)
	if err != nil {
		t.Fatal(err)
	}
	addPrompt(m, "a", 3, 8)
	seqs := [][]int{{1, 5, 9, 11}, {1, 8, 3, 2}}
	var sum float64
	terms := []int{4, 3} // with the prompt the last virtual row predicts the first token
	for b, s := range seqs {
		l, err := m.Loss(&nn.Pass{Adapters: []string{[]string{"a", ""}[b]}}, Input{IDs: s, Batch: 1, T: 4}, s)
		if err != nil {
			t.Fatal(err)
		}
		sum += float64(l.Value.Data[0]) * float64(terms[b])
	}
	ids := append(append([]int(nil), seqs[0]...), seqs[1]...)
	l, err := m.Loss(&nn.Pass{Adapters: []string{"a", ""}}, Input{IDs: ids, Batch: 2, T: 4}, ids)
	if err != nil {
		t.Fatal(err)
	}
	if want := sum / 7; math.Abs(float64(l.Value.Data[0])-want) > 1e-5 {
		t.Errorf("mixed batch loss %v, want the mean of the sequences' own terms %v", l.Value.Data[0], want)
	}
}
