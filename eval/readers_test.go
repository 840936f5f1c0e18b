package eval

import (
	"bytes"
	"compress/bzip2"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
)

// Row counts from shared/data/README.md.
func TestReadersOnRealFiles(t *testing.T) {
	data := shared.Path(t, "data")
	choiceFiles := map[string]int{
		"qa/boolq.jsonl":         3270,
		"qa/arc_easy.jsonl":      2376,
		"qa/arc_challenge.jsonl": 1172,
		"qa/openbook_qa.jsonl":   500,
		"reasoning/piqa.jsonl":   1838,
		"reasoning/siqa.jsonl":   1954,
	}
	for rel, want := range choiceFiles {
		items, err := ReadChoices(filepath.Join(data, rel))
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != want {
			t.Errorf("%s: %d items, want %d", rel, len(items), want)
		}
	}
	wg, err := ReadWinoGrande(filepath.Join(data, "reasoning/winogrande.jsonl"))
	if err != nil || len(wg) != 1267 {
		t.Errorf("winogrande: %d items, %v; want 1267", len(wg), err)
	}
	if testing.Short() {
		t.Log("skipping HellaSwag's bzip2 decoding in -short mode")
	} else {
		hs, err := ReadHellaSwag(filepath.Join(data, "reasoning/hellaswag_val_full.txt.bz2"))
		if err != nil || len(hs) != 10042 {
			t.Errorf("hellaswag: %d items, %v; want 10042", len(hs), err)
		}
		if err == nil && (!strings.HasPrefix(hs[0].Query, "Roof shingle removal: ") || len(hs[0].Choices) != 4 || hs[0].Gold != 3) {
			t.Errorf("hellaswag item 0 = %+v", hs[0])
		}
	}
	train := map[string]struct {
		kind AlpacaKind
		n    int
	}{
		"ARC-Challenge": {AlpacaARC, 1119}, "ARC-Easy": {AlpacaARC, 2251},
		"boolq": {AlpacaBoolQ, 9427}, "openbookqa": {AlpacaOpenBookQA, 4957},
	}
	for name, w := range train {
		items, err := ReadAlpacaChoices(filepath.Join(data, "train", name+".train.json"), w.kind)
		if err != nil {
			t.Fatal(err)
		}
		if len(items) != w.n {
			t.Errorf("%s train: %d items, want %d", name, len(items), w.n)
		}
	}
	glue := []struct {
		task, split string
		n           int
	}{
		{"sst2", "dev", 872}, {"sst2", "train", 67349}, {"mrpc", "dev", 408}, {"mrpc", "train", 3668},
		{"rte", "dev", 277}, {"rte", "train", 2490}, {"cola", "dev", 527}, {"cola", "train", 8551},
		{"cola", "dev_ood", 516},
	}
	for _, g := range glue {
		exs, err := ReadGLUE(g.task, g.split, data)
		if err != nil {
			t.Fatal(err)
		}
		if len(exs) != g.n {
			t.Errorf("%s %s: %d examples, want %d", g.task, g.split, len(exs), g.n)
		}
	}
}

func TestRealFileContents(t *testing.T) {
	data := shared.Path(t, "data")
	arc, err := ReadAlpacaChoices(filepath.Join(data, "train/ARC-Challenge.train.json"), AlpacaARC)
	if err != nil {
		t.Fatal(err)
	}
	// First row: "...Which skin surface will produce the most heat?\n\nAnswer1: dry palms Answer2: wet palms ..." answer1.
	if a := arc[0]; !strings.HasPrefix(a.Query, "Question: George wants to warm his hands") || a.Gold != 0 ||
		len(a.Choices) != 4 || a.Choices[0] != "dry palms" || a.Choices[3] != "palms covered with lotion" {
		t.Errorf("ARC train row 1 = %+v", a)
	}
	bq, err := ReadAlpacaChoices(filepath.Join(data, "train/boolq.train.json"), AlpacaBoolQ)
	if err != nil {
		t.Fatal(err)
	}
	if b := bq[0]; b.Query != "Question: do iran and afghanistan speak the same language?" || b.Gold != 1 {
		t.Errorf("boolq train row 1 = %+v", b)
	}
	mrpc, err := ReadGLUE("mrpc", "dev", data)
	if err != nil {
		t.Fatal(err)
	}
	// The file starts with a BOM and has unbalanced quotes: no quoting.
	if m := mrpc[0]; m.Label != 1 || !strings.HasPrefix(m.A, "He said the foodservice pie") || !strings.HasPrefix(m.B, `"The foodservice pie business`) {
		t.Errorf("mrpc dev row 1 = %+v", m)
	}
	rte, err := ReadGLUE("rte", "validation", data)
	if err != nil {
		t.Fatal(err)
	}
	if r := rte[0]; r.Label != 1 || r.B != "Christopher Reeve had an accident." {
		t.Errorf("rte val row 1 = %+v", r)
	}
	cola, err := ReadGLUE("cola", "dev", data)
	if err != nil {
		t.Fatal(err)
	}
	if c := cola[0]; c.Label != 1 || c.A != "The sailors rode the breeze clear of the rocks." || c.B != "" {
		t.Errorf("cola dev row 1 = %+v", c)
	}
	sst, err := ReadGLUE("sst2", "dev", data)
	if err != nil {
		t.Fatal(err)
	}
	if s := sst[1]; s.Label != 0 || !strings.HasPrefix(s.A, "unflinchingly bleak") {
		t.Errorf("sst2 dev row 2 = %+v", s)
	}
}

// Fixtures in the standard GLUE TSV layouts.
func TestGLUEFixtures(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "glue/QQP/dev.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"+
		"1\t2\t3\tHow do I cook rice?\tWhat is the way to cook rice?\t1\n"+
		"4\t5\t6\tWhy?\tWhat?\t0\n")
	mnliHeader := "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
	mnliRow := func(s1, s2, gold string) string {
		return "0\t1\t1e\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\t" + s1 + "\t" + s2 + "\tneutral\tneutral\tneutral\tneutral\tneutral\t" + gold + "\n"
	}
	writeFile(t, dir, "glue/MNLI/dev_matched.tsv", mnliHeader+mnliRow("P1", "H1", "entailment")+mnliRow("P2", "H2", "contradiction"))
	writeFile(t, dir, "glue/MNLI/dev_mismatched.tsv", mnliHeader+mnliRow("P3", "H3", "neutral"))
	writeFile(t, dir, "glue/QNLI/dev.tsv", "index\tquestion\tsentence\tlabel\n0\tWho?\tHim.\tentailment\n1\tWhen?\tBlue.\tnot_entailment\n")
	writeFile(t, dir, "glue/STS-B/dev.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"+
		"0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t5.000\n"+
		"1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA young child is riding a horse.\tA child is riding a horse.\t4.750\n")
	writeFile(t, dir, "glue/WNLI/dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged with hair. It has to be cleaned.\tThe hair has to be cleaned.\t0\n")

	check := func(task, split string, want []PairExample) {
		t.Helper()
		got, err := ReadGLUE(task, split, dir)
		if err != nil {
			t.Fatalf("%s %s: %v", task, split, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s %s: %d examples, want %d", task, split, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("%s %s row %d = %+v, want %+v", task, split, i, got[i], want[i])
			}
		}
	}
	check("qqp", "dev", []PairExample{{"How do I cook rice?", "What is the way to cook rice?", 1, 0}, {"Why?", "What?", 0, 0}})
	check("mnli", "dev", []PairExample{{"P1", "H1", 0, 0}, {"P2", "H2", 2, 0}})
	check("mnli", "validation_mismatched", []PairExample{{"P3", "H3", 1, 0}})
	check("qnli", "dev", []PairExample{{"Who?", "Him.", 0, 0}, {"When?", "Blue.", 1, 0}})
	check("stsb", "dev", []PairExample{
		{"A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", -1, 5},
		{"A young child is riding a horse.", "A child is riding a horse.", -1, 4.75}})
	check("wnli", "dev", []PairExample{{"The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", 0, 0}})

	// Zero-shot through Evaluate with lm-eval's prompts: MNLI adds a final
	// period to the hypothesis; QNLI's answers are yes/no.
	lm := &fakeLM{lp: costLP}
	res, err := Evaluate(context.Background(), lm, byteTok{}, "mnli_mismatched", Options{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := bt.Decode(lm.calls[0][0].Context); got != "P3\nQuestion: H3. True, False or Neither?\nAnswer:" {
		t.Errorf("mnli prompt %q", got)
	}
	var conts []string
	for _, r := range lm.calls[0] {
		conts = append(conts, bt.Decode(r.Continuation))
	}
	if strings.Join(conts, "|") != " True| Neither| False" {
		t.Errorf("mnli continuations %q", conts)
	}
	if res.N != 1 {
		t.Errorf("N = %d", res.N)
	}
	if _, err := Evaluate(context.Background(), &fakeLM{lp: costLP}, byteTok{}, "qqp", Options{DataDir: dir}); err != nil {
		t.Error(err)
	}
}

func TestGLUEPromptsAndShots(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "glue/SST-2/dev.tsv", "sentence\tlabel\ngreat film \t1\n")
	writeFile(t, dir, "glue/SST-2/train.tsv", "sentence\tlabel\nawful \t0\n")
	lm := &fakeLM{lp: costLP}
	if _, err := Evaluate(context.Background(), lm, byteTok{}, "sst2", Options{DataDir: dir, Shots: 1}); err != nil {
		t.Fatal(err)
	}
	want := "awful \nQuestion: Is this sentence positive or negative?\nAnswer: negative\n\n" +
		"great film \nQuestion: Is this sentence positive or negative?\nAnswer:"
	if got := bt.Decode(lm.calls[0][0].Context); got != want {
		t.Errorf("sst2 1-shot prompt\n%q\nwant\n%q", got, want)
	}
	if a, b := bt.Decode(lm.calls[0][0].Continuation), bt.Decode(lm.calls[0][1].Continuation); a != " negative" || b != " positive" {
		t.Errorf("sst2 continuations %q %q", a, b)
	}
}

func TestErrorsNameTheProblem(t *testing.T) {
	dir := t.TempDir()
	lm := &fakeLM{lp: costLP}
	_, err := Evaluate(context.Background(), lm, byteTok{}, "nosuch", Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "hellaswag") || !strings.Contains(err.Error(), "sst2") {
		t.Errorf("unknown task error should list known tasks: %v", err)
	}
	_, err = Evaluate(context.Background(), lm, byteTok{}, "arc_easy", Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "qa/arc_easy.jsonl")) {
		t.Errorf("missing file error should say where it looked: %v", err)
	}
	_, err = Evaluate(context.Background(), lm, byteTok{}, "rte", Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "glue/RTE/val.jsonl")) {
		t.Errorf("missing GLUE file error should say where it looked: %v", err)
	}
	bad := writeFile(t, dir, "bad.jsonl", `{"query": "a", "choices": ["x", "y"], "gold": 0}`+"\n"+`{"query": "b", "choices": ["x", "y"], "gold": 2}`+"\n")
	_, err = Evaluate(context.Background(), lm, byteTok{}, "piqa", Options{Data: bad})
	if err == nil || !strings.Contains(err.Error(), bad+":2:") {
		t.Errorf("malformed row error should name file and line: %v", err)
	}
	tsv := writeFile(t, dir, "glue/SST-2/dev.tsv", "sentence\tlabel\nfine\t1\nbroken row\n")
	_, err = Evaluate(context.Background(), lm, byteTok{}, "sst2", Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), tsv+":3:") {
		t.Errorf("malformed TSV row error should name file and line: %v", err)
	}
	_, err = ReadGLUE("mnli", "test", dir)
	if err == nil || !strings.Contains(err.Error(), "dev_mismatched") {
		t.Errorf("unknown split should list known ones: %v", err)
	}
	hs := writeFile(t, dir, "h.txt", "ctx\n7\na\nb\nc\nd\n")
	if _, err := ReadHellaSwag(hs); err == nil || !strings.Contains(err.Error(), hs+":2:") {
		t.Errorf("bad HellaSwag label: %v", err)
	}
	if _, err := ParseHellaSwag(strings.NewReader("ctx\n1\na\n"), "short"); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("truncated HellaSwag: %v", err)
	}
	// Without BOS an empty context cannot be scored.
	wg := writeFile(t, dir, "w.jsonl", `{"context_options": ["", "b"], "continuation": "c", "gold": 0}`+"\n")
	if _, err := Evaluate(context.Background(), lm, byteTok{noBOS: true}, "winogrande", Options{Data: wg}); err == nil {
		t.Error("empty context without BOS should fail")
	}
}

func TestHellaSwagPreprocess(t *testing.T) {
	for in, want := range map[string]string{
		" How to x [title] Do y  ":            "How to x. Do y",
		"Visit [www.kiddio.org] to find toys": "Visit to find toys",
		"a  b":                                "a b",
		"already clean.":                      "already clean.",
	} {
		if got := PreprocessHellaSwag(in); got != want {
			t.Errorf("PreprocessHellaSwag(%q) = %q, want %q", in, got, want)
		}
	}
	// Plain and bzip2 input parse alike; bzip2 is detected by its magic.
	data := shared.Path(t, "data/reasoning/hellaswag_val_full.txt.bz2")
	f, err := os.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 0, 4096)
	sc := bytes.NewBuffer(nil)
	if _, err := io.CopyN(sc, bzip2.NewReader(f), 1<<14); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(sc.String(), "\n")
	head = append(head, strings.Join(lines[:12], "")...)
	items, err := ParseHellaSwag(bytes.NewReader(head), "head")
	if err != nil || len(items) != 2 || items[1].Gold != 3 || items[1].Choices[3] != "stands and lifts the weight over her head." {
		t.Errorf("plain HellaSwag head: %+v %v", items, err)
	}
}
