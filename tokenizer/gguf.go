package tokenizer

import "strings"

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
