package tokenizer

import (
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// FuzzFastPreTokenizers checks the hand-written GPT-2 and LLaMA-3 scanners
// against regexp2 running the same patterns.
func FuzzFastPreTokenizers(f *testing.F) {
	for _, s := range []string{
		"Hello world", "  leading spaces and\ttabs\nnew lines\n\n", "naïve café — déjà vu",
		"数字 1234567890 and 3.14159", "emoji 🙂🚀 fallback", "Don't stop-believing: it's 2026!",
		"I'LL 'Re 'vE \r\n \r\n  x", "!!\n\n a", " \u00a0\u2028x\u0085y", "\xff\x80 'sa", "\t\t\n \t", "ſ'ſ",
	} {
		f.Add(s)
	}
	var fast, slow [2]matcher
	for k, p := range []string{gpt2Pattern, llama3Pattern} {
		fast[k] = fastMatcher(p)
		var err error
		if slow[k], err = regexp2Matcher(p); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		for k := range fast {
			if got, want := fast[k](s), slow[k](s); !slices.Equal(got, want) {
				t.Errorf("pattern %d on %q:\n got %v\nwant %v", k, s, got, want)
			}
		}
	})
}

// TestFastPreTokenizersAgree runs the comparison of FuzzFastPreTokenizers
// on real text and on random strings drawn from the characters the
// patterns treat specially.
func TestFastPreTokenizersAgree(t *testing.T) {
	texts := []string{shakespeare(t, 30000)}
	if data, err := os.ReadFile(sharedFile(t, "data/text/wiki_demo.txt")); err == nil {
		texts = append(texts, string(data[:min(len(data), 60000)]))
	}
	alphabet := []rune("aZé数1٣½ '\"sStTrReEvVlLmMdD\t\n\r\u00a0\u2028\u0085\u3000!-—🙂ſ\ufeff\u0301")
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3000 {
		r := make([]rune, rng.IntN(12))
		for i := range r {
			r[i] = alphabet[rng.IntN(len(alphabet))]
		}
		texts = append(texts, string(r))
	}
	texts = append(texts, "\xff\xfe 'S\x80x")
	for k, p := range []string{gpt2Pattern, llama3Pattern} {
		fast := fastMatcher(p)
		slow, err := regexp2Matcher(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range texts {
			if got, want := fast(s), slow(s); !slices.Equal(got, want) {
				t.Errorf("pattern %d on %.80q: fast and regexp2 differ", k, s)
			}
		}
	}
}
