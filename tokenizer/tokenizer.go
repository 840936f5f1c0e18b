package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Tokenizer turns text into token ids and back.
//
// Implementations are safe for concurrent use.
type Tokenizer interface {
	// Encode returns the ids of text, without BOS or EOS.
	Encode(text string) []int
	// Decode returns the text of ids. BOS, EOS and other special (control)
	// tokens are left out; byte tokens are reassembled into their bytes; the
	// leading space a SentencePiece-style tokenizer adds is removed.
	Decode(ids []int) string
	// DecodeToken returns the text of one token for streaming output, given
	// the token before it (llama2.c semantics: a leading space is dropped
	// after BOS in SentencePiece-style vocabularies; a byte token yields its
	// single raw byte, which may be part of a multi-byte UTF-8 character).
	DecodeToken(prev, id int) string
	// VocabSize is one more than the largest token id.
	VocabSize() int
	// BOS and EOS return the begin/end-of-sequence ids, or -1 if none.
	BOS() int
	EOS() int
	// TokenID returns the id of a vocabulary piece exactly as stored (for
	// example "▁the" in a tokenizer.json, " the" in a tokenizer.bin, or
	// "<|eot_id|>").
	TokenID(piece string) (int, bool)
}

// Load reads a tokenizer, choosing the format from the path:
//   - *.bin: llama2.c tokenizer.bin (all tokens up to the end of the file);
//   - tokenizer.json, any other *.json but encoder.json, or a directory
//     containing tokenizer.json: Hugging Face tokenizers format;
//   - encoder.json, or a directory containing encoder.json and vocab.bpe:
//     the original GPT-2 files;
//   - a directory containing only tokenizer.bin: llama2.c.
func Load(path string) (Tokenizer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if fi.IsDir() {
		has := func(name string) bool {
			st, err := os.Stat(filepath.Join(path, name))
			return err == nil && !st.IsDir()
		}
		switch {
		case has("tokenizer.json"):
			return LoadHF(filepath.Join(path, "tokenizer.json"))
		case has("encoder.json") && has("vocab.bpe"):
			return LoadGPT2(filepath.Join(path, "encoder.json"), filepath.Join(path, "vocab.bpe"))
		case has("tokenizer.bin"):
			return LoadLlama2c(filepath.Join(path, "tokenizer.bin"), 0)
		}
		return nil, fmt.Errorf("tokenizer: %s: directory has no tokenizer.json, encoder.json+vocab.bpe or tokenizer.bin", path)
	}
	base := strings.ToLower(filepath.Base(path))
	switch {
	case strings.HasSuffix(base, ".bin"):
		return LoadLlama2c(path, 0)
	case base == "encoder.json":
		return LoadGPT2(path, filepath.Join(filepath.Dir(path), "vocab.bpe"))
	case strings.HasSuffix(base, ".json"):
		return LoadHF(path)
	case strings.HasSuffix(base, ".model"):
		return nil, fmt.Errorf("tokenizer: %s: SentencePiece .model files are not supported; use llama2.c's tokenizer.bin or a tokenizer.json", path)
	}
	return nil, fmt.Errorf("tokenizer: %s: unknown tokenizer format (want *.bin, tokenizer.json, encoder.json or a directory)", path)
}

// EncodeSpecial encodes text and adds BOS and/or EOS when asked and the
// tokenizer has them.
func EncodeSpecial(t Tokenizer, text string, bos, eos bool) []int {
	ids := t.Encode(text)
	if bos && t.BOS() >= 0 {
		ids = append([]int{t.BOS()}, ids...)
	}
	if eos && t.EOS() >= 0 {
		ids = append(ids, t.EOS())
	}
	return ids
}

// byteToken is the SentencePiece name of the byte-fallback token for b.
func byteToken(b byte) string {
	const hex = "0123456789ABCDEF"
	return string([]byte{'<', '0', 'x', hex[b>>4], hex[b&15], '>'})
}

// parseByteToken reports whether piece is exactly "<0xNN>" (N upper- or
// lower-case hex) and returns the byte.
func parseByteToken(piece string) (byte, bool) {
	if len(piece) != 6 || piece[:3] != "<0x" || piece[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexVal(piece[3])
	lo, ok2 := hexVal(piece[4])
	if !ok1 || !ok2 {
		return 0, false
	}
	return hi<<4 | lo, true
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// errKey is the error for a bad or unsupported value at key of file.
func errKey(file, key, format string, args ...any) error {
	return fmt.Errorf("tokenizer: %s: %s: %s", file, key, fmt.Sprintf(format, args...))
}
