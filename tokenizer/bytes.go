package tokenizer

import "fmt"

// Bytes is a byte-level tokenizer with no vocabulary file: id 0 is padding,
// 1 BOS, 2 EOS, and byte b is id b+3. It needs nothing on disk, so a model
// trained from scratch with it (the demo) is self-contained.
type Bytes struct{}

// bytesOffset is the id of byte 0.
const bytesOffset = 3

// NewBytes returns the byte-level tokenizer.
func NewBytes() Bytes { return Bytes{} }

// Encode implements Tokenizer: one id per byte.
func (Bytes) Encode(text string) []int {
	ids := make([]int, len(text))
	for i := 0; i < len(text); i++ {
		ids[i] = int(text[i]) + bytesOffset
	}
	return ids
}

// Decode implements Tokenizer, dropping the special ids.
func (Bytes) Decode(ids []int) string {
	b := make([]byte, 0, len(ids))
	for _, id := range ids {
		if id >= bytesOffset && id < bytesOffset+256 {
			b = append(b, byte(id-bytesOffset))
		}
	}
	return string(b)
}

// DecodeToken implements Tokenizer.
func (t Bytes) DecodeToken(_, id int) string { return t.Decode([]int{id}) }

// VocabSize implements Tokenizer.
func (Bytes) VocabSize() int { return bytesOffset + 256 }

// BOS implements Tokenizer.
func (Bytes) BOS() int { return 1 }

// EOS implements Tokenizer.
func (Bytes) EOS() int { return 2 }

// TokenID implements Tokenizer for single-byte pieces and "<s>", "</s>".
func (Bytes) TokenID(piece string) (int, bool) {
	switch {
	case piece == "<s>":
		return 1, true
	case piece == "</s>":
		return 2, true
	case len(piece) == 1:
		return int(piece[0]) + bytesOffset, true
	}
	return 0, false
}

func (Bytes) String() string { return fmt.Sprintf("bytes (vocabulary %d)", bytesOffset+256) }
