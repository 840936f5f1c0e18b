package data

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/gopeft/gopeft/tokenizer"
)

// Encoder tokenizes conversations through a chat template.
type Encoder struct {
	tok      tokenizer.Tokenizer
	tmpl     *Template
	dummy    bool // the tokenizer puts a space in front of every encoded text
	maxLen   int
	onPrompt bool
	system   string
}

// EncoderOptions configure an Encoder.
type EncoderOptions struct {
	// MaxLen cuts longer examples to their first MaxLen tokens (0: no
	// limit). An example whose response tokens are all cut is dropped.
	MaxLen int
	// TrainOnPrompt puts labels on the prompt tokens too.
	TrainOnPrompt bool
	// System replaces every conversation's system prompt when not "".
	System string
}

// NewEncoder returns an Encoder for tok and the template t.
func NewEncoder(tok tokenizer.Tokenizer, t *Template, o EncoderOptions) (*Encoder, error) {
	if tok == nil {
		return nil, fmt.Errorf("data: NewEncoder: nil tokenizer")
	}
	if t == nil {
		return nil, fmt.Errorf("data: NewEncoder: nil template")
	}
	if o.MaxLen < 0 {
		return nil, fmt.Errorf("data: NewEncoder: MaxLen %d is negative", o.MaxLen)
	}
	return &Encoder{tok: tok, tmpl: t, dummy: addsDummyPrefix(tok), maxLen: o.MaxLen, onPrompt: o.TrainOnPrompt, system: o.System}, nil
}

// Template returns the encoder's template.
func (e *Encoder) Template() *Template { return e.tmpl }

// addsDummyPrefix reports whether tok encodes "a" as " a" (SentencePiece's
// add_dummy_prefix), judged from the raw token texts.
func addsDummyPrefix(tok tokenizer.Tokenizer) bool {
	var sb strings.Builder
	for _, id := range tok.Encode("a") {
		sb.WriteString(tok.DecodeToken(-1, id))
	}
	return sb.String() == " a"
}

// encodeText encodes one text segment; a leading space is left to the
// dummy prefix when the tokenizer adds one (see the package doc).
func (e *Encoder) encodeText(s string) []int {
	if e.dummy && strings.HasPrefix(s, " ") {
		s = s[1:]
	}
	return e.tok.Encode(s)
}

// ids tokenizes the segments; resp[i] tells whether ids[i] is response.
func (e *Encoder) ids(segs []segment) (ids []int, resp []bool) {
	for _, s := range segs {
		var add []int
		switch s.kind {
		case BOSPart:
			if b := e.tok.BOS(); b >= 0 {
				add = []int{b}
			}
		case EOSPart:
			// Skip a second EOS when the text before already ended with it
			// (ChatML's <|im_end|> is the EOS of ChatML vocabularies).
			if x := e.tok.EOS(); x >= 0 && (len(ids) == 0 || ids[len(ids)-1] != x) {
				add = []int{x}
			}
		default:
			add = e.encodeText(s.text)
		}
		ids = append(ids, add...)
		for range add {
			resp = append(resp, s.response)
		}
	}
	return ids, resp
}

// Encode tokenizes c. ok is false when the example has no trainable token
// (every response token was cut by MaxLen): the caller drops it.
// truncated reports that MaxLen cut the example.
func (e *Encoder) Encode(c Conversation) (ex Example, truncated, ok bool, err error) {
	if len(c.Turns) == 0 {
		return Example{}, false, false, fmt.Errorf("data: %s: conversation has no turns", c.Source)
	}
	ids, resp := e.ids(e.tmpl.segments(c, e.system, false))
	if e.maxLen > 0 && len(ids) > e.maxLen {
		ids, resp, truncated = ids[:e.maxLen], resp[:e.maxLen], true
	}
	labels := make([]int, len(ids))
	kept := 0
	for i, id := range ids {
		labels[i] = IgnoreIndex
		if resp[i] {
			kept++
		}
		if resp[i] || e.onPrompt {
			labels[i] = id
		}
	}
	ex = Example{IDs: ids, Labels: labels, Source: c.Source}
	return ex, truncated, kept > 0 && ex.Targets() > 0, nil
}

// Prompt returns the ids a generator starts from: c rendered up to the
// point where the last turn's answer would begin (its Assistant text is
// ignored). MaxLen does not apply.
func (e *Encoder) Prompt(c Conversation) []int {
	ids, _ := e.ids(e.tmpl.segments(c, e.system, true))
	return ids
}

// EncodeAll encodes conversations, dropping and counting those left
// without trainable tokens, and adds the counts to st.
func (e *Encoder) EncodeAll(convs []Conversation, st *Stats) ([]Example, error) {
	out := make([]Example, 0, len(convs))
	for _, c := range convs {
		ex, trunc, ok, err := e.Encode(c)
		if err != nil {
			return nil, err
		}
		if trunc {
			st.Truncated++
		}
		if !ok {
			st.Dropped++
			continue
		}
		st.count(ex)
		out = append(out, ex)
	}
	return out, nil
}

// Document is one text of a plain-text corpus.
type Document struct {
	Text   string
	Source string
}

// PackText tokenizes docs (BOS in front of each; no EOS, as llama2.c's
// pretokenizer) into one stream and cuts it into windows of seqLen tokens.
// Consecutive windows share one token (stride seqLen-1): since the label at
// a window's first position is never a target, every token of the stream
// but the first is a target exactly once. Labels equal IDs. The last window
// may be shorter; a window needs at least 2 tokens.
func PackText(docs []Document, tok tokenizer.Tokenizer, seqLen int, st *Stats) ([]Example, error) {
	if seqLen < 2 {
		return nil, fmt.Errorf("data: PackText: sequence length %d, want at least 2", seqLen)
	}
	var stream []int
	starts := make([]int, 0, len(docs)) // stream offset of each document
	for _, d := range docs {
		starts = append(starts, len(stream))
		if b := tok.BOS(); b >= 0 {
			stream = append(stream, b)
		}
		stream = append(stream, tok.Encode(d.Text)...)
	}
	var out []Example
	for start := 0; start+1 < len(stream); start += seqLen - 1 {
		end := min(start+seqLen, len(stream))
		ids := slices.Clone(stream[start:end])
		doc := sort.Search(len(starts), func(i int) bool { return starts[i] > start }) - 1
		ex := Example{IDs: ids, Labels: slices.Clone(ids), Source: docs[max(doc, 0)].Source}
		st.count(ex)
		out = append(out, ex)
		if end == len(stream) {
			break
		}
	}
	return out, nil
}

// SplitText splits text into a training part and a held-out part made of
// the last evalFraction of its bytes (0 ≤ evalFraction ≤ 1). The cut moves
// forward to just after the next newline when one lies within 1% of the
// text, and always to a UTF-8 character boundary.
func SplitText(text string, evalFraction float64) (train, eval string, err error) {
	if !(evalFraction >= 0 && evalFraction <= 1) {
		return "", "", fmt.Errorf("data: SplitText: eval fraction %v outside [0, 1]", evalFraction)
	}
	train, eval = cutText(text, len(text)-int(float64(len(text))*evalFraction+0.5), len(text)/100)
	return train, eval, nil
}

// cutText splits text near byte offset cut: after the first newline within
// slack bytes at or after it, else at the next character boundary.
func cutText(text string, cut, slack int) (string, string) {
	if cut <= 0 || cut >= len(text) {
		cut = min(max(cut, 0), len(text))
		return text[:cut], text[cut:]
	}
	if i := strings.IndexByte(text[cut:], '\n'); i >= 0 && i <= slack && cut+i+1 < len(text) {
		cut += i + 1
	}
	for cut < len(text) && !utf8.RuneStart(text[cut]) {
		cut++
	}
	return text[:cut], text[cut:]
}

// SplitExamples returns the first and the last evalFraction of examples.
func SplitExamples(examples []Example, evalFraction float64) (train, eval []Example, err error) {
	if !(evalFraction >= 0 && evalFraction <= 1) {
		return nil, nil, fmt.Errorf("data: SplitExamples: eval fraction %v outside [0, 1]", evalFraction)
	}
	train, eval = splitTail(examples, evalFraction)
	return train, eval, nil
}
