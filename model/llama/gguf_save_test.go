package llama

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/tensor"
)

var testVocab = map[string]any{"tokenizer.ggml.model": "llama"}

func saveGGUF(t *testing.T, m *Model, typ string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m-"+typ+".gguf")
	if err := SaveGGUF(m, path, GGUFOptions{Type: typ, Vocab: testVocab}); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestGGUFRoundTripF32Exact: a Hugging Face model (rotate-half) written as
// f32 GGUF — q/k rows permuted to llama.cpp's order — reads back through
// our GGUF loader with the same weights and bit-identical logits.
func TestGGUFRoundTripF32Exact(t *testing.T) {
	src := load(t, shared.Path(t, "golden/stories260K/hf"), LoadOptions{})
	path := saveGGUF(t, src, "f32")
	f, err := format.ReadGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"general.architecture": "llama", "general.type": "model", "general.file_type": uint32(0),
		"llama.block_count": uint32(5), "llama.attention.head_count_kv": uint32(4), "llama.rope.dimension_count": uint32(8),
		"llama.vocab_size": uint32(512), "general.quantization_version": uint32(2), "tokenizer.ggml.model": "llama"} {
		if f.Metadata[k] != want {
			t.Errorf("metadata %s = %v (%T), want %v", k, f.Metadata[k], f.Metadata[k], want)
		}
	}
	if _, err := f.Tensor("output.weight"); err == nil {
		t.Error("a tied model has output.weight")
	}
	back := load(t, path, LoadOptions{})
	if back.Config.RoPE != autograd.RoPEHalf || !back.Config.TieWordEmbeddings {
		t.Fatalf("read back as %+v", back.Config)
	}
	for name, w := range src.Tensors() {
		got := back.Tensors()[name]
		if got == nil || !tensor.SameBits(got.Data, w.Data) {
			t.Fatalf("%s differs after the round trip", name)
		}
	}
	ids := []int{1, 403, 407, 261, 378, 432}
	if d := maxDiff(logitsOf(t, src, ids), logitsOf(t, back, ids)); d != 0 {
		t.Errorf("logits differ by %g after an f32 round trip", d)
	}
	checkGoldenLogits(t, back, 1e-4)
}

// TestGGUFFromLlama2c: a llama2.c file has llama.cpp's q/k row order, and
// its model loads with the Hugging Face conversion's tensors bit for bit
// (rows permuted on load, as the conversion script does); written as GGUF,
// its q/k rows are the file's again, and read back it is the same model.
func TestGGUFFromLlama2c(t *testing.T) {
	path := shared.Path(t, "data/models/stories260K/stories260K.bin")
	src := load(t, path, LoadOptions{})
	hf := load(t, shared.Path(t, "golden/stories260K/hf"), LoadOptions{})
	for name, w := range hf.Tensors() {
		if got := src.Tensors()[name]; got == nil || !tensor.SameBits(got.Data, w.Data) {
			t.Fatalf("%s of the llama2.c file differs from the Hugging Face model's", name)
		}
	}
	f, err := format.ReadGGUF(saveGGUF(t, src, "f32"))
	if err != nil {
		t.Fatal(err)
	}
	_, raw, err := format.ReadLlama2c(path)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := f.Tensor("blk.2.attn_q.weight")
	got, _ := q.Float32()
	want, _ := raw["model.layers.2.self_attn.q_proj.weight"].Float32()
	if !tensor.SameBits(got, want) {
		t.Error("blk.2.attn_q.weight is not the llama2.c file's (interleaved) q_proj")
	}
	back := load(t, f.Name, LoadOptions{})
	for name, w := range hf.Tensors() {
		if !tensor.SameBits(back.Tensors()[name].Data, w.Data) {
			t.Fatalf("%s read back differs from the Hugging Face model's", name)
		}
	}
	checkGoldenLogits(t, back, 1e-4)
	checkGoldenLogits(t, src, 1e-4)
}

// TestGGUFQuantizedRoundTrip: Q8_0 and Q4_0 weights read back equal
// dequantize(quantize(w)) bit for bit, norms stay F32, rows that are not
// whole blocks fall back to F16, and the logits stay close to float32's.
func TestGGUFQuantizedRoundTrip(t *testing.T) {
	src := load(t, shared.Path(t, "golden/stories260K/hf"), LoadOptions{})
	ids := []int{1, 403, 407, 261, 378, 432}
	ref := logitsOf(t, src, ids)
	for _, c := range []struct {
		typ string
		tol float64
	}{{"q8_0", 0.5}, {"q4_0", 6}, {"f16", 0.05}, {"bf16", 0.2}} { // measured: 0.21, 3.9, 0.011, 0.067
		path := saveGGUF(t, src, c.typ)
		f, err := format.ReadGGUF(path)
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]string{}
		for _, ti := range f.Tensors {
			types[ti.Name] = ti.Type.String()
		}
		want := map[string]map[string]string{
			// ffn_down's rows are 172 values: not whole blocks of 32.
			"q8_0": {"blk.0.attn_q.weight": "Q8_0", "blk.0.ffn_down.weight": "F16", "token_embd.weight": "Q8_0", "blk.0.attn_norm.weight": "F32"},
			// tied embeddings: token_embd is the output, raised to Q8_0.
			"q4_0": {"blk.0.attn_q.weight": "Q4_0", "blk.4.ffn_up.weight": "Q4_0", "blk.0.ffn_down.weight": "F16", "token_embd.weight": "Q8_0", "output_norm.weight": "F32"},
			"f16":  {"blk.0.attn_q.weight": "F16", "output_norm.weight": "F32"},
			"bf16": {"blk.0.attn_k.weight": "BF16", "output_norm.weight": "F32"},
		}[c.typ]
		for n, w := range want {
			if types[n] != w {
				t.Errorf("%s: %s stored as %s, want %s", c.typ, n, types[n], w)
			}
		}
		// What each stored tensor should decode to: the source in GGUF
		// order, encoded and decoded by the format package.
		gts, err := src.GGUFTensors(c.typ)
		if err != nil {
			t.Fatal(err)
		}
		for _, gt := range gts {
			st, err := f.Tensor(gt.Name)
			if err != nil {
				t.Fatal(err)
			}
			a, _ := st.Float32()
			b, _ := gt.Float32()
			if !tensor.SameBits(a, b) {
				t.Errorf("%s: %s does not read back as encoded", c.typ, gt.Name)
			}
			if gt.DType == format.Q8_0 || gt.DType == format.Q4_0 {
				w := src.Tensors()[mustHF(t, gt.Name)].Data
				if strings.Contains(gt.Name, "attn_q") || strings.Contains(gt.Name, "attn_k") {
					heads := src.Config.NumAttentionHeads
					if strings.Contains(gt.Name, "attn_k") {
						heads = src.Config.NumKeyValueHeads
					}
					w = format.UnpermuteQKFromHF(w, heads, gt.Shape[0], gt.Shape[1])
				}
				enc, _ := format.TensorAs("x", gt.Shape, w, gt.DType)
				want, _ := enc.Float32()
				if !tensor.SameBits(a, want) {
					t.Errorf("%s: %s != dequantize(quantize(w))", c.typ, gt.Name)
				}
			}
		}
		back := load(t, path, LoadOptions{})
		d := maxDiff(ref, logitsOf(t, back, ids))
		t.Logf("%s: logits within %.4g of float32", c.typ, d)
		if d > c.tol || (c.typ != "f32" && d == 0) {
			t.Errorf("%s: logits differ from float32 by %g (want small, non-zero, ≤ %g)", c.typ, d, c.tol)
		}
	}
}

func TestGGUFRefusals(t *testing.T) {
	m := load(t, shared.Path(t, "golden/stories260K/hf"), LoadOptions{})
	if err := SaveGGUF(m, filepath.Join(t.TempDir(), "x.gguf"), GGUFOptions{Type: "q5_k", Vocab: testVocab}); err == nil || !strings.Contains(err.Error(), `"q5_k"`) {
		t.Errorf("unknown type: %v", err)
	}
	if err := SaveGGUF(m, filepath.Join(t.TempDir(), "x.gguf"), GGUFOptions{Type: "f32"}); err == nil || !strings.Contains(err.Error(), "tokenizer") {
		t.Errorf("no vocabulary: %v", err)
	}
}

func mustHF(t *testing.T, g string) string {
	t.Helper()
	n, ok := format.GGUFToHFName(g)
	if !ok {
		t.Fatalf("no HF name for %s", g)
	}
	return n
}
