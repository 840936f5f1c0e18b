package data

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/tokenizer"
)

// checkResponses checks, for every example of d, that the labelled tokens
// decode to the answers of its conversation (each followed by EOS) and
// the unlabelled ones to the template's prompt text.
func checkResponses(t *testing.T, d *Dataset, convs []Conversation, tok tokenizer.Tokenizer) {
	t.Helper()
	dummy := addsDummyPrefix(tok)
	if len(d.Examples) != len(convs) {
		t.Fatalf("%s: %d examples for %d conversations", d.Path, len(d.Examples), len(convs))
	}
	tm := mustLookup(t, d.Template)
	for i, ex := range d.Examples {
		c := convs[i]
		if ex.Source != c.Source {
			t.Fatalf("example %d from %s, conversation from %s", i, ex.Source, c.Source)
		}
		// Split the labelled positions into runs; each run is one answer.
		var runs [][]int
		var prompt []int
		for j, l := range ex.Labels {
			switch {
			case l == IgnoreIndex:
				prompt = append(prompt, ex.IDs[j])
			case j > 0 && ex.Labels[j-1] != IgnoreIndex:
				runs[len(runs)-1] = append(runs[len(runs)-1], l)
			default:
				runs = append(runs, []int{l})
			}
		}
		if len(runs) != len(c.Turns) {
			t.Fatalf("%s: %d labelled runs for %d turns", ex.Source, len(runs), len(c.Turns))
		}
		for k, run := range runs {
			if run[len(run)-1] != tok.EOS() {
				t.Fatalf("%s: answer %d does not end with EOS", ex.Source, k)
			}
			got := tok.Decode(run[:len(run)-1])
			// The template's answer text ("{content} " for llama2,
			// "{content}<|im_end|>" for chatml); with a dummy prefix,
			// Decode drops one leading space.
			var want string
			for _, p := range tm.Assistant {
				want += strings.ReplaceAll(p.Text, "{content}", c.Turns[k].Assistant)
			}
			if dummy {
				want = strings.TrimPrefix(want, " ")
			}
			if got != want {
				t.Fatalf("%s: answer %d decodes to\n%q\nwant\n%q", ex.Source, k, got, want)
			}
		}
		if len(c.Turns) == 1 {
			// Single turn: the prompt is one text segment after BOS, and
			// its tokens decode to the template's prompt text.
			var wantPrompt string
			for _, s := range tm.segments(c, "", false) {
				if !s.response {
					wantPrompt += s.text
				}
			}
			if got := tok.Decode(prompt); got != wantPrompt {
				t.Fatalf("%s: prompt decodes to\n%q\nwant\n%q", ex.Source, got, wantPrompt)
			}
		}
	}
}

func TestAlpacaEnDemo(t *testing.T) {
	path := sharedFile(t, "data/instruct/alpaca_en_demo.json")
	tok := realTok(t)
	d, err := Load(path, FormatAuto, tok, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != FormatAlpaca || d.Template != "alpaca" || d.Len() != 999 || d.Stats.Rows != 999 || d.Stats.Examples != 999 {
		t.Fatalf("format %s template %s, %d examples, stats %v", d.Format, d.Template, d.Len(), d.Stats)
	}
	convs, _, err := ReadConversations(path, FormatAlpaca, false)
	if err != nil {
		t.Fatal(err)
	}
	checkResponses(t, d, convs, realTok(t))
	if d.Get(0).IDs[0] != tok.BOS() {
		t.Error("example 0 does not start with BOS")
	}
	withInput := 0
	for _, c := range convs {
		if c.Turns[0].Input != "" {
			withInput++
		}
	}
	if withInput == 0 {
		t.Error("no row with an input: the with-input template went untested")
	}

	// Truncation to 128 tokens: counts agree with a direct computation.
	full := d
	d, err = Load(path, FormatAlpaca, tok, Options{MaxLen: 128})
	if err != nil {
		t.Fatal(err)
	}
	trunc, dropped := 0, 0
	for _, ex := range full.Examples {
		if len(ex.IDs) > 128 {
			trunc++
			if !slices.ContainsFunc(ex.Labels[:128], func(l int) bool { return l != IgnoreIndex }) {
				dropped++
			}
		}
	}
	if trunc == 0 || dropped == 0 {
		t.Fatalf("MaxLen 128 truncates %d and drops %d rows: pick another length", trunc, dropped)
	}
	if d.Stats.Truncated != trunc || d.Stats.Dropped != dropped || d.Len() != 999-dropped {
		t.Errorf("MaxLen 128: stats %v, want %d truncated, %d dropped", d.Stats, trunc, dropped)
	}
	for _, ex := range d.Examples {
		if len(ex.IDs) > 128 || ex.Targets() == 0 {
			t.Fatalf("%s: %d tokens, %d targets", ex.Source, len(ex.IDs), ex.Targets())
		}
	}
}

func TestAlpacaLibre(t *testing.T) {
	path := sharedFile(t, "data/instruct/alpaca_libre_tasks_v1.jsonl")
	d, err := Load(path, FormatAuto, realTok(t), Options{Template: "chatml"})
	if err != nil {
		t.Fatal(err)
	}
	// 2,375 rows of which 1,202 have status "ok" (counted independently
	// with grep in the README's spirit: every row has a status key).
	raw, _ := os.ReadFile(path)
	ok := strings.Count(string(raw), `"status": "ok"`)
	if d.Stats.Rows != 2375 || d.Len() != ok || d.Stats.Filtered != 2375-ok {
		t.Fatalf("rows %d, examples %d, filtered %d; want 2375 rows, %d examples", d.Stats.Rows, d.Len(), d.Stats.Filtered, ok)
	}
	convs, _, err := ReadConversations(path, FormatAuto, false)
	if err != nil {
		t.Fatal(err)
	}
	checkResponses(t, d, convs, realTok(t))
}

func TestShareGPTSample(t *testing.T) {
	path := sharedFile(t, "data/serving/sharegpt_sample_50_min1k_prompt.json")
	d, err := Load(path, FormatAuto, realTok(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != FormatShareGPT || d.Template != "llama2" || d.Len() != 50 {
		t.Fatalf("format %s template %s, %d examples", d.Format, d.Template, d.Len())
	}
	convs, _, err := ReadConversations(path, FormatShareGPT, false)
	if err != nil {
		t.Fatal(err)
	}
	checkResponses(t, d, convs, realTok(t))
}

func TestTrainSplits(t *testing.T) {
	for _, c := range []struct {
		file string
		rows int
	}{{"ARC-Challenge", 1119}, {"openbookqa", 4957}} {
		path := sharedFile(t, "data/train/"+c.file+".train.json")
		convs, st, err := ReadConversations(path, FormatAuto, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(convs) != c.rows || st.Rows != c.rows {
			t.Errorf("%s: %d conversations, want %d", c.file, len(convs), c.rows)
		}
	}
	if testing.Short() {
		return
	}
	path := sharedFile(t, "data/train/ARC-Challenge.train.json")
	d, err := Load(path, FormatAuto, realTok(t), Options{Template: "plain", Split: "eval", EvalFraction: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 112 || !strings.HasSuffix(d.Get(d.Len()-1).Source, "[1118]") {
		t.Errorf("eval split: %d examples, last %s", d.Len(), d.Get(d.Len()-1).Source)
	}
}

func TestTextFiles(t *testing.T) {
	tok := realTok(t)
	// wiki_demo.txt: one document a line, 30 lines.
	path := sharedFile(t, "data/text/wiki_demo.txt")
	docs, _, err := ReadDocuments(path, Options{})
	if err != nil || len(docs) != 30 {
		t.Fatalf("wiki_demo: %d documents, %v", len(docs), err)
	}
	d, err := Load(path, FormatAuto, tok, Options{SeqLen: 256})
	if err != nil {
		t.Fatal(err)
	}
	checkPacked(t, d, docs, 256)

	// c4_demo.jsonl: 300 {"text"} documents.
	path = sharedFile(t, "data/text/c4_demo.jsonl")
	if f, err := DetectFormat(mustRead(t, path), path); err != nil || f != FormatText {
		t.Errorf("DetectFormat(c4) = %q, %v", f, err)
	}
	docs, _, err = ReadDocuments(path, Options{})
	if err != nil || len(docs) != 300 {
		t.Fatalf("c4: %d documents, %v", len(docs), err)
	}
}

// checkPacked checks that d's windows re-assemble into the token stream of
// docs and that each has the right length.
func checkPacked(t *testing.T, d *Dataset, docs []Document, seqLen int) {
	t.Helper()
	tok := realTok(t)
	var stream []int
	for _, doc := range docs {
		stream = append(append(stream, tok.BOS()), tok.Encode(doc.Text)...)
	}
	var got []int
	for i, ex := range d.Examples {
		if !slices.Equal(ex.IDs, ex.Labels) {
			t.Fatalf("window %d: labels differ from ids", i)
		}
		if i < d.Len()-1 && len(ex.IDs) != seqLen {
			t.Fatalf("window %d has %d tokens", i, len(ex.IDs))
		}
		if i == 0 {
			got = append(got, ex.IDs...)
		} else {
			if ex.IDs[0] != got[len(got)-1] {
				t.Fatalf("window %d does not start with the previous window's last token", i)
			}
			got = append(got, ex.IDs[1:]...)
		}
	}
	if !slices.Equal(got, stream) {
		t.Fatalf("windows re-assemble to %d tokens, stream has %d", len(got), len(stream))
	}
	if d.Stats.Targets != len(stream)-1 {
		t.Errorf("targets %d, want %d", d.Stats.Targets, len(stream)-1)
	}
}

func TestTinyShakespeare(t *testing.T) {
	if testing.Short() {
		t.Skip("tokenizes 1.1 MB")
	}
	path := sharedFile(t, "data/text/tinyshakespeare.txt")
	tok := realTok(t)
	text := string(mustRead(t, path))
	tr, ev, err := SplitText(text, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	train, err := Load(path, FormatText, tok, Options{SeqLen: 512, Split: "train", EvalFraction: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	checkPacked(t, train, []Document{{Text: tr}}, 512)
	eval, err := Load(path, FormatAuto, tok, Options{SeqLen: 512, Split: "eval", EvalFraction: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	checkPacked(t, eval, []Document{{Text: ev}}, 512)
	if !strings.HasPrefix(tok.Decode(eval.Get(0).IDs), ev[:100]) {
		t.Error("the eval split does not start where SplitText cuts")
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The ShareGPT sample through every template and real vocabularies of
// both kinds: the LLaMA-2 32k SentencePiece (dummy prefix) and the
// LLaMA-3 byte-level BPE (none).
func TestShareGPTRealVocabularies(t *testing.T) {
	if testing.Short() {
		t.Skip("loads two large tokenizers")
	}
	path := sharedFile(t, "data/serving/sharegpt_sample_50_min1k_prompt.json")
	convs, _, err := ReadConversations(path, FormatAuto, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"tokenizers/llama2/tokenizer.bin", "tokenizers/llama3/tokenizer.json"} {
		tp := sharedFile(t, filepath.Join("data", rel))
		tok, err := tokenizer.Load(tp)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		for _, tmpl := range Templates() {
			d, err := Load(path, FormatShareGPT, tok, Options{Template: tmpl})
			if err != nil {
				t.Fatal(err)
			}
			checkResponses(t, d, convs, tok)
		}
	}
}
