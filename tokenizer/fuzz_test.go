package tokenizer

import (
	"os"
	"strings"
	"testing"
)

// exercise runs a parsed tokenizer over a few inputs: whatever the file
// held, nothing may panic.
func exercise(tok Tokenizer) {
	for _, s := range []string{"", " ", "Hello wörld 🙂\n\t<s>", "\xff\x80"} {
		ids := tok.Encode(s)
		tok.Decode(ids)
		for i, id := range ids {
			tok.DecodeToken(i-1, id)
		}
	}
	tok.Decode([]int{-1, 0, 1, 2, tok.VocabSize(), 1 << 40})
	tok.DecodeToken(1, tok.VocabSize()-1)
	tok.TokenID("a")
}

func FuzzLoadLlama2cBin(f *testing.F) {
	f.Add(binFile(4, []string{"<unk>", "<s>", "</s>", " ", "a", " a"}, []float32{0, 0, 0, -1, -2, -3}))
	f.Add([]byte{1, 2})
	f.Add(binFile(-3, []string{"a"}, []float32{0}))
	if data, err := os.ReadFile(sharedFile(f, tok512Path)); err == nil {
		f.Add(data)
		f.Add(data[:len(data)/2])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := ParseLlama2c(data, "fuzz.bin", 0)
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.bin") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		exercise(tok)
	})
}

func FuzzLoadTokenizerJSON(f *testing.F) {
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}, "decoder": {"type": "ByteLevel"}, "pre_tokenizer": {"type": "ByteLevel"}}`))
	f.Add([]byte(`{"added_tokens": [{"id": 3, "content": "<s>", "special": true}], "normalizer": {"type": "Prepend", "prepend": "▁"}, "model": {"vocab": {"▁": 0, "a": 1, "▁a": 2, "<0x61>": 4}, "merges": [["▁", "a"]], "byte_fallback": true, "unk_token": "▁", "fuse_unk": true}, "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}`))
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\s+(?!\\S)|a"}, "behavior": "Contiguous"}, {"type": "Digits", "individual_digits": true}, {"type": "Metaspace", "split": true}]}, "decoder": {"type": "Metaspace"}}`))
	f.Add([]byte(`{"model": null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := ParseHF(data, "fuzz.json")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.json") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		exercise(tok)
	})
}

// FuzzEncodeDecode checks that Decode(Encode(s)) == s. llama2.c's dummy
// prefix space is removed again by Decode, so tok512 round-trips every
// string (byte fallback keeps even invalid UTF-8). The Hugging Face
// tokenizers round-trip too, except for text that holds their special
// tokens or the "▁" the SentencePiece-style one uses for spaces.
func FuzzEncodeDecode(f *testing.F) {
	for _, s := range []string{"", " ", "Hello world", "  two\tspaces\n\n", "naïve café — 数字 🙂🚀", "<0x41><s>", "\x00\xff"} {
		f.Add(s)
	}
	tok512 := loadShared(f, tok512Path)
	sp := loadShared(f, spbpePath)
	gpt2 := loadShared(f, gpt2Dir)
	f.Fuzz(func(t *testing.T, s string) {
		if got := tok512.Decode(tok512.Encode(s)); got != s {
			t.Errorf("tok512: Decode(Encode(%q)) = %q, ids %v", s, got, tok512.Encode(s))
		}
		if got := gpt2.Decode(gpt2.Encode(s)); got != s {
			t.Errorf("gpt2: Decode(Encode(%q)) = %q", s, got)
		}
		if !strings.Contains(s, "▁") && !strings.Contains(s, "<s>") && !strings.Contains(s, "</s>") && !strings.Contains(s, "<unk>") {
			if got := sp.Decode(sp.Encode(s)); got != s {
				t.Errorf("spbpe32k: Decode(Encode(%q)) = %q, ids %v", s, got, sp.Encode(s))
			}
		}
	})
}

// FuzzFromGGUF: any vocabulary a GGUF file's metadata can hold (pieces
// split from data, a token type and score per piece) builds a tokenizer or
// an error naming the file, never a panic, and what builds encodes and
// decodes any text.
func FuzzFromGGUF(f *testing.F) {
	f.Add([]byte("<unk>\x00<s>\x00</s>\x00▁a\x00a\x00▁"), []byte{2, 3, 3, 1, 1, 1}, "a aa")
	f.Add([]byte("\x00\x00"), []byte{0, 9}, "")
	f.Add([]byte("<unk>\x00<s>\x00</s>\x00<0x41>"), []byte{2, 3, 3, 6}, "A\x00é")
	f.Fuzz(func(t *testing.T, data, types []byte, text string) {
		pieces := strings.Split(string(data), "\x00")
		scores := make([]float32, len(pieces))
		tt := make([]int32, len(pieces))
		for i := range pieces {
			scores[i] = -float32(i)
			if i < len(types) {
				tt[i] = int32(types[i] % 8)
			}
		}
		tok, err := FromGGUF(map[string]any{
			"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": pieces,
			"tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": tt,
		}, "fuzz.gguf")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz.gguf") {
				t.Errorf("error does not name the file: %v", err)
			}
			return
		}
		ids := tok.Encode(text)
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("id %d outside the vocabulary of %d", id, tok.VocabSize())
			}
		}
		_ = tok.Decode(ids)
	})
}
