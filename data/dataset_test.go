package data

import (
	"slices"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/tokenizer"
)

func TestDetectFormat(t *testing.T) {
	cases := []struct{ name, data, want string }{
		{"a.json", `[{"instruction": "i", "output": "o"}]`, FormatAlpaca},
		{"a.jsonl", `{"instruction": "i", "output": "o", "answer": "x"}`, FormatAlpaca},
		{"s.json", `[{"prompt": "p", "response": "r", "conversations": []}]`, FormatShareGPT},
		{"s.jsonl", `{"messages": []}`, FormatShareGPT},
		{"p.jsonl", "\n{\"prompt\": \"p\", \"completion\": \"c\"}", FormatPromptCompletion},
		{"c.jsonl", `{"text": "t"}`, FormatText},
		{"t.txt", "[not json", FormatText},
		{"data", `[{"instruction": "i", "output": "o"}]`, FormatAlpaca},
	}
	for _, c := range cases {
		got, err := DetectFormat([]byte(c.data), c.name)
		if err != nil || got != c.want {
			t.Errorf("DetectFormat(%s) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	for _, bad := range []string{`[]`, `[{"foo": 1}]`, "[\n{\"instruction\": "} {
		if _, err := DetectFormat([]byte(bad), "x.json"); err == nil || !strings.Contains(err.Error(), "x.json") {
			t.Errorf("DetectFormat(%q) error = %v", bad, err)
		}
	}
}

func TestLoad(t *testing.T) {
	f := fakeTok{}
	path := writeTemp(t, "pc.jsonl", `{"prompt": "ab", "completion": "cd"}
{"prompt": "ef", "completion": "gh"}
{"prompt": "ij", "completion": "kl"}
{"prompt": "mn", "completion": "op"}
`)
	for _, format := range []string{"auto", "jsonl", "prompt_completion"} {
		d, err := Load(path, format, f, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Format != FormatPromptCompletion || d.Template != "plain" || d.Len() != 4 {
			t.Errorf("%s: format %s template %s len %d", format, d.Format, d.Template, d.Len())
		}
		if got := f.render(d.Get(1).IDs); got != "<s>efgh</s>" || d.Get(1).Source != path+":2" {
			t.Errorf("%s: example 1 = %q from %s", format, got, d.Get(1).Source)
		}
	}
	d, _ := Load(path, "auto", f, Options{Split: "eval", EvalFraction: 0.25})
	tr, _ := Load(path, "auto", f, Options{Split: "train", EvalFraction: 0.25})
	if d.Len() != 1 || tr.Len() != 3 || d.Get(0).Source != path+":4" {
		t.Errorf("split: eval %d, train %d", d.Len(), tr.Len())
	}
	d, _ = Load(path, "auto", f, Options{Template: "llama2", System: "S", TrainOnPrompt: true})
	if got := f.render(d.Get(0).IDs); got != "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nab [/INST] cd </s>" || !slices.Equal(d.Get(0).IDs, d.Get(0).Labels) {
		t.Errorf("options: %q", got)
	}

	bad := []struct {
		path, format string
		o            Options
		frag         string
	}{
		{path, "csv", Options{}, "unknown format"},
		{path, "auto", Options{Template: "vicuna"}, "vicuna"},
		{path, "auto", Options{Split: "test"}, "split"},
		{path, "auto", Options{EvalFraction: -1}, "fraction"},
		{path, "alpaca", Options{}, `missing key "instruction"`},
		{path + ".missing", "auto", Options{}, "no such file"},
		{writeTemp(t, "t.txt", "hello"), "text", Options{}, "sequence length"},
	}
	for _, b := range bad {
		_, err := Load(b.path, b.format, f, b.o)
		if err == nil || !strings.Contains(err.Error(), b.frag) || !strings.Contains(err.Error(), b.path) {
			t.Errorf("Load(%s, %s, %+v) error = %v, want %q and the path", b.path, b.format, b.o, err, b.frag)
		}
	}
	if _, err := Load(path, "auto", nil, Options{}); err == nil {
		t.Error("nil tokenizer accepted")
	}
}

func TestSplitDocs(t *testing.T) {
	docs := []Document{{Text: "aaaa"}, {Text: "bbbb"}, {Text: "cccc"}}
	tr, ev := splitDocs(docs, 0.5) // cut at byte 6, inside "bbbb"
	if len(tr) != 2 || tr[1].Text != "bb" || len(ev) != 2 || ev[0].Text != "bb" || ev[1].Text != "cccc" {
		t.Errorf("train %+v eval %+v", tr, ev)
	}
	tr, ev = splitDocs(docs, 1.0/3)
	if len(tr) != 2 || len(ev) != 1 || ev[0].Text != "cccc" {
		t.Errorf("at a boundary: train %+v eval %+v", tr, ev)
	}
}

// The dummy-prefix probe classifies the real tokenizers.
func TestDummyPrefixProbe(t *testing.T) {
	if !addsDummyPrefix(realTok(t)) {
		t.Error("llama2.c tok512: no dummy prefix detected")
	}
	if addsDummyPrefix(fakeTok{}) || !addsDummyPrefix(fakeTok{dummy: true}) {
		t.Error("fake tokenizers misclassified")
	}
	gpt2 := sharedFile(t, "data/tokenizers/gpt2/encoder.json")
	tok, err := tokenizer.Load(gpt2)
	if err != nil {
		t.Skipf("GPT-2 tokenizer: %v", err)
	}
	if addsDummyPrefix(tok) {
		t.Error("GPT-2 byte-level tokenizer: dummy prefix detected")
	}
}

func TestBatch(t *testing.T) {
	exs := []Example{
		{IDs: []int{1, 5, 6}, Labels: []int{-100, 5, 6}},
		{IDs: []int{1, 7}, Labels: []int{-100, 7}},
	}
	ids, labels, mask, T := Batch(exs, 0)
	if T != 3 ||
		!slices.Equal(ids, []int{1, 5, 6, 1, 7, 0}) ||
		!slices.Equal(labels, []int{-100, 5, 6, -100, 7, -100}) ||
		!slices.Equal(mask, []bool{true, true, true, true, true, false}) {
		t.Errorf("Batch: T %d ids %v labels %v mask %v", T, ids, labels, mask)
	}
	ids, labels, mask, err := BatchTo(exs, 9, 4)
	if err != nil || len(ids) != 8 || ids[7] != 9 || ids[3] != 9 || labels[3] != -100 || mask[3] || !mask[5] {
		t.Errorf("BatchTo: %v %v %v %v", ids, labels, mask, err)
	}
	if _, _, _, err := BatchTo(exs, 0, 2); err == nil {
		t.Error("BatchTo accepted an example longer than T")
	}
	if _, _, _, T := Batch(nil, 0); T != 0 {
		t.Error("empty batch")
	}
}

func TestOrder(t *testing.T) {
	n := 1000
	a := Order(n, 42, 3)
	sorted := slices.Clone(a)
	slices.Sort(sorted)
	for i, v := range sorted {
		if v != i {
			t.Fatalf("Order is not a permutation: sorted[%d] = %d", i, v)
		}
	}
	if !slices.Equal(a, Order(n, 42, 3)) {
		t.Error("Order is not deterministic")
	}
	same := func(x, y []int) int {
		k := 0
		for i := range x {
			if x[i] == y[i] {
				k++
			}
		}
		return k
	}
	// Different epochs or seeds give unrelated orders: about one fixed
	// point expected between two random permutations.
	for _, b := range [][]int{Order(n, 42, 4), Order(n, 43, 3), Order(n, 0, 0)} {
		if k := same(a, b); k > 10 {
			t.Errorf("orders agree at %d of %d positions", k, n)
		}
	}
	if len(Order(0, 1, 1)) != 0 || !slices.Equal(Order(1, 1, 1), []int{0}) {
		t.Error("small n")
	}
	// Each position takes each value about equally often (no modulo bias
	// gross enough to see): 3 elements, 6000 epochs.
	var count [3][3]int
	for e := 0; e < 6000; e++ {
		for pos, v := range Order(3, 7, e) {
			count[pos][v]++
		}
	}
	for pos := range count {
		for v := range count[pos] {
			if c := count[pos][v]; c < 1800 || c > 2200 {
				t.Errorf("position %d held %d in %d of 6000 epochs", pos, v, c)
			}
		}
	}
}
