package llama

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/tokenizer"
)

type goldenLogits struct {
	Tokens [][]int       `json:"tokens"`
	Logits [][][]float32 `json:"logits"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func load(t *testing.T, path string, opt LoadOptions) *Model {
	t.Helper()
	m, err := Load(path, opt)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// logitsOf runs one unpadded sequence and returns its logits per position.
func logitsOf(t *testing.T, m *Model, ids []int) [][]float32 {
	t.Helper()
	h, err := m.Forward(nil, Input{IDs: ids, Batch: 1, T: len(ids)})
	if err != nil {
		t.Fatal(err)
	}
	lg := m.Logits(nil, h).Value
	out := make([][]float32, len(ids))
	for i := range out {
		out[i] = lg.Row(i)
	}
	return out
}

func maxDiff(a, b [][]float32) float64 {
	var d float64
	for i := range a {
		for j := range a[i] {
			d = math.Max(d, math.Abs(float64(a[i][j]-b[i][j])))
		}
	}
	return d
}

func checkGoldenLogits(t *testing.T, m *Model, tol float64) {
	t.Helper()
	var g goldenLogits
	readJSON(t, shared.Path(t, "golden/stories260K/logits.json"), &g)
	if len(g.Tokens) == 0 {
		t.Fatal("no sequences in logits.json")
	}
	for s, ids := range g.Tokens {
		got := logitsOf(t, m, ids)
		if len(g.Logits[s]) != len(ids) || len(g.Logits[s][0]) != m.Config.VocabSize {
			t.Fatalf("golden sequence %d has %d×%d logits", s, len(g.Logits[s]), len(g.Logits[s][0]))
		}
		if d := maxDiff(got, g.Logits[s]); d > tol {
			t.Errorf("sequence %d: max |logit - golden| = %g > %g", s, d, tol)
		}
	}
}

func TestGoldenLogitsHF(t *testing.T) {
	m := load(t, shared.Path(t, "golden/stories260K/hf"), LoadOptions{})
	if m.Config.RoPE != autograd.RoPEHalf {
		t.Fatal("a Hugging Face checkpoint must use rotate-half RoPE")
	}
	checkGoldenLogits(t, m, 1e-4)
}

func TestGoldenLogitsLlama2c(t *testing.T) {
	m := load(t, shared.Path(t, "data/models/stories260K/stories260K.bin"), LoadOptions{})
	checkGoldenLogits(t, m, 1e-4)
}

func TestConvertRoundTrip(t *testing.T) {
	m := load(t, shared.Path(t, "data/models/stories260K/stories260K.bin"), LoadOptions{})
	dir := filepath.Join(t.TempDir(), "hf")
	if err := SaveHF(m, dir); err != nil {
		t.Fatal(err)
	}
	back := load(t, dir, LoadOptions{})
	checkGoldenLogits(t, back, 1e-4)
	// The permuted q_proj must be exactly the golden HF file's.
	gold := load(t, shared.Path(t, "golden/stories260K/hf"), LoadOptions{})
	for _, name := range []string{"model.layers.0.self_attn.q_proj.weight", "model.layers.4.self_attn.k_proj.weight"} {
		a, _ := back.Params().Get(name)
		b, _ := gold.Params().Get(name)
		for i := range a.Value.Data {
			if a.Value.Data[i] != b.Value.Data[i] {
				t.Fatalf("%s differs from the golden conversion at %d", name, i)
			}
		}
	}
}

func TestGreedyGolden(t *testing.T) {
	var g struct {
		GreedyTokens []int  `json:"greedy_tokens"`
		Text         string `json:"text"`
	}
	readJSON(t, shared.Path(t, "golden/stories260K/greedy.json"), &g)
	dir := shared.Path(t, "data/models/stories260K")
	m := load(t, filepath.Join(dir, "stories260K.bin"), LoadOptions{})
	tok, err := tokenizer.Load(filepath.Join(dir, "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int{m.Config.BOSTokenID}
	want := g.GreedyTokens[1:]
	var text strings.Builder
	prev := prompt[0]
	ids, err := m.Generate(context.Background(), prompt, GenerateOptions{MaxNewTokens: len(want)}, func(id int) bool {
		text.WriteString(tok.DecodeToken(prev, id))
		prev = id
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(want) {
		t.Fatalf("generated %d tokens, golden has %d", len(ids), len(want))
	}
	for i := range want {
		if ids[i] != want[i] {
			t.Fatalf("token %d: got %d, golden %d", i, ids[i], want[i])
		}
	}
	if text.String() != g.Text {
		t.Errorf("text differs:\n got %q\nwant %q", text.String(), g.Text)
	}
}

// smallConfig is a model with GQA, odd sizes and a vocabulary small enough
// for quick tests.
func smallConfig() Config {
	return Config{HiddenSize: 24, IntermediateSize: 40, NumHiddenLayers: 2, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: 37, MaxPositionEmbeddings: 64, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2,
		RoPE: autograd.RoPEHalf}
}

func TestBatchedPaddingMatchesUnbatched(t *testing.T) {
	m, err := NewRandom(smallConfig(), 7)
	if err != nil {
		t.Fatal(err)
	}
	seqs := [][]int{{1, 5, 9, 11, 3, 4, 30}, {1, 8, 2}, {1, 17, 21, 5, 6}}
	const T = 7
	for _, left := range []bool{false, true} {
		var ids []int
		var mask []bool
		for _, s := range seqs {
			pad := T - len(s)
			row := make([]int, T)
			rm := make([]bool, T)
			off := 0
			if left {
				off = pad
			}
			for i := range row {
				row[i] = 36 // any id: masked out
			}
			copy(row[off:], s)
			for i := range s {
				rm[off+i] = true
			}
			ids = append(ids, row...)
			mask = append(mask, rm...)
		}
		h, err := m.Forward(nil, Input{IDs: ids, Batch: len(seqs), T: T, Mask: mask})
		if err != nil {
			t.Fatal(err)
		}
		lg := m.Logits(nil, h).Value
		for b, s := range seqs {
			want := logitsOf(t, m, s)
			off := 0
			if left {
				off = T - len(s)
			}
			got := make([][]float32, len(s))
			for i := range s {
				got[i] = lg.Row(b*T + off + i)
			}
			if d := maxDiff(got, want); d > 1e-5 {
				t.Errorf("left=%v sequence %d: batched differs from alone by %g", left, b, d)
			}
		}
	}
}

func TestKVCacheMatchesRecompute(t *testing.T) {
	m, err := NewRandom(smallConfig(), 3)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int{1, 4, 9, 16, 25, 36, 7, 14, 21, 28}
	full := logitsOf(t, m, ids)
	cache := m.NewKVCache(1, len(ids))
	// Feed a 4-token prompt, then one token at a time.
	chunks := [][]int{ids[:4]}
	for _, id := range ids[4:] {
		chunks = append(chunks, []int{id})
	}
	row := 0
	for _, c := range chunks {
		h, err := m.Forward(nil, Input{IDs: c, Batch: 1, T: len(c), Cache: cache})
		if err != nil {
			t.Fatal(err)
		}
		lg := m.Logits(nil, h).Value
		for i := range c {
			if d := maxDiff([][]float32{lg.Row(i)}, [][]float32{full[row]}); d > 1e-5 {
				t.Fatalf("position %d: cached decoding differs by %g", row, d)
			}
			row++
		}
	}
	if cache.Len() != len(ids) {
		t.Fatalf("cache length %d, want %d", cache.Len(), len(ids))
	}
	if _, err := m.Forward(nil, Input{IDs: []int{1}, Batch: 1, T: 1, Cache: cache}); err == nil {
		t.Fatal("a full cache accepted another token")
	}
}

func TestBF16WeightsCloseToF32(t *testing.T) {
	path := shared.Path(t, "golden/stories260K/hf")
	f := load(t, path, LoadOptions{})
	h := load(t, path, LoadOptions{BF16: true})
	ids := []int{1, 403, 407, 261, 378, 432}
	// bf16 keeps 8 bits of mantissa: logits move by a few hundredths.
	if d := maxDiff(logitsOf(t, f, ids), logitsOf(t, h, ids)); d > 0.25 || d == 0 {
		t.Errorf("bf16 logits differ from float32 by %g (want small but non-zero)", d)
	}
}

func TestParseConfigErrors(t *testing.T) {
	cases := map[string]string{
		`{"hidden_size": 8}`: "missing required key",
		`{"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 3, "vocab_size": 4}`:                                                     "not divisible",
		`{"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3, "vocab_size": 4}`:                           "multiple",
		`{"hidden_size": 8, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4, "rope_scaling": {"rope_type": "yarn", "factor": 2}}`: "unsupported rope_scaling",
		`{"hidden_size": "eight", "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4}`:                                               "hidden_size",
		`[1,2]`: "config.json",
	}
	for in, want := range cases {
		_, err := ParseConfig([]byte(in), "config.json")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConfig(%s) = %v, want an error containing %q", in, err, want)
		}
	}
}

func TestParseConfigKeepsExtraAndDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
		"vocab_size": 4, "model_type": "llama", "eos_token_id": [128001, 128009]}`), "config.json")
	if err != nil {
		t.Fatal(err)
	}
	if c.NumKeyValueHeads != 2 || c.RMSNormEps != 1e-6 || c.EOSTokenID != 128001 {
		t.Errorf("defaults not applied: %+v", c)
	}
	if string(c.Extra["model_type"]) != `"llama"` {
		t.Errorf("extra key lost: %v", c.Extra)
	}
}

func TestLlama3RopeScaling(t *testing.T) {
	// LLaMA-3.1's published settings; expected values worked by hand from
	// the rule: wavelengths shorter than 8192/4 = 2048 keep their frequency,
	// longer than 8192 are divided by 8, in between interpolate.
	c := Config{HiddenSize: 4096, NumAttentionHeads: 32, RopeTheta: 500000,
		RopeScaling: &RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPositionEmbeddings: 8192}}
	inv := c.InvFreq()
	if len(inv) != 64 {
		t.Fatalf("%d frequencies", len(inv))
	}
	if inv[0] != 1 {
		t.Errorf("highest frequency changed: %v", inv[0])
	}
	last := 1 / math.Pow(500000, 126.0/128)
	if math.Abs(inv[63]-last/8) > 1e-12*last {
		t.Errorf("lowest frequency %g, want %g", inv[63], last/8)
	}
	for i, f := range inv {
		base := 1 / math.Pow(500000, float64(2*i)/128)
		if f > base || f < base/8-1e-18 {
			t.Errorf("frequency %d = %g outside [base/8, base] = [%g, %g]", i, f, base/8, base)
		}
	}
}

func TestNewRejectsMismatchedTensors(t *testing.T) {
	cfg := smallConfig()
	m, err := NewRandom(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	ts := m.Tensors()
	delete(ts, "model.layers.1.mlp.up_proj.weight")
	if _, err := New(cfg, ts, "x"); err == nil || !strings.Contains(err.Error(), "model.layers.1.mlp.up_proj.weight") {
		t.Errorf("missing tensor: %v", err)
	}
	ts = m.Tensors()
	ts["model.layers.0.self_attn.q_proj.weight"] = ts["model.layers.0.mlp.up_proj.weight"]
	if _, err := New(cfg, ts, "x"); err == nil || !strings.Contains(err.Error(), "q_proj") {
		t.Errorf("wrong shape: %v", err)
	}
}

// TestGoldenLogitsGGUF writes stories260K as llama.cpp lays a GGUF out
// (interleaved q/k rows, llama.* metadata) and checks that loading it gives
// the golden logits.
func TestGoldenLogitsGGUF(t *testing.T) {
	_, l2c, err := format.ReadLlama2c(shared.Path(t, "data/models/stories260K/stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var tensors []*format.Tensor
	for name, tt := range l2c {
		g, ok := format.HFToGGUFName(name)
		if !ok {
			t.Fatalf("no GGUF name for %s", name)
		}
		tensors = append(tensors, &format.Tensor{Name: g, DType: tt.DType, Shape: tt.Shape, Data: tt.Data})
	}
	meta := map[string]any{
		"general.architecture": "llama", "llama.embedding_length": uint32(64), "llama.feed_forward_length": uint32(172),
		"llama.block_count": uint32(5), "llama.attention.head_count": uint32(8), "llama.attention.head_count_kv": uint32(4),
		"llama.context_length": uint32(512), "llama.attention.layer_norm_rms_epsilon": float32(1e-5),
		"llama.rope.freq_base": float32(10000),
	}
	path := filepath.Join(t.TempDir(), "stories260K.gguf")
	if err := format.WriteGGUF(path, meta, tensors); err != nil {
		t.Fatal(err)
	}
	m := load(t, path, LoadOptions{})
	if m.Config.NumKeyValueHeads != 4 || !m.Config.TieWordEmbeddings || m.Config.VocabSize != 512 {
		t.Fatalf("GGUF config %+v", m.Config)
	}
	checkGoldenLogits(t, m, 1e-4)
}
