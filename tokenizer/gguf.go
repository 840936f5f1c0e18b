package tokenizer

import (
	"fmt"
	"strings"
)

// GGUF token types (gguf-py's TokenType, llama.cpp's llama_token_type).
const (
	ggufTokenNormal  = int32(1)
	ggufTokenUnknown = int32(2)
	ggufTokenControl = int32(3)
	ggufTokenByte    = int32(6)
)

// GGUFMetadata returns the tokenizer.ggml.* metadata that llama.cpp's
// convert_hf_to_gguf.py writes for a SentencePiece LLaMA vocabulary
// (_set_vocab_sentencepiece: model "llama", pre "default", the pieces,
// their scores and token types; SpecialVocab: the BOS, EOS and unknown ids;
// add_bos_token true and add_eos_token false, as LLaMA's
// tokenizer_config.json says).
//
// A tokenizer.bin is SentencePiece's vocabulary as llama2.c's export wrote
// it (tokenizer.py): "▁" turned into a plain space, and BOS and EOS renamed
// "\n<s>\n" and "\n</s>\n". Both are undone here, so the pieces are
// SentencePiece's again. Token types follow SentencePiece's for LLaMA: id 0
// <unk> is UNKNOWN, BOS and EOS are CONTROL, <0x00>..<0xFF> are BYTE, every
// other piece NORMAL.
func (t *Llama2c) GGUFMetadata() map[string]any {
	n := len(t.pieces)
	tokens := make([]string, n)
	types := make([]int32, n)
	for i, p := range t.pieces {
		switch {
		case i == 0:
			types[i] = ggufTokenUnknown
		case i == 1 || i == 2:
			types[i] = ggufTokenControl
			p = map[int]string{1: "<s>", 2: "</s>"}[i]
		case t.byteTokens && i >= 3 && i < 259:
			types[i] = ggufTokenByte
		default:
			types[i] = ggufTokenNormal
			p = strings.ReplaceAll(p, " ", "▁")
		}
		tokens[i] = p
	}
	return map[string]any{
		"tokenizer.ggml.model":            "llama",
		"tokenizer.ggml.pre":              "default",
		"tokenizer.ggml.tokens":           tokens,
		"tokenizer.ggml.scores":           append([]float32(nil), t.scores...),
		"tokenizer.ggml.token_type":       types,
		"tokenizer.ggml.bos_token_id":     uint32(1),
		"tokenizer.ggml.eos_token_id":     uint32(2),
		"tokenizer.ggml.unknown_token_id": uint32(0),
		"tokenizer.ggml.add_bos_token":    true,
		"tokenizer.ggml.add_eos_token":    false,
	}
}

// FromGGUF builds the tokenizer a GGUF file carries in its tokenizer.ggml.*
// metadata (meta, as model/format parses it; name is used in errors), for
// the SentencePiece LLaMA vocabularies llama.cpp calls "llama": the inverse
// of GGUFMetadata. NORMAL pieces get llama2.c's plain space for "▁", and BOS
// and EOS llama2.c's names, so the result encodes and decodes as the
// tokenizer.bin of the same vocabulary does. llama2.c's encoder fixes
// <unk>, BOS and EOS at ids 0, 1 and 2; a vocabulary with other ids, or
// another model (gpt2's byte-level BPE of LLaMA 3), is refused: pass
// --tokenizer with its tokenizer.json instead.
func FromGGUF(meta map[string]any, name string) (*Llama2c, error) {
	model, _ := meta["tokenizer.ggml.model"].(string)
	if model != "llama" {
		if model == "" {
			return nil, fmt.Errorf("tokenizer: %s: no tokenizer.ggml.model in the GGUF metadata: the file carries no vocabulary; pass --tokenizer", name)
		}
		return nil, fmt.Errorf("tokenizer: %s: tokenizer.ggml.model %q is not read from GGUF (only SentencePiece \"llama\"); pass --tokenizer with the model's tokenizer.json", name, model)
	}
	tokens, ok := meta["tokenizer.ggml.tokens"].([]string)
	if !ok {
		return nil, fmt.Errorf("tokenizer: %s: tokenizer.ggml.tokens is %T, want an array of strings", name, meta["tokenizer.ggml.tokens"])
	}
	scores, ok := meta["tokenizer.ggml.scores"].([]float32)
	if !ok || len(scores) != len(tokens) {
		return nil, fmt.Errorf("tokenizer: %s: tokenizer.ggml.scores is %T of %d, want %d float32 values (one per token)", name, meta["tokenizer.ggml.scores"], lenOf(meta["tokenizer.ggml.scores"]), len(tokens))
	}
	types, ok := meta["tokenizer.ggml.token_type"].([]int32)
	if !ok || len(types) != len(tokens) {
		return nil, fmt.Errorf("tokenizer: %s: tokenizer.ggml.token_type is %T of %d, want %d int32 values (one per token)", name, meta["tokenizer.ggml.token_type"], lenOf(meta["tokenizer.ggml.token_type"]), len(tokens))
	}
	for want, key := range []string{"tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"} {
		v, present := meta[key]
		if !present {
			continue
		}
		if id, isU32 := v.(uint32); !isU32 || id != uint32(want) {
			return nil, fmt.Errorf("tokenizer: %s: %s is %v, but this encoder (llama2.c's) has it at id %d; pass --tokenizer", name, key, v, want)
		}
	}
	t := &Llama2c{index: make(map[string]int, len(tokens))}
	for i, p := range tokens {
		switch {
		case i == 1:
			p = "\n<s>\n"
		case i == 2:
			p = "\n</s>\n"
		case types[i] == ggufTokenNormal:
			p = strings.ReplaceAll(p, "▁", " ")
		}
		if _, dup := t.index[p]; !dup {
			t.index[p] = len(t.pieces)
		}
		t.pieces = append(t.pieces, p)
		t.scores = append(t.scores, scores[i])
		t.maxTokenLen = max(t.maxTokenLen, len(p))
	}
	return t.finish(name)
}

func lenOf(v any) int {
	switch v := v.(type) {
	case []float32:
		return len(v)
	case []int32:
		return len(v)
	}
	return 0
}
