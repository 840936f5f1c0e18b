package eval

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// byteTok is a tokenizer with one token per byte (id = byte + 3), BOS 1,
// EOS 2, so tests can predict token sequences exactly.
type byteTok struct{ noBOS bool }

func (t byteTok) Encode(s string) []int {
	ids := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int(s[i]) + 3
	}
	return ids
}

func (byteTok) Decode(ids []int) string {
	var b []byte
	for _, id := range ids {
		if id >= 3 {
			b = append(b, byte(id-3))
		}
	}
	return string(b)
}
func (t byteTok) DecodeToken(_, id int) string { return t.Decode([]int{id}) }
func (byteTok) VocabSize() int                 { return 259 }
func (t byteTok) BOS() int {
	if t.noBOS {
		return -1
	}
	return 1
}
func (byteTok) EOS() int                   { return 2 }
func (byteTok) TokenID(string) (int, bool) { return 0, false }

// wordTok splits text SentencePiece-style into pieces of leading white
// space plus the following non-space run, assigning ids on first sight.
type wordTok struct {
	mu  sync.Mutex
	ids map[string]int
	pcs []string
}

func newWordTok() *wordTok { return &wordTok{ids: map[string]int{}, pcs: []string{"", "<s>", "</s>"}} }

func (t *wordTok) pieces(s string) []string {
	var out []string
	start := 0
	for i := 1; i <= len(s); i++ {
		// A piece ends before white space that follows non-space.
		if i == len(s) || (s[i] == ' ' || s[i] == '\n') && s[i-1] != ' ' && s[i-1] != '\n' {
			out = append(out, s[start:i])
			start = i
		}
	}
	if len(s) == 0 {
		return nil
	}
	return out
}

func (t *wordTok) Encode(s string) []int {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ids []int
	for _, p := range t.pieces(s) {
		id, ok := t.ids[p]
		if !ok {
			id = len(t.pcs)
			t.ids[p] = id
			t.pcs = append(t.pcs, p)
		}
		ids = append(ids, id)
	}
	return ids
}

func (t *wordTok) Decode(ids []int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	for _, id := range ids {
		if id > 2 && id < len(t.pcs) {
			b.WriteString(t.pcs[id])
		}
	}
	return b.String()
}
func (t *wordTok) DecodeToken(_, id int) string { return t.Decode([]int{id}) }
func (t *wordTok) VocabSize() int               { return 1 << 20 }
func (t *wordTok) BOS() int                     { return 1 }
func (t *wordTok) EOS() int                     { return 2 }
func (t *wordTok) TokenID(string) (int, bool)   { return 0, false }

// bigramLP is a fixed bigram model over vocab tokens: log softmax over j
// of s(prev, j) = ((7·prev + 13·j) mod 11) / 4.
type bigramLP struct{ vocab int }

func (m bigramLP) score(a, b int) float64 { return float64((7*a+13*b)%11) / 4 }

// logZ depends on prev only through 7·prev mod 11; cache the 11 values.
var logZCache sync.Map // [2]int{vocab, 7·prev mod 11} → float64

func (m bigramLP) lp(a, b int) float64 {
	key := [2]int{m.vocab, (7 * a) % 11}
	if z, ok := logZCache.Load(key); ok {
		return m.score(a, b) - z.(float64)
	}
	mx := math.Inf(-1)
	for j := range m.vocab {
		mx = math.Max(mx, m.score(a, j))
	}
	z := 0.0
	for j := range m.vocab {
		z += math.Exp(m.score(a, j) - mx)
	}
	lz := mx + math.Log(z)
	logZCache.Store(key, lz)
	return m.score(a, b) - lz
}

// fakeLM scores requests with a per-transition function and records them.
type fakeLM struct {
	lp    func(prev, next int) float64
	mu    sync.Mutex
	calls [][]Request
	max   int
}

func (f *fakeLM) LogLikelihood(_ context.Context, reqs []Request) ([]float64, error) {
	f.mu.Lock()
	f.calls = append(f.calls, reqs)
	f.mu.Unlock()
	out := make([]float64, len(reqs))
	for i, r := range reqs {
		seq := append(append([]int(nil), r.Context...), r.Continuation...)
		for k := len(r.Context); k < len(seq); k++ {
			out[i] += f.lp(seq[k-1], seq[k])
		}
	}
	return out, nil
}

func (f *fakeLM) allRequests() []Request {
	var out []Request
	for _, c := range f.calls {
		out = append(out, c...)
	}
	return out
}

type maxLenLM struct {
	*fakeLM
	n int
}

func (m maxLenLM) MaxLength() int { return m.n }

// writeFile creates dir/rel with content and returns its path.
func writeFile(t *testing.T, dir, rel, content string) string {
	t.Helper()
	p := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func ids(tok byteTok, s string) []int { return tok.Encode(s) }

var bt byteTok
