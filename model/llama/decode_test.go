package llama

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
)

// Decoding several sequences through one cache (left-padded prompts, then a
// token each per step) gives each sequence's logits as decoding it alone
// does; the cache is read in place, and Reset makes it reusable.
func TestBatchedKVCacheMatchesAlone(t *testing.T) {
	m, err := NewRandom(smallConfig(), 11)
	if err != nil {
		t.Fatal(err)
	}
	prompts := [][]int{{1, 5, 9, 11}, {1, 8}, {1, 17, 21}}
	steps := [][]int{{4, 6, 7}, {30, 31, 32}, {12, 13, 14}} // per sequence
	const T = 4
	alone := make([][][]float32, len(prompts)) // [seq][step] logits
	for b, p := range prompts {
		seq := append(append([]int(nil), p...), steps[b]...)
		all := logitsOf(t, m, seq)
		for s := range steps[b] {
			alone[b] = append(alone[b], all[len(p)-1+s])
		}
	}
	cache := m.NewKVCache(len(prompts), T+len(steps[0]))
	for round := 0; round < 2; round++ { // the second round reuses the cache
		cache.Reset()
		var ids []int
		var mask []bool
		for _, p := range prompts {
			for i := 0; i < T; i++ {
				pad := i < T-len(p)
				mask = append(mask, !pad)
				if pad {
					ids = append(ids, 0)
				} else {
					ids = append(ids, p[i-(T-len(p))])
				}
			}
		}
		h, err := m.Forward(nil, Input{IDs: ids, Batch: len(prompts), T: T, Mask: mask, Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		lg := m.Logits(nil, h).Value
		for s := 0; s < len(steps[0]); s++ {
			for b := range prompts {
				r := b // one row per sequence after the prompt
				if s == 0 {
					r = b*T + T - 1
				}
				row := lg.Row(r)
				if d := maxDiff([][]float32{row}, [][]float32{alone[b][s]}); d > 1e-5 {
					t.Fatalf("round %d step %d sequence %d: batched cache differs from alone by %g", round, s, b, d)
				}
			}
			if s+1 == len(steps[0]) {
				break
			}
			next := make([]int, len(prompts))
			for b := range prompts {
				next[b] = steps[b][s]
			}
			h, err = m.Forward(nil, Input{IDs: next, Batch: len(prompts), T: 1, Cache: cache})
			if err != nil {
				t.Fatal(err)
			}
			lg = m.Logits(nil, h).Value
		}
	}
}

// SaveLlama2c writes a file that loads back as the same function, for
// rotate-half (permuted on the way) and adjacent-pair models, tied or not;
// configs llama2.c cannot express are refused.
func TestSaveLlama2cRoundTrip(t *testing.T) {
	ids := []int{1, 4, 9, 16, 25, 36, 7}
	for _, c := range []struct {
		rope autograd.RoPEStyle
		tied bool
	}{{autograd.RoPEHalf, false}, {autograd.RoPEInterleaved, true}} {
		cfg := smallConfig()
		cfg.RoPE, cfg.TieWordEmbeddings = c.rope, c.tied
		m, err := NewRandom(cfg, 9)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "model.bin")
		if err := SaveLlama2c(m, path, 64); err != nil {
			t.Fatal(err)
		}
		back := load(t, path, LoadOptions{})
		if back.Config.TieWordEmbeddings != c.tied || back.Config.RoPE != autograd.RoPEHalf { // rows permuted on load
			t.Errorf("%+v: loaded config %+v", c, back.Config)
		}
		if d := maxDiff(logitsOf(t, m, ids), logitsOf(t, back, ids)); d > 1e-5 {
			t.Errorf("%+v: the llama2.c file's logits differ by %g", c, d)
		}
	}
	cfg := smallConfig()
	cfg.RMSNormEps = 1e-6
	m, _ := NewRandom(cfg, 9)
	if err := SaveLlama2c(m, filepath.Join(t.TempDir(), "eps.bin"), 64); err == nil || !strings.Contains(err.Error(), "eps.bin") {
		t.Errorf("ε = 1e-6 saved as llama2.c (err %v)", err)
	}
}
