package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// BPE is a Hugging Face style BPE tokenizer: merges applied by rank, with
// either byte-level words (GPT-2, LLaMA-3) or SentencePiece-style words with
// byte fallback (LLaMA-2, Mistral). Build one with LoadHF or LoadGPT2.
type BPE struct {
	name   string         // file it came from, for messages
	vocab  map[string]int // model vocabulary (not added tokens)
	pieces []string       // id -> piece, added tokens included
	merges map[uint64]bpeMerge

	byteLevel       bool // words are mapped byte -> character before BPE
	decodeByteLevel bool // the decoder is ByteLevel
	byteIDs         [256]int
	byteFallback    bool
	fallback        [256]int // id of <0xNN>, -1 if absent
	unk             int
	fuseUnk         bool
	ignoreMerges    bool

	normalizers []normStep
	preTok      []preStep

	added      []addedToken       // sorted longest first, for splitting
	addedByID  map[int]addedToken // every added token
	addedFirst [256][]int         // first byte -> indices into added

	bos, eos int

	// Decoding.
	spaceMark  string // SentencePiece-style: piece text that means a space ("▁")
	stripStart int    // SentencePiece-style: leading spaces removed from the sequence

	splitMark string // if set, words are cut before this mark (see canSplitBefore)
	cache     wordCache
}

type bpeMerge struct {
	rank int32
	id   int32
}

type addedToken struct {
	id                         int
	content                    string
	special                    bool
	lstrip, rstrip, singleWord bool
}

// normStep is one normalizer.
type normStep func(s string) string

func pairKey(a, b int) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// VocabSize implements Tokenizer.
func (t *BPE) VocabSize() int { return len(t.pieces) }

// BOS implements Tokenizer.
func (t *BPE) BOS() int { return t.bos }

// EOS implements Tokenizer.
func (t *BPE) EOS() int { return t.eos }

// ByteLevel reports whether this is a byte-level BPE.
func (t *BPE) ByteLevel() bool { return t.byteLevel }

// Piece returns the vocabulary text of id ("" if unknown).
func (t *BPE) Piece(id int) string {
	if id < 0 || id >= len(t.pieces) {
		return ""
	}
	return t.pieces[id]
}

// TokenID implements Tokenizer; added tokens are included.
func (t *BPE) TokenID(piece string) (int, bool) {
	if id, ok := t.vocab[piece]; ok {
		return id, true
	}
	for _, a := range t.added {
		if a.content == piece {
			return a.id, true
		}
	}
	return 0, false
}

// IsSpecial reports whether id is an added token marked special.
func (t *BPE) IsSpecial(id int) bool {
	a, ok := t.addedByID[id]
	return ok && a.special
}

// Encode implements Tokenizer: added tokens found in text are split out
// first, then each remaining segment is normalized, pre-tokenized and
// BPE-encoded word by word.
func (t *BPE) Encode(text string) []int {
	out := []int{}
	t.splitAdded(text, func(s, e int, a *addedToken) {
		if a == nil {
			out = t.encodeSegment(text[s:e], s == 0, out)
		} else {
			out = append(out, a.id)
		}
	})
	return out
}

// splitAdded calls f for each plain segment (a == nil) and each added token
// of text, in order. Matching is leftmost-longest on the raw text.
func (t *BPE) splitAdded(text string, f func(s, e int, a *addedToken)) {
	if len(t.added) == 0 {
		if text != "" {
			f(0, len(text), nil)
		}
		return
	}
	seg := 0 // start of the pending plain segment
	for i := 0; i < len(text); {
		var hit *addedToken
		for _, k := range t.addedFirst[text[i]] {
			a := &t.added[k]
			if strings.HasPrefix(text[i:], a.content) && (!a.singleWord || isWordBoundary(text, i, i+len(a.content))) {
				hit = a
				break
			}
		}
		if hit == nil {
			i++
			continue
		}
		s, e := i, i+len(hit.content)
		if hit.lstrip {
			for s > seg {
				r, w := utf8.DecodeLastRuneInString(text[seg:s])
				if !unicode.IsSpace(r) {
					break
				}
				s -= w
			}
		}
		if hit.rstrip {
			for e < len(text) {
				r, w := utf8.DecodeRuneInString(text[e:])
				if !unicode.IsSpace(r) {
					break
				}
				e += w
			}
		}
		if s > seg {
			f(seg, s, nil)
		}
		f(s, e, hit)
		seg, i = e, e
	}
	if seg < len(text) {
		f(seg, len(text), nil)
	}
}

func isWordBoundary(text string, s, e int) bool {
	isWord := func(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }
	if s > 0 {
		if r, _ := utf8.DecodeLastRuneInString(text[:s]); isWord(r) {
			return false
		}
	}
	if e < len(text) {
		if r, _ := utf8.DecodeRuneInString(text[e:]); isWord(r) {
			return false
		}
	}
	return true
}

func (t *BPE) encodeSegment(s string, atStart bool, out []int) []int {
	for _, n := range t.normalizers {
		s = n(s)
	}
	words := []string{s}
	for _, p := range t.preTok {
		words = p(words, atStart)
	}
	for _, w := range words {
		out = t.encodeWord(w, out)
	}
	return out
}

// encodeWord appends the ids of one pre-tokenized word.
func (t *BPE) encodeWord(w string, out []int) []int {
	if t.splitMark == "" {
		return t.cache.encode(w, out, t.bpeWord)
	}
	splitBefore(w, t.splitMark, func(chunk string) {
		out = t.cache.encode(chunk, out, t.bpeWord)
	})
	return out
}

func (t *BPE) bpeWord(w string) []int {
	if t.ignoreMerges {
		key := w
		if t.byteLevel {
			key = byteLevelEncode(w)
		}
		if id, ok := t.vocab[key]; ok {
			return []int{id}
		}
	}
	var ids []int
	if t.byteLevel {
		ids = make([]int, 0, len(w))
		for i := 0; i < len(w); i++ {
			if id := t.byteIDs[w[i]]; id >= 0 {
				ids = append(ids, id)
			} else {
				ids = t.appendUnk(ids)
			}
		}
	} else {
		ids = make([]int, 0, len(w))
		for i := 0; i < len(w); {
			_, n := utf8.DecodeRuneInString(w[i:])
			ch := w[i : i+n]
			i += n
			if id, ok := t.vocab[ch]; ok {
				ids = append(ids, id)
				continue
			}
			if t.byteFallback && t.hasFallback(ch) {
				for k := 0; k < len(ch); k++ {
					ids = append(ids, t.fallback[ch[k]])
				}
				continue
			}
			ids = t.appendUnk(ids)
		}
	}
	return mergeSymbols(ids, func(a, b int) (int, float64, bool) {
		m, ok := t.merges[pairKey(a, b)]
		return int(m.id), float64(m.rank), ok
	})
}

func (t *BPE) hasFallback(ch string) bool {
	for k := 0; k < len(ch); k++ {
		if t.fallback[ch[k]] < 0 {
			return false
		}
	}
	return true
}

// appendUnk adds <unk> (fused with a preceding <unk> when fuse_unk is
// set); without an unk token the character is dropped, as in Hugging Face.
func (t *BPE) appendUnk(ids []int) []int {
	if t.unk < 0 {
		return ids
	}
	if t.fuseUnk && len(ids) > 0 && ids[len(ids)-1] == t.unk {
		return ids
	}
	return append(ids, t.unk)
}

// tokenBytes appends the decoded bytes of one token.
func (t *BPE) tokenBytes(dst []byte, id int) []byte {
	if id < 0 || id >= len(t.pieces) {
		return dst
	}
	if a, ok := t.addedByID[id]; ok {
		return append(dst, a.content...)
	}
	piece := t.pieces[id]
	if t.byteLevel {
		return byteLevelDecode(dst, piece)
	}
	if t.byteFallback {
		if b, ok := parseByteToken(piece); ok {
			return append(dst, b)
		}
	}
	if t.spaceMark != "" {
		return append(dst, strings.ReplaceAll(piece, t.spaceMark, " ")...)
	}
	return append(dst, piece...)
}

// DecodeToken implements Tokenizer. For SentencePiece-style vocabularies a
// leading space is dropped after BOS.
func (t *BPE) DecodeToken(prev, id int) string {
	b := t.tokenBytes(nil, id)
	if !t.byteLevel && t.stripStart > 0 && prev == t.bos && prev >= 0 && len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	return string(b)
}

// Decode implements Tokenizer. Special added tokens are skipped (as
// skip_special_tokens=True); for SentencePiece-style vocabularies the
// decoder's Strip removes the leading space of the result.
func (t *BPE) Decode(ids []int) string {
	var buf []byte
	for _, id := range ids {
		if t.IsSpecial(id) || id == t.bos || id == t.eos {
			continue
		}
		buf = t.tokenBytes(buf, id)
	}
	if !t.byteLevel {
		for k := 0; k < t.stripStart && len(buf) > 0 && buf[0] == ' '; k++ {
			buf = buf[1:]
		}
	}
	return string(buf)
}

// setAdded installs the added tokens: sorted longest first (then by id) so
// that splitting is leftmost-longest.
func (t *BPE) setAdded(list []addedToken) {
	t.addedByID = make(map[int]addedToken, len(list))
	t.added = nil
	for _, a := range list {
		t.addedByID[a.id] = a
		if a.content != "" {
			t.added = append(t.added, a)
		}
	}
	sort.SliceStable(t.added, func(i, j int) bool {
		if len(t.added[i].content) != len(t.added[j].content) {
			return len(t.added[i].content) > len(t.added[j].content)
		}
		return t.added[i].id < t.added[j].id
	})
	for i := range t.addedFirst {
		t.addedFirst[i] = nil
	}
	for k, a := range t.added {
		c := a.content[0]
		t.addedFirst[c] = append(t.addedFirst[c], k)
	}
}

// finish fills the lookup tables that depend on vocab and mode.
func (t *BPE) finish() {
	for b := range 256 {
		t.byteIDs[b] = -1
		if id, ok := t.vocab[byteLevelChars[b]]; ok {
			t.byteIDs[b] = id
		}
		t.fallback[b] = -1
		if id, ok := t.vocab[byteToken(byte(b))]; ok {
			t.fallback[b] = id
		}
	}
	// "▁" must be a piece itself, or runs of unknown characters could be
	// fused into one <unk> across a cut.
	if _, ok := t.vocab["▁"]; ok && !t.byteLevel && canSplitBefore("▁", t.pieces) {
		t.splitMark = "▁"
	}
	t.cache.reset()
}
