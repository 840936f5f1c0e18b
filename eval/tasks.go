package eval

import (
	"fmt"
	"math"
	"strings"
)

// taskSpec is one benchmark: where its files are, how items are read and
// prompted, and which metrics it reports.
type taskSpec struct {
	// find locates the evaluation ("dev") or training ("train") file.
	find func(dataDir, split string) (string, error)
	// load reads a file of the given split into items with final prompts.
	load func(path, split string) ([]Item, error)
	// hasTrain is false where few-shot examples come from the eval set.
	hasTrain bool
	metrics  []string
	// regression: STS-B, predicting a score from the choices' softmax.
	regression bool
	perplexity bool
}

// Metric names used in results.
const (
	MetricAcc         = "acc"
	MetricAccNorm     = "acc_norm"
	MetricAccBytes    = "acc_bytes"
	MetricF1          = "f1"
	MetricMCC         = "mcc"
	MetricPearson     = "pearson"
	MetricSpearman    = "spearman"
	MetricTokenPPL    = "token_perplexity"
	MetricWordPPL     = "word_perplexity"
	MetricBytePPL     = "byte_perplexity"
	MetricBitsPerByte = "bits_per_byte"
)

// answerSuffix turns llm-foundry's queries into lm-eval's prompts.
const answerSuffix = "\nAnswer:"

var (
	mcMetrics   = []string{MetricAcc, MetricAccNorm, MetricAccBytes}
	accMetrics  = []string{MetricAcc}
	f1Metrics   = []string{MetricAcc, MetricF1}
	stsbMetrics = []string{MetricPearson, MetricSpearman}
)

// gluePrompt is lm-eval's doc_to_text and doc_to_choice of a GLUE task.
type gluePrompt struct {
	text    func(a, b string) string
	choices []string
}

func question(q string) func(a, b string) string {
	return func(a, _ string) string { return a + "\nQuestion: " + q + "\nAnswer:" }
}

// gluePrompts follow lm-evaluation-harness lm_eval/tasks/glue/<task>/
// default.yaml (MNLI: mnli/utils.py). STS-B is not in lm-eval; its prompt
// is this package's own.
var gluePrompts = map[string]gluePrompt{
	"sst2": {question("Is this sentence positive or negative?"), []string{"negative", "positive"}},
	"cola": {question("Does this sentence make sense?"), []string{"no", "yes"}},
	"mrpc": {func(a, b string) string {
		return "Sentence 1: " + a + "\nSentence 2: " + b + "\nQuestion: Do both sentences mean the same thing?\nAnswer:"
	}, []string{"no", "yes"}},
	"qqp": {func(a, b string) string {
		return "Question 1: " + a + "\nQuestion 2: " + b + "\nQuestion: Do both questions ask the same thing?\nAnswer:"
	}, []string{"no", "yes"}},
	"mnli": {func(a, b string) string {
		h := strings.TrimSpace(b)
		if !strings.HasSuffix(h, ".") {
			h += "."
		}
		return a + "\nQuestion: " + h + " True, False or Neither?\nAnswer:"
	}, []string{"True", "Neither", "False"}},
	"qnli": {func(a, b string) string {
		return a + "\n" + b + "\nQuestion: Does this response answer the question?\nAnswer:"
	}, []string{"yes", "no"}},
	"rte":  {trueFalse, []string{"True", "False"}},
	"wnli": {trueFalse, []string{"False", "True"}},
	"stsb": {func(a, b string) string {
		return "Sentence 1: " + a + "\nSentence 2: " + b + "\nQuestion: On a scale of 0 to 5, how similar are the two sentences?\nAnswer:"
	}, []string{"0", "1", "2", "3", "4", "5"}},
}

func trueFalse(a, b string) string { return a + "\nQuestion: " + b + " True or False?\nAnswer:" }

func glueTask(name, glueName, devSplit string, metrics []string) taskSpec {
	p := gluePrompts[glueName]
	return taskSpec{
		find: func(dataDir, split string) (string, error) {
			if split == "dev" {
				split = devSplit
			}
			return GLUEPath(glueName, split, dataDir)
		},
		load: func(path, _ string) ([]Item, error) {
			exs, err := ReadGLUEFile(glueName, path)
			if err != nil {
				return nil, err
			}
			items := make([]Item, len(exs))
			for i, ex := range exs {
				items[i] = Item{Query: p.text(ex.A, ex.B), Choices: p.choices, Gold: ex.Label, Score: ex.Score}
				if ex.Label < 0 { // STS-B: the nearest whole score is the few-shot answer
					items[i].Gold = int(math.Round(ex.Score))
				}
			}
			return items, nil
		},
		hasTrain:   true,
		metrics:    metrics,
		regression: glueName == "stsb",
	}
}

// files returns a find function over fixed candidate paths per split.
func files(dev []string, train []string) func(dataDir, split string) (string, error) {
	return func(dataDir, split string) (string, error) {
		if split == "train" {
			if train == nil {
				return "", fmt.Errorf("no training split")
			}
			return findFile(dataDir, train)
		}
		return findFile(dataDir, dev)
	}
}

// qaTask is an llm-foundry {query, choices, gold} task; suffix is appended
// to the query (after trimming trailing white space) to reach lm-eval's
// prompt.
func qaTask(dev, train string, kind AlpacaKind, suffix string, metrics []string) taskSpec {
	var trainFiles []string
	if train != "" {
		trainFiles = []string{train}
	}
	return taskSpec{
		find: files([]string{dev}, trainFiles),
		load: func(path, split string) ([]Item, error) {
			var items []Item
			var err error
			if split == "train" {
				items, err = ReadAlpacaChoices(path, kind)
			} else {
				items, err = ReadChoices(path)
			}
			for i := range items {
				items[i].Query = strings.TrimRight(items[i].Query, " \t\r\n") + suffix
			}
			return items, err
		},
		hasTrain: train != "",
		metrics:  metrics,
	}
}

var tasks = map[string]taskSpec{
	"sst2":            glueTask("sst2", "sst2", "dev", accMetrics),
	"mrpc":            glueTask("mrpc", "mrpc", "dev", f1Metrics),
	"rte":             glueTask("rte", "rte", "dev", accMetrics),
	"cola":            glueTask("cola", "cola", "dev", []string{MetricMCC, MetricAcc}),
	"qqp":             glueTask("qqp", "qqp", "dev", f1Metrics),
	"mnli":            glueTask("mnli", "mnli", "dev_matched", accMetrics),
	"mnli_mismatched": glueTask("mnli_mismatched", "mnli", "dev_mismatched", accMetrics),
	"qnli":            glueTask("qnli", "qnli", "dev", accMetrics),
	"stsb":            glueTask("stsb", "stsb", "dev", stsbMetrics),
	"wnli":            glueTask("wnli", "wnli", "dev", accMetrics),

	"boolq":         qaTask("qa/boolq.jsonl", "train/boolq.train.json", AlpacaBoolQ, answerSuffix, accMetrics),
	"arc_easy":      qaTask("qa/arc_easy.jsonl", "train/ARC-Easy.train.json", AlpacaARC, answerSuffix, mcMetrics),
	"arc_challenge": qaTask("qa/arc_challenge.jsonl", "train/ARC-Challenge.train.json", AlpacaARC, answerSuffix, mcMetrics),
	"openbookqa":    qaTask("qa/openbook_qa.jsonl", "train/openbookqa.train.json", AlpacaOpenBookQA, "", mcMetrics),
	"piqa":          qaTask("reasoning/piqa.jsonl", "", 0, answerSuffix, mcMetrics),
	"siqa":          qaTask("reasoning/siqa.jsonl", "", 0, "", accMetrics),

	"winogrande": {
		find:    files([]string{"reasoning/winogrande.jsonl"}, nil),
		load:    func(path, _ string) ([]Item, error) { return ReadWinoGrande(path) },
		metrics: accMetrics,
	},
	"hellaswag": {
		find: files([]string{"reasoning/hellaswag_val_full.txt.bz2", "reasoning/hellaswag_val_full.txt"}, nil),
		load: func(path, _ string) ([]Item, error) {
			items, err := ReadHellaSwag(path)
			for i := range items {
				items[i].Query = PreprocessHellaSwag(items[i].Query)
				for j, c := range items[i].Choices {
					items[i].Choices[j] = PreprocessHellaSwag(c)
				}
			}
			return items, err
		},
		metrics: mcMetrics,
	},
	"perplexity": {
		find:       files([]string{"text/wiki_demo.txt"}, nil),
		metrics:    []string{MetricTokenPPL, MetricWordPPL, MetricBytePPL, MetricBitsPerByte},
		perplexity: true,
	},
}

// Tasks lists the task names Evaluate knows, sorted.
func Tasks() []string { return sortedKeys(tasks) }

// shotText is a few-shot example: the prompt, a space, the gold answer.
func shotText(it Item) string {
	if it.Contexts != nil {
		return it.Contexts[it.Gold] + " " + it.Continuation
	}
	return it.Query + " " + it.Choices[it.Gold]
}
