package tokenizer

import (
	"reflect"
	"strings"
	"testing"
)

// A vocabulary written to GGUF metadata (GGUFMetadata, as llama.cpp's
// converter writes it) reads back (FromGGUF) as the tokenizer.bin it came
// from: the same pieces and scores, the same ids for every text.
func TestGGUFVocabularyRoundTrip(t *testing.T) {
	for _, path := range []string{tok512Path, "data/tokenizers/llama2/tokenizer.bin"} {
		src := loadShared(t, path).(*Llama2c)
		got, err := FromGGUF(src.GGUFMetadata(), "x.gguf")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.pieces, src.pieces) || !reflect.DeepEqual(got.scores, src.scores) {
			t.Fatalf("%s: the pieces or scores differ after GGUF", path)
		}
		for _, text := range []string{"Once upon a time, there was a little girl named Lily.", "  two\tspaces\n", "naïve café — 数字 🙂", "<s> and </s> are text here"} {
			if a, b := got.Encode(text), src.Encode(text); !reflect.DeepEqual(a, b) {
				t.Errorf("%s: %q encodes to %v from GGUF, %v from the .bin", path, text, a, b)
			}
			if a, b := got.Decode(got.Encode(text)), src.Decode(src.Encode(text)); a != b {
				t.Errorf("%s: %q decodes to %q from GGUF, %q from the .bin", path, text, a, b)
			}
		}
	}
}

// Vocabularies this encoder cannot reproduce are refused, naming the file
// and the key.
func TestGGUFVocabularyRefusals(t *testing.T) {
	good := func() map[string]any {
		return map[string]any{
			"tokenizer.ggml.model":      "llama",
			"tokenizer.ggml.tokens":     []string{"<unk>", "<s>", "</s>", "▁a"},
			"tokenizer.ggml.scores":     []float32{0, 0, 0, -1},
			"tokenizer.ggml.token_type": []int32{2, 3, 3, 1},
		}
	}
	if _, err := FromGGUF(good(), "ok.gguf"); err != nil {
		t.Fatalf("a minimal vocabulary: %v", err)
	}
	set := func(kv ...any) func(map[string]any) {
		return func(m map[string]any) {
			for i := 0; i < len(kv); i += 2 {
				if kv[i+1] == nil {
					delete(m, kv[i].(string))
				} else {
					m[kv[i].(string)] = kv[i+1]
				}
			}
		}
	}
	for _, c := range []struct {
		edit func(map[string]any)
		want string
	}{
		{set("tokenizer.ggml.model", "gpt2"), `"gpt2" is not read`},
		{set("tokenizer.ggml.model", nil), "no tokenizer.ggml.model"},
		{set("tokenizer.ggml.tokens", []int32{1}), "tokenizer.ggml.tokens is []int32"},
		{set("tokenizer.ggml.scores", []float32{0}), "want 4 float32 values"},
		{set("tokenizer.ggml.token_type", []int32{1, 1}), "want 4 int32 values"},
		{set("tokenizer.ggml.bos_token_id", uint32(128000)), "bos_token_id is 128000"},
		{set("tokenizer.ggml.tokens", []string{"<unk>", "<s>"}, "tokenizer.ggml.scores", []float32{0, 0}, "tokenizer.ggml.token_type", []int32{2, 3}), "2 tokens, want at least 3"},
	} {
		m := good()
		c.edit(m)
		_, err := FromGGUF(m, "bad.gguf")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.gguf") {
			t.Errorf("want an error naming bad.gguf and %q, got %v", c.want, err)
		}
	}
}
