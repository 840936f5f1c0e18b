package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/gopeft/internal/safefile"
)

// Llama2c is a tokenizer in llama2.c's tokenizer.bin format: a SentencePiece
// BPE vocabulary (pieces use a plain space where SentencePiece has "▁") with
// one score per piece. Ids 0, 1, 2 are <unk>, BOS and EOS; ids 3..258 are
// the byte-fallback tokens <0x00>..<0xFF>.
type Llama2c struct {
	pieces      []string
	scores      []float32
	index       map[string]int // piece -> first id with that piece
	maxTokenLen int
	byteTokens  bool // ids 3..258 are <0x00>..<0xFF>
	splitSpace  bool // text may be cut before spaces (see canSplitBefore)
	cache       wordCache
}

// llama2cNoMerge is llama2.c's starting best score: a merge must score
// strictly more than this.
const llama2cNoMerge = float32(-1e10)

// LoadLlama2c reads a llama2.c tokenizer.bin. vocabSize is the number of
// tokens to read (as llama2.c takes it from the model's config); 0 reads
// tokens up to the end of the file.
func LoadLlama2c(path string, vocabSize int) (*Llama2c, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return ParseLlama2c(data, path, vocabSize)
}

// ParseLlama2c parses the bytes of a tokenizer.bin; name is used in errors.
func ParseLlama2c(data []byte, name string, vocabSize int) (*Llama2c, error) {
	if vocabSize < 0 {
		return nil, fmt.Errorf("tokenizer: %s: negative vocabulary size %d", name, vocabSize)
	}
	if len(data) < 4 {
		return nil, fmt.Errorf("tokenizer: %s: truncated: %d bytes, want at least a 4-byte max_token_length", name, len(data))
	}
	maxLen := int64(int32(binary.LittleEndian.Uint32(data)))
	if maxLen <= 0 {
		return nil, fmt.Errorf("tokenizer: %s: max_token_length %d must be positive", name, maxLen)
	}
	t := &Llama2c{maxTokenLen: int(maxLen), index: make(map[string]int)}
	off := 4
	for i := 0; vocabSize == 0 || i < vocabSize; i++ {
		if vocabSize == 0 && off == len(data) {
			break
		}
		if len(data)-off < 8 {
			return nil, fmt.Errorf("tokenizer: %s: truncated in token %d header at byte %d", name, i, off)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int64(int32(binary.LittleEndian.Uint32(data[off+4:])))
		off += 8
		if n < 0 {
			return nil, fmt.Errorf("tokenizer: %s: token %d has negative length %d", name, i, n)
		}
		if n > int64(len(data)-off) {
			return nil, fmt.Errorf("tokenizer: %s: truncated in token %d: length %d but %d bytes left", name, i, n, len(data)-off)
		}
		piece := string(data[off : off+int(n)])
		off += int(n)
		if _, dup := t.index[piece]; !dup {
			t.index[piece] = len(t.pieces)
		}
		t.pieces = append(t.pieces, piece)
		t.scores = append(t.scores, score)
	}
	return t.finish(name)
}

// finish checks the vocabulary's size and derives what encoding needs from
// the pieces: the shared tail of every way a Llama2c is made.
func (t *Llama2c) finish(name string) (*Llama2c, error) {
	if len(t.pieces) < 3 {
		return nil, fmt.Errorf("tokenizer: %s: %d tokens, want at least 3 (<unk>, BOS, EOS)", name, len(t.pieces))
	}
	t.byteTokens = len(t.pieces) >= 259
	for b := 0; b < 256 && t.byteTokens; b++ {
		t.byteTokens = t.pieces[b+3] == byteToken(byte(b))
	}
	t.splitSpace = canSplitBefore(" ", t.pieces)
	return t, nil
}

// VocabSize implements Tokenizer.
func (t *Llama2c) VocabSize() int { return len(t.pieces) }

// BOS implements Tokenizer: always 1 in llama2.c.
func (t *Llama2c) BOS() int { return 1 }

// EOS implements Tokenizer: always 2 in llama2.c.
func (t *Llama2c) EOS() int { return 2 }

// MaxTokenLength is the header's max_token_length.
func (t *Llama2c) MaxTokenLength() int { return t.maxTokenLen }

// Piece returns the stored text of id ("" if out of range).
func (t *Llama2c) Piece(id int) string {
	if id < 0 || id >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// Score returns the merge score of id (0 if out of range).
func (t *Llama2c) Score(id int) float32 {
	if id < 0 || id >= len(t.scores) {
		return 0
	}
	return t.scores[id]
}

// TokenID implements Tokenizer.
func (t *Llama2c) TokenID(piece string) (int, bool) {
	id, ok := t.index[piece]
	return id, ok
}

// mergeable reports whether id may be the result of a merge or a codepoint
// lookup: only normal pieces, never <unk>/BOS/EOS or byte tokens. llama2.c
// itself looks every piece up, but SentencePiece (which the ids must match)
// never produces control or byte tokens from text, and this keeps text such
// as "<0x41>" from turning into the byte "A".
func (t *Llama2c) mergeable(id int) bool {
	if id < 3 {
		return false
	}
	return !t.byteTokens || id > 258
}

func (t *Llama2c) lookup(s string) (int, bool) {
	id, ok := t.index[s]
	if !ok || !t.mergeable(id) {
		return 0, false
	}
	return id, true
}

// appendBytes appends the byte-fallback ids of s, or <unk> (0) per byte if
// the vocabulary has no byte tokens.
func (t *Llama2c) appendBytes(ids []int, s string) []int {
	for i := 0; i < len(s); i++ {
		if t.byteTokens {
			ids = append(ids, int(s[i])+3)
		} else {
			ids = append(ids, 0)
		}
	}
	return ids
}

// Encode implements Tokenizer with llama2.c's algorithm: a " " dummy prefix
// for non-empty text, one token per UTF-8 codepoint (byte fallback when the
// codepoint is not a piece), then repeated merging of the adjacent pair
// whose concatenation is the highest-scoring piece (leftmost on ties).
func (t *Llama2c) Encode(text string) []int {
	if text == "" {
		return []int{}
	}
	// The dummy prefix is looked up like any other codepoint, so this is
	// encoding " " + text, except that llama2.c never groups continuation
	// bytes at the start of text with the prefix: that first chunk is
	// encoded with a forced group boundary and not cached.
	text = " " + text
	glued := text[1]&0xC0 == 0x80
	if !t.splitSpace {
		return t.encodeChunk(text, glued)
	}
	ids := make([]int, 0, len(text)/3)
	splitBefore(text, " ", func(chunk string) {
		if glued {
			ids = append(ids, t.encodeChunk(chunk, true)...)
			glued = false
			return
		}
		ids = t.cache.encode(chunk, ids, t.encodeCached)
	})
	return ids
}

func (t *Llama2c) encodeCached(text string) []int { return t.encodeChunk(text, false) }

// encodeChunk encodes text; cut1 forces a codepoint-group boundary after
// the first byte (the dummy prefix).
func (t *Llama2c) encodeChunk(text string, cut1 bool) []int {
	ids := make([]int, 0, len(text))
	// Group bytes as llama2.c does: a new group starts at every byte that is
	// not a continuation byte (10xxxxxx), and holds at most 4 bytes.
	for i := 0; i < len(text); {
		j := i + 1
		for j < len(text) && text[j]&0xC0 == 0x80 && j-i < 4 && !(cut1 && j == 1) {
			j++
		}
		if id, ok := t.lookup(text[i:j]); ok {
			ids = append(ids, id)
		} else {
			ids = t.appendBytes(ids, text[i:j])
		}
		i = j
	}
	buf := make([]byte, 0, 64)
	return mergeSymbols(ids, func(a, b int) (int, float64, bool) {
		buf = append(append(buf[:0], t.pieces[a]...), t.pieces[b]...)
		id, ok := t.lookup(string(buf))
		if !ok || !(t.scores[id] > llama2cNoMerge) { // also rejects NaN, as in C
			return 0, 0, false
		}
		return id, -float64(t.scores[id]), true
	})
}

// DecodeToken implements Tokenizer exactly as llama2.c's decode(): after
// BOS a leading space is dropped, and "<0xNN>" becomes the byte NN.
// Out-of-range ids give "".
func (t *Llama2c) DecodeToken(prev, id int) string {
	if id < 0 || id >= len(t.pieces) {
		return ""
	}
	piece := t.pieces[id]
	if prev == 1 && strings.HasPrefix(piece, " ") {
		piece = piece[1:]
	}
	if b, ok := parseByteToken(piece); ok {
		return string([]byte{b})
	}
	return piece
}

// Decode implements Tokenizer: the DecodeToken pieces of ids, as if the
// sequence followed BOS (so the dummy-prefix space is dropped), with BOS
// and EOS themselves left out.
func (t *Llama2c) Decode(ids []int) string {
	var sb strings.Builder
	prev := 1
	for _, id := range ids {
		if id != 1 && id != 2 {
			sb.WriteString(t.DecodeToken(prev, id))
		}
		prev = id
	}
	return sb.String()
}
