package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gopeft/gopeft/internal/safefile"
)

// LoadGPT2 reads the original GPT-2 files: encoder.json (piece -> id) and
// vocab.bpe (a "#version" line, then one "a b" merge a line, best first).
// Text is split with GPT-2's regex and encoded byte-level; as in the
// reference encoder, "<|endoftext|>" in text is plain text, not the
// special token (it is BOS and EOS, id 50256 for GPT-2).
func LoadGPT2(encoderPath, vocabPath string) (*BPE, error) {
	enc, err := safefile.ReadFile(encoderPath)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	bpe, err := safefile.ReadFile(vocabPath)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return ParseGPT2(enc, bpe, encoderPath, vocabPath)
}

// ParseGPT2 parses the contents of encoder.json and vocab.bpe; the names
// are used in errors.
func ParseGPT2(encoder, merges []byte, encoderName, mergesName string) (*BPE, error) {
	t := &BPE{name: encoderName, unk: -1, bos: -1, eos: -1, byteLevel: true, decodeByteLevel: true}
	if err := json.Unmarshal(encoder, &t.vocab); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", encoderName, err)
	}
	if len(t.vocab) == 0 {
		return nil, fmt.Errorf("tokenizer: %s: empty vocabulary", encoderName)
	}
	var pairs [][2]string
	for i, line := range strings.Split(string(merges), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" || (i == 0 && strings.HasPrefix(line, "#")) {
			continue
		}
		a, b, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(b, " ") {
			return nil, fmt.Errorf("tokenizer: %s: line %d: want two tokens separated by one space, got %q", mergesName, i+1, line)
		}
		pairs = append(pairs, [2]string{a, b})
	}
	if err := t.setVocab(pairs, nil); err != nil {
		return nil, fmt.Errorf("%w (merges from %s)", err, mergesName)
	}
	m, err := regexMatcher(gpt2Pattern)
	if err != nil {
		return nil, err
	}
	t.preTok = []preStep{func(w []string, _ bool) []string { return splitWords(w, m, splitIsolated) }}
	if id, ok := t.vocab["<|endoftext|>"]; ok {
		t.bos, t.eos = id, id
	}
	t.finish()
	return t, nil
}
