package lora

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// A decode step over a batch mixing five LoRA adapters (different ranks
// and targets, two sequences sharing one adapter) and the base gives the
// same logits, bit for bit, with the layers' products grouped by adapter
// (nn.GroupDelta, the SGMV path) as with each adapter routed alone, and as
// each sequence decoded alone.
func TestGroupedMatchesRouted(t *testing.T) {
	cfg := llama.Config{HiddenSize: 48, IntermediateSize: 120, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 100, MaxPositionEmbeddings: 32, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2, RoPE: autograd.RoPEHalf}
	m, err := llama.NewRandom(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	pm := peft.Wrap(m)
	g := tensor.NewRNG(4)
	for i, spec := range []string{`["q_proj", "v_proj"]`, `"all-linear"`, `["down_proj"]`, `["q_proj", "o_proj", "up_proj"]`, `"all-linear"`} {
		c := NewConfig()
		if err := peft.DecodeConfig([]byte(fmt.Sprintf(`{"target_modules": %s, "r": %d, "lora_alpha": 8}`, spec, 2+2*i)), c, "test", false); err != nil {
			t.Fatal(err)
		}
		a, err := pm.AddAdapter(fmt.Sprintf("a%d", i), New(c))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range a.Params {
			p.Var.Value.Normal(g, 0, 0.2)
		}
	}
	names := []string{"a0", "", "a1", "a2", "a0", "a3", "a4"}
	prompts := make([][]int, len(names))
	for s := range prompts {
		prompts[s] = []int{1, 5 + s, 9 + 2*s}
	}
	decode := func(grouped bool, alone bool) [][]float32 {
		old := nn.GroupDeltas
		nn.GroupDeltas = grouped
		defer func() { nn.GroupDeltas = old }()
		var caches []*llama.KVCache
		var ids []int
		for s, p := range prompts {
			c := m.NewKVCache(1, 8)
			lg, err := m.Prefill(&nn.Pass{Adapters: []string{names[s]}}, p, c)
			if err != nil {
				t.Fatal(err)
			}
			caches, ids = append(caches, c), append(ids, tensor.Argmax(lg))
		}
		var out [][]float32
		if alone {
			for s := range ids {
				lg, err := m.DecodeStep(&nn.Pass{Adapters: []string{names[s]}}, ids[s:s+1], caches[s:s+1])
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, lg.Row(0))
			}
			return out
		}
		lg, err := m.DecodeStep(&nn.Pass{Adapters: names}, ids, caches)
		if err != nil {
			t.Fatal(err)
		}
		for s := range ids {
			out = append(out, lg.Row(s))
		}
		return out
	}
	grouped, routed, alone := decode(true, false), decode(false, false), decode(false, true)
	for s := range grouped {
		for j := range grouped[s] {
			a, b, c := grouped[s][j], routed[s][j], alone[s][j]
			if math.Float32bits(a) != math.Float32bits(b) || math.Float32bits(a) != math.Float32bits(c) {
				t.Fatalf("sequence %d (%q), logit %d: grouped %v, routed %v, alone %v", s, names[s], j, a, b, c)
			}
		}
	}
	// The adapters matter: otherwise the test proves nothing.
	if math.Float32bits(alone[0][0]) == math.Float32bits(alone[1][0]) && alone[0][1] == alone[1][1] {
		t.Error("adapter a0 does not change the logits")
	}
}

// BenchmarkGroupedDecode: decode steps of 32 sequences over 32 distinct
// LoRA adapters (rank 8 on q, k, v, o) at the stories15M shape, with the
// products grouped by adapter and routed adapter by adapter, alternating.
func BenchmarkGroupedDecode(b *testing.B) {
	m, err := llama.NewPreset("stories15M", 1)
	if err != nil {
		b.Fatal(err)
	}
	pm := peft.Wrap(m)
	const B, steps = 32, 8
	names := make([]string, B)
	g := tensor.NewRNG(1)
	for i := range names {
		c := NewConfig()
		if err := peft.DecodeConfig([]byte(`{"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "r": 8, "lora_alpha": 16}`), c, "bench", false); err != nil {
			b.Fatal(err)
		}
		names[i] = fmt.Sprintf("a%d", i)
		a, err := pm.AddAdapter(names[i], New(c))
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range a.Params {
			p.Var.Value.Normal(g, 0, 0.02)
		}
	}
	for rep := range 3 {
		for _, grouped := range []bool{true, false} {
			b.Run(fmt.Sprintf("grouped=%v/rep=%d", grouped, rep+1), func(b *testing.B) {
				old := nn.GroupDeltas
				nn.GroupDeltas = grouped
				defer func() { nn.GroupDeltas = old }()
				for b.Loop() {
					b.StopTimer()
					caches := make([]*llama.KVCache, B)
					ids := make([]int, B)
					for s := range caches {
						caches[s] = m.NewKVCache(1, 4+steps)
						if _, err := m.Prefill(&nn.Pass{Adapters: names[s : s+1]}, []int{1, 10 + s, 20 + s}, caches[s]); err != nil {
							b.Fatal(err)
						}
						ids[s] = 3
					}
					b.StartTimer()
					for range steps {
						if _, err := m.DecodeStep(&nn.Pass{Adapters: names}, ids, caches); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}
