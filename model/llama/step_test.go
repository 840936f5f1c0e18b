package llama

import (
	"context"
	"slices"
	"testing"

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
