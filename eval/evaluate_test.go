package eval

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/tokenizer"
)

// Every task with shipped data runs end to end on its default files.
func TestEveryShippedTaskRuns(t *testing.T) {
	data := shared.Path(t, "data")
	noData := map[string]bool{"qqp": true, "mnli": true, "mnli_mismatched": true, "qnli": true, "stsb": true, "wnli": true}
	for _, task := range Tasks() {
		if noData[task] {
			continue
		}
		if task == "hellaswag" && testing.Short() {
			continue
		}
		t.Run(task, func(t *testing.T) {
			lm := &fakeLM{lp: bigramLP{vocab: 259}.lp}
			var samples, progress bytes.Buffer
			shots := 1
			if task == "perplexity" {
				shots = 0
			}
			res, err := Evaluate(context.Background(), lm, byteTok{}, task, Options{DataDir: data, Limit: 3, Shots: shots, Seed: 1234, Samples: &samples, Progress: &progress})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Metrics) == 0 || !strings.HasPrefix(res.Data, data) {
				t.Errorf("result %+v", res)
			}
			lines := strings.Count(samples.String(), "\n")
			if task == "perplexity" {
				if lines != 1 {
					t.Errorf("%d sample lines for perplexity", lines)
				}
			} else if res.N != 3 || lines != 3 {
				t.Errorf("N %d, %d sample lines; want 3", res.N, lines)
			}
			if !strings.Contains(progress.String(), task+": ") {
				t.Errorf("no progress: %q", progress.String())
			}
		})
	}
}

func TestRealTokenizerSplit(t *testing.T) {
	p := shared.Path(t, "data/models/stories260K/tok512.bin")
	tok, err := tokenizer.Load(p)
	if err != nil {
		t.Skipf("tokenizer not loadable yet: %v", err)
	}
	dir := t.TempDir()
	writeFile(t, dir, "glue/SST-2/dev.tsv", "sentence\tlabel\nit 's a charming journey . \t1\n")
	lm := &fakeLM{lp: bigramLP{vocab: tok.VocabSize()}.lp}
	if _, err := Evaluate(context.Background(), lm, tok, "sst2", Options{DataDir: dir}); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"negative", "positive"} {
		r := lm.calls[0][i]
		if r.Context[0] != tok.BOS() {
			t.Errorf("context does not start with BOS: %v", r.Context[:2])
		}
		if got := tok.Decode(r.Context); !strings.HasSuffix(got, "\nAnswer:") {
			t.Errorf("context decodes to %q", got)
		}
		whole := tok.Decode(append(append([]int(nil), r.Context...), r.Continuation...))
		if !strings.HasSuffix(whole, "Answer: "+want) {
			t.Errorf("choice %d: whole text %q does not end with the answer", i, whole)
		}
	}
}

type failLM struct{ n int }

func (f failLM) LogLikelihood(_ context.Context, reqs []Request) ([]float64, error) {
	return make([]float64, len(reqs)+f.n), nil
}

func TestBadModelAnswersAndCancel(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "x.jsonl", `{"query": "Q", "choices": ["a", "b"], "gold": 0}`+"\n")
	if _, err := Evaluate(context.Background(), failLM{1}, byteTok{}, "piqa", Options{Data: path}); err == nil || !strings.Contains(err.Error(), "3 log-likelihoods for 2 requests") {
		t.Errorf("wrong count not reported: %v", err)
	}
	pos := &fakeLM{lp: func(int, int) float64 { return 0.5 }}
	if _, err := Evaluate(context.Background(), pos, byteTok{}, "piqa", Options{Data: path}); err == nil {
		t.Error("positive log-likelihood accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Evaluate(ctx, &fakeLM{lp: costLP}, byteTok{}, "piqa", Options{Data: path}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	if _, err := Evaluate(context.Background(), &fakeLM{lp: costLP}, byteTok{}, "piqa", Options{Data: filepath.Join(dir, "none.jsonl")}); err == nil || !strings.Contains(err.Error(), "none.jsonl") {
		t.Errorf("missing explicit file: %v", err)
	}
}
