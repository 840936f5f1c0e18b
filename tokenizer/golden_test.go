package tokenizer

import (
	"slices"
	"testing"
)

var goldenSets = []struct {
	name, golden, path string
}{
	{"llama2c", "tokenizer_llama2.json", "data/tokenizers/llama2/tokenizer.bin"},
	{"spbpe32k", "tokenizer_spbpe32k.json", "data/tokenizers/spbpe32k/tokenizer.json"},
	{"llama3", "tokenizer_llama3.json", "data/tokenizers/llama3/tokenizer.json"},
	{"gpt2", "tokenizer_gpt2.json", "data/tokenizers/gpt2"},
}

// special reports whether Decode leaves id out.
func special(tok Tokenizer, id int) bool {
	if id == tok.BOS() || id == tok.EOS() {
		return true
	}
	b, ok := tok.(*BPE)
	return ok && b.IsSpecial(id)
}

func TestGolden(t *testing.T) {
	for _, set := range goldenSets {
		t.Run(set.name, func(t *testing.T) {
			cases := loadGolden(t, set.golden)
			tok := loadShared(t, set.path)
			for _, c := range cases {
				got := tok.Encode(c.Text)
				if !slices.Equal(got, c.IDs) {
					t.Errorf("Encode(%q)\n got %v\nwant %v", c.Text, got, c.IDs)
				}
				// The reference ids must decode back to the text, unless
				// they hold a special token (which Decode leaves out).
				if slices.ContainsFunc(c.IDs, func(id int) bool { return special(tok, id) }) {
					continue
				}
				if dec := tok.Decode(c.IDs); dec != c.Text {
					t.Errorf("Decode(%v) = %q, want %q", c.IDs, dec, c.Text)
				}
			}
		})
	}
}
