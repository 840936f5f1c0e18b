package llama

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// Sequences prefilled alone and decoded together, joining the batch at
// different steps, with prefix, virtual-token and no adapters mixed, give
// the tokens Generate gives each alone, and logits within float rounding.
func TestDecodeStepMatchesGenerate(t *testing.T) {
	m, err := NewRandom(smallConfig(), 11)
	if err != nil {
		t.Fatal(err)
	}
	addPrefix(m, "a", 3, 5)
	addPrompt(m, "b", 2, 6)
	type seq struct {
		adapter string
		prompt  []int
		join    int // step at which it is prefilled
		n       int
	}
	seqs := []seq{{"a", []int{1, 5, 9, 11}, 0, 6}, {"", []int{1, 8}, 0, 5}, {"b", []int{1, 17, 21}, 2, 6}, {"a", []int{1, 3}, 3, 4}, {"", []int{1, 30, 31, 32, 33}, 3, 3}}
	want := make([][]int, len(seqs))
	for i, s := range seqs {
		m.Adapter = s.adapter
		if want[i], err = m.Generate(context.Background(), s.prompt, GenerateOptions{MaxNewTokens: s.n}, nil); err != nil {
			t.Fatal(err)
		}
	}
	m.Adapter = ""
	got := make([][]int, len(seqs))
	caches := make([]*KVCache, len(seqs))
	done := make([]bool, len(seqs))
	for step := 0; ; step++ {
		var ids []int
		var cs []*KVCache
		var names []string
		var who []int
		for i, s := range seqs {
			switch {
			case s.join == step:
				caches[i] = m.NewKVCache(1, len(s.prompt)+s.n)
				lg, err := m.Prefill(&nn.Pass{Adapters: []string{s.adapter}}, s.prompt, caches[i])
				if err != nil {
					t.Fatal(err)
				}
				got[i] = append(got[i], tensor.Argmax(lg))
			case s.join < step && !done[i]:
				ids, cs, names, who = append(ids, got[i][len(got[i])-1]), append(cs, caches[i]), append(names, s.adapter), append(who, i)
			}
		}
		if len(ids) == 0 && step > 3 {
			break
		}
		if len(ids) == 0 {
			continue
		}
		lg, err := m.DecodeStep(&nn.Pass{Adapters: names}, ids, cs)
		if err != nil {
			t.Fatal(err)
		}
		for r, i := range who {
			got[i] = append(got[i], tensor.Argmax(lg.Row(r)))
		}
		for _, i := range who {
			if len(got[i]) >= seqs[i].n {
				done[i] = true
			}
		}
	}
	for i := range seqs {
		// Generate stops at EOS; random weights rarely pick it, but cut
		// both at the first one.
		g := got[i]
		if j := slices.Index(g, m.Config.EOSTokenID); j >= 0 {
			g = g[:j]
		}
		if !slices.Equal(g, want[i]) {
			t.Errorf("sequence %d (adapter %q): batched %v, alone %v", i, seqs[i].adapter, g, want[i])
		}
	}
}

// loraHook is a LoRA-like output delta, y + s·(x·Aᵀ)·Bᵀ, for tests.
type loraHook struct {
	nn.OwnedBy
	a, b *autograd.Var
}

func (h *loraHook) Apply(p *nn.Pass, _ *nn.Linear, x, y *autograd.Var) *autograd.Var {
	return p.Tape.AddLinear(y, p.Tape.Linear(x, h.a), h.b, 0.5)
}

func addLoRA(m *Model, owner string, r int, seed uint64) {
	g := tensor.NewRNG(seed)
	for _, b := range m.Layers {
		for _, l := range []*nn.Linear{b.Q, b.V, b.Down} {
			out, in := l.Weight.Value.Shape[0], l.Weight.Value.Shape[1]
			l.Deltas = append(l.Deltas, &loraHook{OwnedBy: nn.OwnedBy{Adapter: owner},
				a: autograd.Const(tensor.New(r, in).Normal(g, 0, 0.1)), b: autograd.Const(tensor.New(out, r).Normal(g, 0, 0.1))})
		}
	}
}

// A sequence's logits at every step are, bit for bit, those of Generate's
// own calls for it alone (Prefill, then one token at a time through
// Forward), whatever shares its decode steps: here 70 sequences (more than
// kernels.RowInvariantRows, so the step runs in chunks) over two LoRA-like
// adapters, a prefix adapter and the base, with sizes that exercise the
// kernels' vector bodies and tails.
func TestDecodeStepLogitsBitwise(t *testing.T) {
	cfg := Config{HiddenSize: 72, IntermediateSize: 200, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 300, MaxPositionEmbeddings: 64, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2,
		RoPE: autograd.RoPEHalf}
	m, err := NewRandom(cfg, 5)
	if err != nil {
		t.Fatal(err)
	}
	addLoRA(m, "x", 8, 1)
	addLoRA(m, "y", 4, 2)
	addPrefix(m, "a", 3, 3)
	adapters := []string{"x", "", "y", "a", "x"}
	const B, steps = 70, 4
	g := tensor.NewRNG(9)
	prompts := make([][]int, B)
	names := make([]string, B)
	for s := range prompts {
		prompts[s] = []int{1}
		for range 1 + s%5 {
			prompts[s] = append(prompts[s], 3+int(g.Uint64()%uint64(cfg.VocabSize-3)))
		}
		names[s] = adapters[s%len(adapters)]
	}
	// Batched: prefill each, then decode all together, feeding each its
	// greedy token.
	caches := make([]*KVCache, B)
	batched := make([][][]float32, B)
	ids := make([]int, B)
	for s := range prompts {
		caches[s] = m.NewKVCache(1, len(prompts[s])+steps+1)
		lg, err := m.Prefill(&nn.Pass{Adapters: []string{names[s]}}, prompts[s], caches[s])
		if err != nil {
			t.Fatal(err)
		}
		ids[s] = tensor.Argmax(lg)
	}
	for range steps {
		lg, err := m.DecodeStep(&nn.Pass{Adapters: names}, ids, caches)
		if err != nil {
			t.Fatal(err)
		}
		for s := range ids {
			batched[s] = append(batched[s], slices.Clone(lg.Row(s)))
			ids[s] = tensor.Argmax(lg.Row(s))
		}
	}
	// Alone: Generate's calls.
	for s := range prompts {
		m.Adapter = names[s]
		cache := m.NewKVCache(1, len(prompts[s])+steps+1)
		lg, err := m.lastLogits(Input{IDs: prompts[s], Batch: 1, T: len(prompts[s]), Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		for i := range steps {
			lg, err = m.lastLogits(Input{IDs: []int{tensor.Argmax(lg)}, Batch: 1, T: 1, Cache: cache})
			if err != nil {
				t.Fatal(err)
			}
			for j, v := range lg {
				if math.Float32bits(v) != math.Float32bits(batched[s][i][j]) {
					t.Fatalf("sequence %d (adapter %q), step %d, logit %d: %v alone, %v in the batch", s, names[s], i, j, v, batched[s][i][j])
				}
			}
		}
	}
	m.Adapter = ""
}
