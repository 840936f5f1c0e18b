package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/gopeft/gopeft/internal/safefile"
)

// maxTokenID bounds ids read from files, so a corrupt file cannot make us
// allocate a huge id table.
const maxTokenID = 1 << 24

type hfFile struct {
	AddedTokens  []hfAddedToken  `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        json.RawMessage `json:"model"`
}

type hfAddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	Lstrip     bool   `json:"lstrip"`
	Rstrip     bool   `json:"rstrip"`
	Special    bool   `json:"special"`
}

type hfModel struct {
	Type                    string          `json:"type"`
	Vocab                   map[string]int  `json:"vocab"`
	Merges                  json.RawMessage `json:"merges"`
	UnkToken                *string         `json:"unk_token"`
	ByteFallback            bool            `json:"byte_fallback"`
	FuseUnk                 bool            `json:"fuse_unk"`
	IgnoreMerges            bool            `json:"ignore_merges"`
	Dropout                 *float64        `json:"dropout"`
	ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
}

// hfComponent holds the fields of any normalizer, pre-tokenizer or decoder
// this package understands; Type says which.
type hfComponent struct {
	Type string `json:"type"`

	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	Decoders      []json.RawMessage `json:"decoders"`

	Prepend *string    `json:"prepend"`
	Pattern *hfPattern `json:"pattern"`
	Content *string    `json:"content"`

	Replacement      *string `json:"replacement"`
	PrependScheme    *string `json:"prepend_scheme"`
	AddPrefixSpace   *bool   `json:"add_prefix_space"`
	Split            *bool   `json:"split"`
	UseRegex         *bool   `json:"use_regex"`
	Behavior         string  `json:"behavior"`
	Invert           bool    `json:"invert"`
	IndividualDigits bool    `json:"individual_digits"`

	Start int `json:"start"`
	Stop  int `json:"stop"`
}

type hfPattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func isNull(m json.RawMessage) bool {
	return len(bytes.TrimSpace(m)) == 0 || string(bytes.TrimSpace(m)) == "null"
}

// LoadHF reads a Hugging Face tokenizer.json with a BPE model. BOS and EOS
// come from tokenizer_config.json beside it when present, else from the
// usual names of the added tokens.
func LoadHF(path string) (*BPE, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := ParseHF(data, path)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(filepath.Dir(path), "tokenizer_config.json")
	cfg, err := safefile.ReadFile(cfgPath)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if err := t.applyConfig(cfg, cfgPath); err != nil {
		return nil, err
	}
	return t, nil
}

// applyConfig takes bos_token and eos_token from a tokenizer_config.json.
func (t *BPE) applyConfig(data []byte, name string) error {
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("tokenizer: %s: %w", name, err)
	}
	for _, f := range []struct {
		key string
		dst *int
	}{{"bos_token", &t.bos}, {"eos_token", &t.eos}} {
		key, dst := f.key, f.dst
		raw, ok := cfg[key]
		if !ok {
			continue
		}
		if isNull(raw) {
			*dst = -1
			continue
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			var obj struct {
				Content string `json:"content"`
			}
			if err := json.Unmarshal(raw, &obj); err != nil {
				return errKey(name, key, "want a string or an object with content")
			}
			s = obj.Content
		}
		id, ok := t.TokenID(s)
		if !ok {
			return errKey(name, key, "token %q is not in the vocabulary", s)
		}
		*dst = id
	}
	return nil
}

// ParseHF parses the bytes of a tokenizer.json; name is used in errors.
func ParseHF(data []byte, name string) (*BPE, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", name, err)
	}
	if isNull(f.Model) {
		return nil, errKey(name, "model", "missing")
	}
	var m hfModel
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, errKey(name, "model", "%v", err)
	}
	if m.Type != "BPE" && !(m.Type == "" && !isNull(m.Merges)) {
		return nil, errKey(name, "model.type", "%q is not supported (only BPE)", m.Type)
	}
	if m.Dropout != nil && *m.Dropout > 0 {
		return nil, errKey(name, "model.dropout", "BPE dropout is not supported")
	}
	if m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" {
		return nil, errKey(name, "model.continuing_subword_prefix", "not supported")
	}
	if m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "" {
		return nil, errKey(name, "model.end_of_word_suffix", "not supported")
	}
	if len(m.Vocab) == 0 {
		return nil, errKey(name, "model.vocab", "missing or empty")
	}
	merges, err := parseMerges(m.Merges)
	if err != nil {
		return nil, errKey(name, "model.merges", "%v", err)
	}
	t := &BPE{
		name:         name,
		vocab:        m.Vocab,
		byteFallback: m.ByteFallback,
		fuseUnk:      m.FuseUnk,
		ignoreMerges: m.IgnoreMerges,
		unk:          -1,
		bos:          -1,
		eos:          -1,
	}
	var added []addedToken
	for i, a := range f.AddedTokens {
		if a.ID < 0 || a.ID >= maxTokenID {
			return nil, errKey(name, fmt.Sprintf("added_tokens[%d].id", i), "%d out of range", a.ID)
		}
		added = append(added, addedToken{id: a.ID, content: a.Content, special: a.Special,
			lstrip: a.Lstrip, rstrip: a.Rstrip, singleWord: a.SingleWord})
	}
	if err := t.setVocab(merges, added); err != nil {
		return nil, err
	}
	if m.UnkToken != nil {
		id, ok := t.TokenID(*m.UnkToken)
		if !ok {
			return nil, errKey(name, "model.unk_token", "%q is not in the vocabulary", *m.UnkToken)
		}
		t.unk = id
	}
	if err := t.parseNormalizer(f.Normalizer, "normalizer"); err != nil {
		return nil, err
	}
	if err := t.parsePreTokenizer(f.PreTokenizer, "pre_tokenizer"); err != nil {
		return nil, err
	}
	if isNull(f.Decoder) {
		return nil, errKey(name, "decoder", "missing: cannot tell how to decode")
	}
	if err := t.parseDecoder(f.Decoder, "decoder"); err != nil {
		return nil, err
	}
	if t.byteLevel != t.decodeByteLevel {
		return nil, errKey(name, "decoder", "byte-level decoder and pre_tokenizer must go together")
	}
	t.guessBOSEOS()
	t.finish()
	return t, nil
}

// setVocab builds the id table (vocabulary plus added tokens) and resolves
// merges to ids; rank is the position in the list (a later duplicate wins,
// as in Hugging Face).
func (t *BPE) setVocab(merges [][2]string, added []addedToken) error {
	n := 0
	for piece, id := range t.vocab {
		if id < 0 || id >= maxTokenID {
			return errKey(t.name, "model.vocab", "id %d of %q out of range", id, piece)
		}
		n = max(n, id+1)
	}
	for _, a := range added {
		n = max(n, a.id+1)
	}
	// Real vocabularies are dense; a sparse one is corrupt (and would make
	// us allocate for ids that are not there).
	if n > 2*(len(t.vocab)+len(added))+1024 {
		return errKey(t.name, "model.vocab", "ids up to %d for %d tokens: too sparse", n-1, len(t.vocab)+len(added))
	}
	t.pieces = make([]string, n)
	for piece, id := range t.vocab {
		t.pieces[id] = piece
	}
	for _, a := range added {
		t.pieces[a.id] = a.content
	}
	t.setAdded(added)
	t.merges = make(map[uint64]bpeMerge, len(merges))
	for i, mg := range merges {
		a, okA := t.vocab[mg[0]]
		b, okB := t.vocab[mg[1]]
		ab, okAB := t.vocab[mg[0]+mg[1]]
		if !okA || !okB || !okAB {
			return errKey(t.name, fmt.Sprintf("model.merges[%d]", i), "%q %q: token not in vocabulary", mg[0], mg[1])
		}
		t.merges[pairKey(a, b)] = bpeMerge{rank: int32(i), id: int32(ab)}
	}
	return nil
}

// parseMerges accepts both ["a b", ...] and [["a","b"], ...].
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		out := make([][2]string, len(strs))
		for i, s := range strs {
			parts := strings.Split(s, " ")
			if len(parts) != 2 {
				return nil, fmt.Errorf("entry %d %q: want two tokens separated by one space", i, s)
			}
			out[i] = [2]string{parts[0], parts[1]}
		}
		return out, nil
	}
	var pairs [][]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("want a list of \"a b\" strings or [a, b] pairs: %v", err)
	}
	out := make([][2]string, len(pairs))
	for i, p := range pairs {
		if len(p) != 2 {
			return nil, fmt.Errorf("entry %d has %d tokens, want 2", i, len(p))
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

func (t *BPE) component(raw json.RawMessage, key string) (hfComponent, error) {
	var c hfComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, errKey(t.name, key, "%v", err)
	}
	return c, nil
}

func (t *BPE) parseNormalizer(raw json.RawMessage, key string) error {
	if isNull(raw) {
		return nil
	}
	c, err := t.component(raw, key)
	if err != nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for i, sub := range c.Normalizers {
			if err := t.parseNormalizer(sub, fmt.Sprintf("%s.normalizers[%d]", key, i)); err != nil {
				return err
			}
		}
	case "Prepend":
		if c.Prepend == nil {
			return errKey(t.name, key+".prepend", "missing")
		}
		p := *c.Prepend
		t.normalizers = append(t.normalizers, func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		})
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil || c.Content == nil {
			return errKey(t.name, key, "Replace: only a String pattern with a content is supported")
		}
		from, to := *c.Pattern.String, *c.Content
		if from == "" {
			return errKey(t.name, key+".pattern", "empty pattern")
		}
		t.normalizers = append(t.normalizers, func(s string) string { return strings.ReplaceAll(s, from, to) })
	default:
		return errKey(t.name, key+".type", "normalizer %q is not supported", c.Type)
	}
	return nil
}

func (t *BPE) parsePreTokenizer(raw json.RawMessage, key string) error {
	if isNull(raw) {
		return nil
	}
	c, err := t.component(raw, key)
	if err != nil {
		return err
	}
	if t.byteLevel && c.Type != "Sequence" {
		// Byte-level mapping is applied to whole words at BPE time, which
		// is only right if nothing splits after it.
		return errKey(t.name, key+".type", "%q after ByteLevel is not supported", c.Type)
	}
	switch c.Type {
	case "Sequence":
		for i, sub := range c.Pretokenizers {
			if err := t.parsePreTokenizer(sub, fmt.Sprintf("%s.pretokenizers[%d]", key, i)); err != nil {
				return err
			}
		}
	case "Split":
		if c.Invert {
			return errKey(t.name, key+".invert", "inverted Split is not supported")
		}
		b, ok := parseBehavior(c.Behavior)
		if !ok {
			return errKey(t.name, key+".behavior", "%q is not supported", c.Behavior)
		}
		var m matcher
		switch {
		case c.Pattern != nil && c.Pattern.Regex != nil:
			m, err = regexMatcher(*c.Pattern.Regex)
			if err != nil {
				return errKey(t.name, key+".pattern.Regex", "%v", err)
			}
		case c.Pattern != nil && c.Pattern.String != nil:
			m = literalMatcher(*c.Pattern.String)
		default:
			return errKey(t.name, key+".pattern", "want {\"Regex\": ...} or {\"String\": ...}")
		}
		t.preTok = append(t.preTok, func(w []string, _ bool) []string { return splitWords(w, m, b) })
	case "Digits":
		m := digitsMatcher(c.IndividualDigits)
		t.preTok = append(t.preTok, func(w []string, _ bool) []string { return splitWords(w, m, splitIsolated) })
	case "ByteLevel":
		if c.AddPrefixSpace == nil || *c.AddPrefixSpace {
			t.preTok = append(t.preTok, func(words []string, _ bool) []string {
				for i, w := range words {
					if !strings.HasPrefix(w, " ") {
						words[i] = " " + w
					}
				}
				return words
			})
		}
		if c.UseRegex == nil || *c.UseRegex {
			m, err := regexMatcher(gpt2Pattern)
			if err != nil {
				return errKey(t.name, key, "%v", err)
			}
			t.preTok = append(t.preTok, func(w []string, _ bool) []string { return splitWords(w, m, splitIsolated) })
		}
		t.byteLevel = true
	case "Metaspace":
		repl, scheme, split := metaspaceParams(c)
		t.preTok = append(t.preTok, metaspaceStep(repl, scheme, split))
	default:
		return errKey(t.name, key+".type", "pre-tokenizer %q is not supported", c.Type)
	}
	return nil
}

// metaspaceParams reads a Metaspace pre-tokenizer or decoder, old
// (add_prefix_space) or new (prepend_scheme, split) style.
func metaspaceParams(c hfComponent) (repl, scheme string, split bool) {
	repl = "▁"
	if c.Replacement != nil && *c.Replacement != "" {
		repl = *c.Replacement
	}
	scheme = "always"
	if c.AddPrefixSpace != nil && !*c.AddPrefixSpace {
		scheme = "never"
	}
	if c.PrependScheme != nil {
		scheme = *c.PrependScheme
	}
	split = c.Split == nil || *c.Split
	return repl, scheme, split
}

func (t *BPE) parseDecoder(raw json.RawMessage, key string) error {
	c, err := t.component(raw, key)
	if err != nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for i, sub := range c.Decoders {
			if err := t.parseDecoder(sub, fmt.Sprintf("%s.decoders[%d]", key, i)); err != nil {
				return err
			}
		}
	case "ByteLevel":
		t.decodeByteLevel = true
	case "Metaspace":
		repl, scheme, _ := metaspaceParams(c)
		t.spaceMark = repl
		if scheme != "never" {
			t.stripStart = 1
		}
	case "Replace":
		if c.Pattern == nil || c.Pattern.String == nil || c.Content == nil || *c.Content != " " || *c.Pattern.String == "" {
			return errKey(t.name, key, "Replace decoder: only replacing a String with \" \" is supported")
		}
		t.spaceMark = *c.Pattern.String
	case "ByteFallback", "Fuse":
		// Byte tokens are always turned into bytes and pieces always joined.
	case "Strip":
		if c.Content == nil || *c.Content != " " || c.Stop != 0 || c.Start < 0 {
			return errKey(t.name, key, "Strip decoder: only stripping leading spaces is supported")
		}
		t.stripStart = c.Start
	default:
		return errKey(t.name, key+".type", "decoder %q is not supported", c.Type)
	}
	return nil
}

// guessBOSEOS picks BOS/EOS from the usual added-token names; LoadHF
// overrides them from tokenizer_config.json.
func (t *BPE) guessBOSEOS() {
	pick := func(names ...string) int {
		for _, n := range names {
			if id, ok := t.TokenID(n); ok {
				return id
			}
		}
		return -1
	}
	t.bos = pick("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "<|endoftext|>")
	t.eos = pick("</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>")
}
