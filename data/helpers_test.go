package data

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"

	"github.com/gopeft/gopeft/tokenizer"
)

// sharedFile returns ../shared/<rel> beside the module root, skipping the
// test when it is missing.
func sharedFile(t testing.TB, rel string) string { return shared.Path(t, rel) }

var (
	tok512Once sync.Once
	tok512     tokenizer.Tokenizer
	tok512Err  error
)

// realTok returns the stories260K llama2.c tokenizer (512 tokens, byte
// fallback, SentencePiece-style dummy prefix).
func realTok(t testing.TB) tokenizer.Tokenizer {
	t.Helper()
	p := sharedFile(t, "data/models/stories260K/tok512.bin")
	tok512Once.Do(func() { tok512, tok512Err = tokenizer.Load(p) })
	if tok512Err != nil {
		t.Fatalf("tokenizer.Load(%s): %v", p, tok512Err)
	}
	return tok512
}

// fakeTok is a byte tokenizer: id = byte+3, BOS 1, EOS 2. With dummy set
// it behaves like SentencePiece and puts a space in front of every
// non-empty text (and Decode drops the first one).
type fakeTok struct{ dummy bool }

func (f fakeTok) Encode(text string) []int {
	if text == "" {
		return []int{}
	}
	if f.dummy {
		text = " " + text
	}
	ids := make([]int, len(text))
	for i := 0; i < len(text); i++ {
		ids[i] = int(text[i]) + 3
	}
	return ids
}

func (f fakeTok) bytes(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		if id >= 3 && id < 259 {
			sb.WriteByte(byte(id - 3))
		}
	}
	return sb.String()
}

func (f fakeTok) Decode(ids []int) string {
	s := f.bytes(ids)
	if f.dummy {
		s = strings.TrimPrefix(s, " ")
	}
	return s
}

func (f fakeTok) DecodeToken(prev, id int) string {
	s := f.bytes([]int{id})
	if f.dummy && prev == 1 {
		s = strings.TrimPrefix(s, " ")
	}
	return s
}

func (f fakeTok) VocabSize() int { return 259 }
func (f fakeTok) BOS() int       { return 1 }
func (f fakeTok) EOS() int       { return 2 }
func (f fakeTok) TokenID(piece string) (int, bool) {
	if len(piece) == 1 {
		return int(piece[0]) + 3, true
	}
	return 0, false
}

// render writes ids as text with <s> and </s> for BOS and EOS.
func (f fakeTok) render(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		switch id {
		case 1:
			sb.WriteString("<s>")
		case 2:
			sb.WriteString("</s>")
		default:
			sb.WriteString(f.bytes([]int{id}))
		}
	}
	return sb.String()
}

// labelled returns the ids at labelled positions, and checks that every
// label is IgnoreIndex or equal to its id.
func labelled(t testing.TB, ex Example) []int {
	t.Helper()
	if len(ex.IDs) != len(ex.Labels) {
		t.Fatalf("%s: %d ids but %d labels", ex.Source, len(ex.IDs), len(ex.Labels))
	}
	var out []int
	for i, l := range ex.Labels {
		if l == IgnoreIndex {
			continue
		}
		if l != ex.IDs[i] {
			t.Fatalf("%s: label %d at %d, id %d", ex.Source, l, i, ex.IDs[i])
		}
		out = append(out, l)
	}
	return out
}

func mustLookup(t testing.TB, name string) *Template {
	t.Helper()
	tm, err := LookupTemplate(name)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func writeTemp(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
