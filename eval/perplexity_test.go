package eval

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/data"
)

func TestRollingWindowsByHand(t *testing.T) {
	toks := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	got := RollingWindows(toks, 0, 4, 1)
	want := []Request{
		{[]int{0}, []int{1, 2, 3, 4}},
		{[]int{4}, []int{5, 6, 7, 8}},
		{[]int{6, 7, 8}, []int{9, 10}}, // the last window reads a full 4 inputs
	}
	if len(got) != len(want) {
		t.Fatalf("%d windows, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if !slices.Equal(got[i].Context, want[i].Context) || !slices.Equal(got[i].Continuation, want[i].Continuation) {
			t.Errorf("window %d = %v, want %v", i, got[i], want[i])
		}
	}
	if RollingWindows(nil, 0, 4, 1) != nil {
		t.Error("no tokens, no windows")
	}
}

func TestRollingWindowsCoverEveryTokenOnce(t *testing.T) {
	toks := make([]int, 37)
	for i := range toks {
		toks[i] = 100 + i
	}
	for _, maxLen := range []int{1, 2, 5, 8, 36, 37, 50} {
		for _, cl := range []int{1, 2, maxLen} {
			if cl > maxLen {
				continue
			}
			next := 0
			for _, w := range RollingWindows(toks, -7, maxLen, cl) {
				if len(w.Context)+len(w.Continuation) > maxLen+1 || len(w.Continuation) > maxLen {
					t.Fatalf("maxLen %d cl %d: window too long: %v", maxLen, cl, w)
				}
				// The context is exactly the tokens before the continuation.
				for k := range w.Context {
					pos := next - len(w.Context) + k
					want := -7
					if pos >= 0 {
						want = toks[pos]
					}
					if w.Context[k] != want {
						t.Fatalf("maxLen %d cl %d: context %v before token %d", maxLen, cl, w.Context, next)
					}
				}
				for _, tk := range w.Continuation {
					if tk != toks[next] {
						t.Fatalf("maxLen %d cl %d: predicted %d, want %d", maxLen, cl, tk, toks[next])
					}
					next++
				}
			}
			if next != len(toks) {
				t.Errorf("maxLen %d cl %d: covered %d of %d tokens", maxLen, cl, next, len(toks))
			}
		}
	}
}

func TestPerplexityMatchesBigramSum(t *testing.T) {
	dir := t.TempDir()
	text := "First line of text.\nSecond  line, here.\nThird line is not read.\n"
	path := writeFile(t, dir, "t.txt", text)
	m := bigramLP{vocab: 259}
	lm := &fakeLM{lp: m.lp}
	var samples bytes.Buffer
	res, err := Evaluate(context.Background(), lm, byteTok{}, "perplexity", Options{Data: path, Limit: 2, MaxLen: 7, Samples: &samples})
	if err != nil {
		t.Fatal(err)
	}
	scored := "First line of text.\nSecond  line, here.\n"
	// A bigram model's log-likelihood does not depend on how the text is
	// windowed: BOS→first byte, then byte→byte.
	want := m.lp(1, int(scored[0])+3)
	for k := 1; k < len(scored); k++ {
		want += m.lp(int(scored[k-1])+3, int(scored[k])+3)
	}
	if len(lm.calls) != (len(scored)+6)/7 {
		t.Errorf("%d windows for %d tokens of 7", len(lm.calls), len(scored))
	}
	words := 8.0 // 7 white-space runs + 1, as Python's re.split(r"\s+") counts
	nb := float64(len(scored))
	check := func(name string, v float64) {
		t.Helper()
		got, ok := res.Metric(name)
		if !ok || math.Abs(got.Value-v) > 1e-9*math.Abs(v) || !math.IsNaN(got.Stderr) {
			t.Errorf("%s = %+v, want %v", name, got, v)
		}
	}
	check(MetricTokenPPL, math.Exp(-want/nb))
	check(MetricWordPPL, math.Exp(-want/words))
	check(MetricBytePPL, math.Exp(-want/nb))
	check(MetricBitsPerByte, -want/nb/math.Ln2)
	if res.N != len(scored) {
		t.Errorf("N = %d tokens, want %d", res.N, len(scored))
	}
	if !strings.HasPrefix(samples.String(), `{"index":0,"loglik":[`) {
		t.Errorf("perplexity sample %q", samples.String())
	}
}

func TestCountWordsLikePythonSplit(t *testing.T) {
	for s, want := range map[string]int{"a b": 2, " a b ": 4, "": 1, "a\n\n b": 2, "\t": 2} {
		if got := countWords(s); got != want {
			t.Errorf("countWords(%q) = %d, want %d", s, got, want)
		}
	}
}

func TestPerplexityJSONLDocuments(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "c4.jsonl", `{"text": "ab c"}`+"\n"+`{"text": "de"}`+"\n"+`{"text": "not read"}`+"\n")
	m := bigramLP{vocab: 259}
	var samples bytes.Buffer
	res, err := Evaluate(context.Background(), &fakeLM{lp: m.lp}, byteTok{}, "perplexity", Options{Data: path, Limit: 2, MaxLen: 3, Samples: &samples})
	if err != nil {
		t.Fatal(err)
	}
	// Each document starts again from BOS.
	want := 0.0
	for _, doc := range []string{"ab c", "de"} {
		prev := 1
		for k := range len(doc) {
			want += m.lp(prev, int(doc[k])+3)
			prev = int(doc[k]) + 3
		}
	}
	got, _ := res.Metric(MetricWordPPL)
	if w := math.Exp(-want / 3); math.Abs(got.Value-w) > 1e-9*w { // words: "ab","c","de"
		t.Errorf("word perplexity %v, want %v", got.Value, w)
	}
	if res.N != 6 || strings.Count(samples.String(), "\n") != 2 {
		t.Errorf("N %d, samples %q", res.N, samples.String())
	}
}

// With EvalFraction, perplexity scores exactly the text a training run
// with --eval-fraction held out: the file's tail as data.SplitText cuts it
// (at a line end within 1% after the fraction's byte). JSONL and fractions
// outside (0, 1) are refused.
func TestPerplexityEvalFractionScoresTheHeldOutTail(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "line %d of the text, with some words.\n", i)
	}
	text := b.String()
	_, tail, err := data.SplitText(text, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tail, "line ") || len(tail) > len(text)/4 {
		t.Fatalf("SplitText's tail %.40q… (%d of %d bytes)", tail, len(tail), len(text))
	}
	m := bigramLP{vocab: 259}
	score := func(path string, frac float64) float64 {
		t.Helper()
		res, err := Evaluate(context.Background(), &fakeLM{lp: m.lp}, byteTok{}, "perplexity", Options{Data: path, MaxLen: 64, EvalFraction: frac})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := res.Metric(MetricTokenPPL)
		return v.Value
	}
	whole := writeFile(t, dir, "all.txt", text)
	if got, want := score(whole, 0.2), score(writeFile(t, dir, "tail.txt", tail), 0); got != want {
		t.Errorf("--eval-fraction 0.2 scores %v, the held-out tail alone %v", got, want)
	}
	if score(whole, 0.2) == score(whole, 0) {
		t.Error("the fraction changed nothing")
	}
	jsonl := writeFile(t, dir, "c.jsonl", `{"text": "ab"}`+"\n")
	for _, c := range []struct {
		path string
		frac float64
		want string
	}{{jsonl, 0.1, "plain-text"}, {whole, 1.5, "(0, 1)"}, {whole, -0.1, "(0, 1)"}} {
		_, err := Evaluate(context.Background(), &fakeLM{lp: m.lp}, byteTok{}, "perplexity", Options{Data: c.path, EvalFraction: c.frac})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s with %v: %v, want an error with %q", c.path, c.frac, err, c.want)
		}
	}
}
