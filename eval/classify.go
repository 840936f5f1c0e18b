package eval

import (
	"context"
	"fmt"
	"strings"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tokenizer"
)

// Classifier predicts class scores (logits) for token sequences with a
// classification head, as a fine-tuned sequence classifier does (Hugging
// Face's ForSequenceClassification models).
type Classifier interface {
	// Classify returns one row of class scores per sequence.
	Classify(ctx context.Context, seqs [][]int) ([][]float64, error)
}

// PairSeparator joins the two sentences of a pair task into one text.
const PairSeparator = "\n"

// classifyTask maps an evaluation task to its GLUE task and dev split.
// STS-B is a regression task and has no classes.
func classifyTask(task string) (glue, dev string, err error) {
	switch {
	case task == "mnli_mismatched":
		return "mnli", "dev_mismatched", nil
	case task == "stsb":
		return "", "", fmt.Errorf("stsb is a regression task; a classification head cannot be evaluated on it")
	}
	if _, ok := glueSpecs[task]; !ok {
		return "", "", fmt.Errorf("task %q has no classification data (GLUE classification tasks: %s)", task, strings.Join(ClassificationTasks(), ", "))
	}
	return task, "dev", nil
}

// ClassificationTasks lists the tasks a classification head can be trained
// and evaluated on: the GLUE classification tasks.
func ClassificationTasks() []string {
	var out []string
	for _, t := range GLUETasks() {
		if t != "stsb" {
			out = append(out, t)
		}
	}
	return append(out, "mnli_mismatched")
}

// NumClasses is the number of classes of a GLUE classification task (3
// for MNLI, 2 for the others).
func NumClasses(task string) (int, error) {
	glue, _, err := classifyTask(task)
	if err != nil {
		return 0, err
	}
	return len(gluePrompts[glue].choices), nil
}

// ClassifyText is the text a classifier reads for a GLUE example: the
// sentence, or the two sentences joined by PairSeparator.
func ClassifyText(ex PairExample) string {
	a := strings.TrimSpace(ex.A)
	if b := strings.TrimSpace(ex.B); b != "" {
		return a + PairSeparator + b
	}
	return a
}

// ClassifyInput encodes a GLUE example for a classifier: BOS (when the
// tokenizer has one) and the text, cut to maxLen tokens (maxLen ≤ 0: no
// limit). The head reads the last token, so the text keeps its start.
func ClassifyInput(tok tokenizer.Tokenizer, ex PairExample, maxLen int) []int {
	ids := tokenizer.EncodeSpecial(tok, ClassifyText(ex), true, false)
	if maxLen > 0 && len(ids) > maxLen {
		ids = ids[:maxLen]
	}
	return ids
}

// ClassifyData reads one split ("train", "dev", ...) of a GLUE
// classification task under dataDir and encodes it with ClassifyInput:
// the sequences, their class labels, and the file read.
func ClassifyData(task, split, dataDir string, tok tokenizer.Tokenizer, maxLen int) (seqs [][]int, labels []int, path string, err error) {
	glue, dev, err := classifyTask(task)
	if err != nil {
		return nil, nil, "", err
	}
	if split == "dev" {
		split = dev
	}
	if path, err = GLUEPath(glue, split, dataDir); err != nil {
		return nil, nil, "", fmt.Errorf("%s: %w", task, err)
	}
	seqs, labels, err = classifyFile(glue, path, tok, maxLen)
	return seqs, labels, path, err
}

func classifyFile(glue, path string, tok tokenizer.Tokenizer, maxLen int) ([][]int, []int, error) {
	exs, err := ReadGLUEFile(glue, path)
	if err != nil {
		return nil, nil, err
	}
	seqs, labels := make([][]int, len(exs)), make([]int, len(exs))
	for i, ex := range exs {
		seqs[i], labels[i] = ClassifyInput(tok, ex, maxLen), ex.Label
		if len(seqs[i]) == 0 {
			return nil, nil, fmt.Errorf("%s: example %d encodes to no tokens and the tokenizer has no BOS", path, i+1)
		}
	}
	return seqs, labels, nil
}

// classifyChunk is how many sequences go to the classifier per call (for
// progress and cancellation; the classifier batches within a call).
const classifyChunk = 256

// EvaluateClassifier scores a classification head on a GLUE task's dev
// split (or opts.Data): the prediction is the argmax of the class scores,
// and the task's usual metrics are reported (accuracy; F1 for MRPC and
// QQP; Matthews correlation for CoLA). opts.Limit, MaxLen, DataDir,
// BootstrapIters, Seed and Progress apply as in Evaluate.
func EvaluateClassifier(ctx context.Context, clf Classifier, tok tokenizer.Tokenizer, task string, opts Options) (Result, error) {
	glue, dev, err := classifyTask(task)
	if err != nil {
		return Result{}, err
	}
	if opts.Limit < 0 {
		return Result{}, fmt.Errorf("%s: limit must not be negative", task)
	}
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir()
	}
	if opts.MaxLen == 0 {
		if m, ok := clf.(MaxLengther); ok {
			opts.MaxLen = m.MaxLength()
		}
	}
	if opts.BootstrapIters == 0 {
		opts.BootstrapIters = 1000
	}
	path := opts.Data
	if path == "" {
		if path, err = GLUEPath(glue, dev, opts.DataDir); err != nil {
			return Result{}, fmt.Errorf("%s: %w", task, err)
		}
	}
	seqs, labels, err := classifyFile(glue, path, tok, opts.MaxLen)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", task, err)
	}
	if opts.Limit > 0 && opts.Limit < len(seqs) {
		seqs, labels = seqs[:opts.Limit], labels[:opts.Limit]
	}
	if len(seqs) == 0 {
		return Result{}, fmt.Errorf("%s: %s has no items", task, path)
	}
	classes, _ := NumClasses(task)
	items := make([]Item, len(seqs))
	sc := make([]scored, len(seqs))
	correct := 0.0
	for start := 0; start < len(seqs); start += classifyChunk {
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		end := min(start+classifyChunk, len(seqs))
		scores, err := clf.Classify(ctx, seqs[start:end])
		if err != nil {
			return Result{}, fmt.Errorf("%s: items %d-%d: %w", task, start, end-1, err)
		}
		if len(scores) != end-start {
			return Result{}, fmt.Errorf("%s: the classifier returned %d score rows for %d sequences", task, len(scores), end-start)
		}
		for i, s := range scores {
			if len(s) != classes {
				return Result{}, fmt.Errorf("%s: the classifier gives %d classes; %s has %d", task, len(s), task, classes)
			}
			k := start + i
			items[k] = Item{Gold: labels[k]}
			sc[k] = scored{lls: s, pred: tensor.Argmax(s)}
			if sc[k].pred == labels[k] {
				sc[k].correct = 1
				correct++
			}
		}
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "%s: %d/%d items, acc %.4f\n", task, end, len(seqs), correct/float64(end))
		}
	}
	res := Result{Task: task, Data: path, N: len(seqs)}
	res.Metrics = computeMetrics(tasks[task], items, sc, opts)
	return res, nil
}
