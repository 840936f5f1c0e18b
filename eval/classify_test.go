package eval

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/eval/metrics"
)

// lengthClassifier predicts class 1 for sequences longer than a threshold
// and counts the sequences it saw.
type lengthClassifier struct {
	threshold, classes int
	seen               [][]int
}

func (c *lengthClassifier) Classify(_ context.Context, seqs [][]int) ([][]float64, error) {
	out := make([][]float64, len(seqs))
	for i, s := range seqs {
		c.seen = append(c.seen, s)
		out[i] = make([]float64, c.classes)
		if len(s) > c.threshold {
			out[i][1] = 1
		} else {
			out[i][0] = 1
		}
	}
	return out, nil
}

func TestClassifyInput(t *testing.T) {
	ids := ClassifyInput(byteTok{}, PairExample{A: " ab ", B: "c"}, 0)
	if want := []int{1, 'a' + 3, 'b' + 3, '\n' + 3, 'c' + 3}; !slices.Equal(ids, want) {
		t.Errorf("pair: %v, want %v", ids, want)
	}
	if ids := ClassifyInput(byteTok{}, PairExample{A: "abcdef"}, 3); !slices.Equal(ids, []int{1, 'a' + 3, 'b' + 3}) {
		t.Errorf("truncated: %v", ids)
	}
	if ids := ClassifyInput(byteTok{noBOS: true}, PairExample{A: "a"}, 0); !slices.Equal(ids, []int{'a' + 3}) {
		t.Errorf("no BOS: %v", ids)
	}
}

func TestEvaluateClassifierMetrics(t *testing.T) {
	dir := t.TempDir()
	// CoLA: no header; label in column 1, sentence in column 3.
	rows := []struct {
		label int
		text  string
	}{{1, "long sentence"}, {0, "short"}, {1, "tiny"}, {0, "another long one"}, {1, "quite long indeed"}, {0, "no"}}
	var b strings.Builder
	for _, r := range rows {
		b.WriteString("src\t" + string(rune('0'+r.label)) + "\t\t" + r.text + "\n")
	}
	writeFile(t, dir, "glue/CoLA/in_domain_dev.tsv", b.String())
	clf := &lengthClassifier{threshold: 8, classes: 2}
	res, err := EvaluateClassifier(context.Background(), clf, byteTok{}, "cola", Options{DataDir: dir, BootstrapIters: -1})
	if err != nil {
		t.Fatal(err)
	}
	var pred, gold []int
	for _, r := range rows {
		p := 0
		if len(r.text)+1 > 8 { // BOS + one token a byte
			p = 1
		}
		pred, gold = append(pred, p), append(gold, r.label)
	}
	if len(clf.seen) != len(rows) || res.N != len(rows) {
		t.Fatalf("classified %d sequences, N %d; want %d", len(clf.seen), res.N, len(rows))
	}
	for name, want := range map[string]float64{MetricMCC: metrics.MCC(pred, gold), MetricAcc: metrics.Accuracy(pred, gold)} {
		m, ok := res.Metric(name)
		if !ok || math.Abs(m.Value-want) > 1e-12 {
			t.Errorf("%s = %v (present %v), want %v", name, m.Value, ok, want)
		}
	}
	// Limit takes the first items; a wrong number of classes is an error.
	res, err = EvaluateClassifier(context.Background(), &lengthClassifier{threshold: 8, classes: 2}, byteTok{}, "cola", Options{DataDir: dir, Limit: 2, BootstrapIters: -1})
	if err != nil || res.N != 2 {
		t.Errorf("limit 2: N %d, %v", res.N, err)
	}
	if _, err := EvaluateClassifier(context.Background(), &lengthClassifier{threshold: 8, classes: 3}, byteTok{}, "cola", Options{DataDir: dir}); err == nil {
		t.Error("3 class scores accepted for CoLA")
	}
	for _, task := range []string{"stsb", "hellaswag", "nope"} {
		if _, err := EvaluateClassifier(context.Background(), clf, byteTok{}, task, Options{DataDir: dir}); err == nil {
			t.Errorf("%s: evaluated as a classification task", task)
		}
	}
}

func TestNumClasses(t *testing.T) {
	for task, want := range map[string]int{"sst2": 2, "mnli": 3, "mnli_mismatched": 3, "rte": 2, "cola": 2, "qqp": 2} {
		if n, err := NumClasses(task); err != nil || n != want {
			t.Errorf("%s: %d classes, %v; want %d", task, n, err, want)
		}
	}
	if !slices.Contains(ClassificationTasks(), "sst2") || slices.Contains(ClassificationTasks(), "stsb") {
		t.Errorf("ClassificationTasks() = %v", ClassificationTasks())
	}
}
