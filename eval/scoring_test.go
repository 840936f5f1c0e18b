package eval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestEncodePairSplitsAtContextTokens(t *testing.T) {
	tok := byteTok{}
	c, k := EncodePair(tok, "Q: x\nAnswer:", " yes")
	if want := append([]int{1}, ids(tok, "Q: x\nAnswer:")...); !slices.Equal(c, want) {
		t.Errorf("context = %v, want BOS + bytes = %v", c, want)
	}
	if want := ids(tok, " yes"); !slices.Equal(k, want) {
		t.Errorf("continuation = %v, want %v", k, want)
	}
	// Trailing white space of the context moves into the continuation.
	c2, k2 := EncodePair(tok, "Answer: ", "yes")
	if !slices.Equal(c2, append([]int{1}, ids(tok, "Answer:")...)) || !slices.Equal(k2, ids(tok, " yes")) {
		t.Errorf("trailing space not moved: %v | %v", tok.Decode(c2), tok.Decode(k2))
	}
	// An empty context is BOS alone.
	c3, k3 := EncodePair(tok, "", "hi")
	if !slices.Equal(c3, []int{1}) || !slices.Equal(k3, ids(tok, "hi")) {
		t.Errorf("empty context: %v | %v", c3, k3)
	}

	// With a SentencePiece-like tokenizer the space belongs to the answer's
	// token, and a merge across the boundary leaves the split where the
	// context alone ends (lm-eval's behaviour).
	w := newWordTok()
	c, k = EncodePair(w, "is it good?\nAnswer:", " yes")
	if got := w.Decode(k); got != " yes" || len(k) != 1 {
		t.Errorf("word continuation = %q (%d tokens), want \" yes\" as 1 token", got, len(k))
	}
	if got := w.Decode(c[1:]); got != "is it good?\nAnswer:" || c[0] != 1 {
		t.Errorf("word context = %v %q", c[0], got)
	}
	c, k = EncodePair(w, "ab", "cd ef")
	// "abcd ef" → ["abcd", " ef"]; "ab" is one token, so the continuation
	// is everything after the first token: [" ef"].
	if got := w.Decode(k); got != " ef" {
		t.Errorf("merged boundary: continuation %q, want %q", got, " ef")
	}
	if got := w.Decode(c); got != "abcd" {
		t.Errorf("merged boundary: context %q, want %q", got, "abcd")
	}
}

func TestTruncateKeepsContinuation(t *testing.T) {
	r := Request{Context: []int{1, 2, 3, 4, 5}, Continuation: []int{6, 7}}
	got := truncate(r, 4) // 5 tokens in all
	if !slices.Equal(got.Context, []int{3, 4, 5}) || !slices.Equal(got.Continuation, []int{6, 7}) {
		t.Errorf("truncate = %v", got)
	}
	got = truncate(r, 1) // keeps one context token even when over
	if !slices.Equal(got.Context, []int{5}) {
		t.Errorf("truncate to 1 = %v", got)
	}
	if got := truncate(r, 0); len(got.Context) != 5 {
		t.Errorf("maxLen 0 must not truncate: %v", got)
	}
}

// costLM charges −1 per ASCII byte token and −0.5 per non-ASCII byte token.
func costLP(_, next int) float64 {
	if next-3 >= 128 {
		return -0.5
	}
	return -1
}

func readSamples(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("samples line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func TestAccVersusAccNorm(t *testing.T) {
	dir := t.TempDir()
	// Item 0: "a" costs 2 tokens (" a"), "abcdefgh" 9: acc picks "a",
	// per-character normalisation picks the long one (−2/1 < −9/8).
	// Item 1: "ééé" is 3 characters, 6 bytes: " ééé" costs −1 − 6·0.5 = −4,
	// " abcd" −5. acc: 0; per character −4/3 < −5/4 → 1; per byte −4/6 > −5/4 → 0.
	path := writeFile(t, dir, "mc.jsonl",
		`{"query": "Q", "choices": ["a", "abcdefgh"], "gold": 1}`+"\n\n"+
			`{"query": "R", "choices": ["ééé", "abcd"], "gold": 1}`+"\n")
	var samples bytes.Buffer
	lm := &fakeLM{lp: costLP}
	res, err := Evaluate(context.Background(), lm, byteTok{}, "openbookqa", Options{Data: path, Samples: &samples})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{MetricAcc: 0, MetricAccNorm: 1, MetricAccBytes: 0.5}
	for name, v := range want {
		m, ok := res.Metric(name)
		if !ok || m.Value != v {
			t.Errorf("%s = %+v, want %v", name, m, v)
		}
	}
	if res.N != 2 {
		t.Errorf("N = %d", res.N)
	}
	// One call per item, holding all its choices.
	if len(lm.calls) != 2 || len(lm.calls[0]) != 2 {
		t.Errorf("calls = %d (first with %d requests), want 2 calls of 2", len(lm.calls), len(lm.calls[0]))
	}
	s := readSamples(t, samples.Bytes())
	if len(s) != 2 {
		t.Fatalf("%d sample lines", len(s))
	}
	ll := s[0]["loglik"].([]any)
	if s[0]["index"].(float64) != 0 || ll[0].(float64) != -2 || ll[1].(float64) != -9 || s[0]["pred"].(float64) != 0 || s[0]["gold"].(float64) != 1 {
		t.Errorf("sample 0 = %v", s[0])
	}
	if ll := s[1]["loglik"].([]any); ll[0].(float64) != -4 || ll[1].(float64) != -5 || s[1]["index"].(float64) != 1 {
		t.Errorf("sample 1 = %v", s[1])
	}
}

func TestBigramScoresMatchHandSums(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "arc.jsonl", `{"query": "Question: Hi?", "choices": ["ab", "ba", "c"], "gold": 2}`+"\n")
	m := bigramLP{vocab: 259}
	lm := &fakeLM{lp: m.lp}
	var samples bytes.Buffer
	if _, err := Evaluate(context.Background(), lm, byteTok{}, "arc_easy", Options{Data: path, Samples: &samples}); err != nil {
		t.Fatal(err)
	}
	// The ARC prompt is the query plus "\nAnswer:"; each continuation is
	// " " + choice, scored from the context's last byte on.
	const ctxText = "Question: Hi?\nAnswer:"
	reqs := lm.allRequests()
	for i, c := range []string{"ab", "ba", "c"} {
		if got := bt.Decode(reqs[i].Context); got != ctxText || reqs[i].Context[0] != 1 {
			t.Errorf("choice %d context %q", i, got)
		}
		b := ":" + " " + c
		want := 0.0
		for k := 1; k < len(b); k++ {
			want += m.lp(int(b[k-1])+3, int(b[k])+3)
		}
		got := readSamples(t, samples.Bytes())[0]["loglik"].([]any)[i].(float64)
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("choice %q: loglik %v, want %v", c, got, want)
		}
	}
}

func TestWinoGrandePartialScoring(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "wg.jsonl",
		`{"context_options": ["The cup held the ball so the cup", "The cup held the ball so the ball"], "continuation": "was big.", "gold": 0}`+"\n")
	m := bigramLP{vocab: 259}
	lm := &fakeLM{lp: m.lp}
	var samples bytes.Buffer
	res, err := Evaluate(context.Background(), lm, byteTok{}, "winogrande", Options{Data: path, Samples: &samples})
	if err != nil {
		t.Fatal(err)
	}
	reqs := lm.allRequests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	tok := byteTok{}
	var want [2]float64
	for i, ctxText := range []string{"The cup held the ball so the cup", "The cup held the ball so the ball"} {
		if got := tok.Decode(reqs[i].Context); got != ctxText {
			t.Errorf("option %d context %q", i, got)
		}
		// Only the shared continuation is scored, under each context.
		if got := tok.Decode(reqs[i].Continuation); got != " was big." {
			t.Errorf("option %d continuation %q", i, got)
		}
		s := ctxText[len(ctxText)-1:] + " was big."
		for k := 1; k < len(s); k++ {
			want[i] += m.lp(int(s[k-1])+3, int(s[k])+3)
		}
	}
	// The two contexts end in different letters ('p' vs 'l'), so the
	// scores differ only through the first continuation token.
	got := readSamples(t, samples.Bytes())[0]
	ll := got["loglik"].([]any)
	for i := range want {
		if math.Abs(ll[i].(float64)-want[i]) > 1e-12 {
			t.Errorf("option %d loglik %v, want %v", i, ll[i], want[i])
		}
	}
	wantPred := 0
	if want[1] > want[0] {
		wantPred = 1
	}
	if int(got["pred"].(float64)) != wantPred {
		t.Errorf("pred %v, want %d", got["pred"], wantPred)
	}
	acc, _ := res.Metric(MetricAcc)
	if acc.Value != float64(1-wantPred) {
		t.Errorf("acc %v with pred %d and gold 0", acc.Value, wantPred)
	}
	if _, ok := res.Metric(MetricAccNorm); ok {
		t.Error("winogrande should report acc only")
	}
}

func arcTrainJSON(n int) string {
	var b strings.Builder
	b.WriteString("[")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		q := "q" + string(rune('A'+i))
		b.WriteString(`{"instruction": "Please choose the correct answer to the question: ` + q +
			`\n\nAnswer1: x` + string(rune('a'+i)) + ` Answer2: y Answer3: z\n\nAnswer format: answer1/answer2/answer3", "input": "", "output": "the correct answer is answer1", "answer": "answer1"}`)
	}
	b.WriteString("]")
	return b.String()
}

func TestFewShotDeterministicBySeed(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "qa/arc_easy.jsonl",
		`{"query": "Question: one", "choices": ["p", "q"], "gold": 0}`+"\n"+
			`{"query": "Question: two", "choices": ["p", "q"], "gold": 1}`+"\n")
	writeFile(t, dir, "train/ARC-Easy.train.json", arcTrainJSON(12))
	run := func(seed uint64) []string {
		lm := &fakeLM{lp: costLP}
		if _, err := Evaluate(context.Background(), lm, byteTok{}, "arc_easy", Options{DataDir: dir, Shots: 3, Seed: seed}); err != nil {
			t.Fatal(err)
		}
		var ctxs []string
		for _, r := range lm.allRequests() {
			ctxs = append(ctxs, bt.Decode(r.Context))
		}
		return ctxs
	}
	a, b, c := run(1), run(1), run(2)
	if strings.Join(a, "|") != strings.Join(b, "|") {
		t.Errorf("same seed, different prompts:\n%q\n%q", a, b)
	}
	if strings.Join(a, "|") == strings.Join(c, "|") {
		t.Errorf("seeds 1 and 2 gave the same prompts: %q", a)
	}
	// Each prompt: three distinct training examples "Question: qX\nAnswer: xx",
	// "\n\n"-separated, then the item.
	for i, ctx := range a {
		parts := strings.Split(ctx, "\n\n")
		if len(parts) != 4 {
			t.Fatalf("prompt %d has %d parts: %q", i, len(parts), ctx)
		}
		seen := map[string]bool{}
		for _, p := range parts[:3] {
			var l byte
			if len(p) != len("Question: qA\nAnswer: xa") || !strings.HasPrefix(p, "Question: q") {
				t.Fatalf("shot %q malformed", p)
			}
			l = p[len("Question: q")]
			if p[len(p)-1] != l-'A'+'a' {
				t.Errorf("shot %q: answer does not belong to its question", p)
			}
			if seen[p] {
				t.Errorf("prompt %d repeats shot %q", i, p)
			}
			seen[p] = true
		}
		wantItem := []string{"Question: one\nAnswer:", "Question: two\nAnswer:"}[i/2]
		if parts[3] != wantItem {
			t.Errorf("prompt %d ends with %q, want %q", i, parts[3], wantItem)
		}
	}
}

func TestFewShotFromEvalSetExcludesItem(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for _, g := range []string{"A", "B", "C"} {
		b.WriteString(`{"query": "Question: ` + g + `", "choices": ["s` + g + `", "t"], "gold": 0}` + "\n")
	}
	path := writeFile(t, dir, "piqa.jsonl", b.String())
	for seed := range uint64(20) {
		lm := &fakeLM{lp: costLP}
		if _, err := Evaluate(context.Background(), lm, byteTok{}, "piqa", Options{Data: path, Shots: 2, Seed: seed}); err != nil {
			t.Fatal(err)
		}
		for _, r := range lm.allRequests() {
			ctx := bt.Decode(r.Context)
			parts := strings.Split(ctx, "\n\n")
			self := parts[2][len("Question: ")]
			for _, p := range parts[:2] {
				if p[len("Question: ")] == self {
					t.Fatalf("seed %d: item sees itself as a shot: %q", seed, ctx)
				}
			}
		}
	}
	if _, err := Evaluate(context.Background(), &fakeLM{lp: costLP}, byteTok{}, "piqa", Options{Data: path, Shots: 3}); err == nil {
		t.Error("3 shots from 2 other items should fail")
	}
}

func TestBatchItemsAndMaxLen(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "b.jsonl", strings.Repeat(`{"query": "Question: long context here", "choices": ["x", "y"], "gold": 0}`+"\n", 5))
	inner := &fakeLM{lp: costLP}
	lm := maxLenLM{inner, 8}
	if _, err := Evaluate(context.Background(), lm, byteTok{}, "boolq", Options{Data: path, BatchItems: 2}); err != nil {
		t.Fatal(err)
	}
	if len(inner.calls) != 3 || len(inner.calls[0]) != 4 || len(inner.calls[2]) != 2 {
		t.Errorf("calls: %d", len(inner.calls))
	}
	for _, r := range inner.allRequests() {
		if len(r.Context)+len(r.Continuation) != 9 || len(r.Continuation) != 2 {
			t.Errorf("request not truncated to the model's 8 (+1): %d + %d", len(r.Context), len(r.Continuation))
		}
	}
}

func TestSTSBExpectedScore(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "glue/STS-B/dev.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"+
		"0\tmain\tf\t2012\t1\tnone\tnone\tA man.\tA person.\t4.2\n")
	// Answer k costs −k (continuation " k" = 2 byte tokens; the space costs 0).
	lp := func(_, next int) float64 {
		if c := next - 3; c >= '0' && c <= '5' {
			return -float64(c - '0')
		}
		return 0
	}
	var samples bytes.Buffer
	res, err := Evaluate(context.Background(), &fakeLM{lp: lp}, byteTok{}, "stsb", Options{DataDir: dir, Samples: &samples})
	if err != nil {
		t.Fatal(err)
	}
	var z, e float64
	for k := range 6 {
		z += math.Exp(-float64(k))
		e += float64(k) * math.Exp(-float64(k))
	}
	s := readSamples(t, samples.Bytes())[0]
	if got := s["pred"].(float64); math.Abs(got-e/z) > 1e-12 || s["gold"].(float64) != 4.2 {
		t.Errorf("stsb sample %v, want pred %v gold 4.2", s, e/z)
	}
	if _, ok := res.Metric(MetricSpearman); !ok {
		t.Error("no spearman")
	}
}
