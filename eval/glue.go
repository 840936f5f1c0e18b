package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// PairExample is one GLUE example: a sentence (A) or sentence pair (A, B)
// and its label. Label is the class index in Hugging Face's GLUE
// convention (SST-2/CoLA/MRPC/QQP/WNLI: 0 or 1 as in the files; MNLI:
// entailment 0, neutral 1, contradiction 2; RTE/QNLI: entailment 0,
// not_entailment 1). STS-B has Score (0–5) instead, and Label -1.
type PairExample struct {
	A, B  string
	Label int
	Score float64
}

// glueSpec describes one GLUE task's files and columns.
type glueSpec struct {
	dirs   []string            // folder names under dataDir/glue/ or dataDir/
	splits map[string][]string // split → candidate file names, first found wins
	// Columns by header name; for headerless files (CoLA) by index.
	header        bool
	a, b, label   string
	ai, bi, li    int
	labels        map[string]int // textual labels; nil means an integer column
	score         bool           // STS-B: label column is a float score
	jsonl         bool           // RTE's jiant JSONL: premise, hypothesis, label
	jsonlFallback bool           // try JSONL when the name ends in .jsonl
}

var nliLabels = map[string]int{"entailment": 0, "not_entailment": 1}

var glueSpecs = map[string]glueSpec{
	"sst2": {dirs: []string{"SST-2", "sst2"}, header: true, a: "sentence", label: "label",
		splits: map[string][]string{"train": {"train.tsv"}, "dev": {"dev.tsv"}}},
	"mrpc": {dirs: []string{"MRPC", "mrpc"}, header: true, a: "#1 String", b: "#2 String", label: "Quality",
		splits: map[string][]string{"train": {"train.tsv"}, "dev": {"dev.tsv"}}},
	"cola": {dirs: []string{"CoLA", "cola"}, ai: 3, bi: -1, li: 1,
		splits: map[string][]string{
			"train":   {"in_domain_train.tsv", "train.tsv"},
			"dev":     {"in_domain_dev.tsv", "dev.tsv"},
			"dev_ood": {"out_of_domain_dev.tsv"},
		}},
	"rte": {dirs: []string{"RTE", "rte"}, header: true, a: "sentence1", b: "sentence2", label: "label", labels: nliLabels,
		jsonlFallback: true,
		splits:        map[string][]string{"train": {"train.jsonl", "train.tsv"}, "dev": {"val.jsonl", "dev.tsv"}}},
	"qqp": {dirs: []string{"QQP", "qqp"}, header: true, a: "question1", b: "question2", label: "is_duplicate",
		splits: map[string][]string{"train": {"train.tsv"}, "dev": {"dev.tsv"}}},
	"mnli": {dirs: []string{"MNLI", "mnli"}, header: true, a: "sentence1", b: "sentence2", label: "gold_label",
		labels: map[string]int{"entailment": 0, "neutral": 1, "contradiction": 2},
		splits: map[string][]string{
			"train":          {"train.tsv"},
			"dev":            {"dev_matched.tsv"},
			"dev_matched":    {"dev_matched.tsv"},
			"dev_mismatched": {"dev_mismatched.tsv"},
		}},
	"qnli": {dirs: []string{"QNLI", "qnli"}, header: true, a: "question", b: "sentence", label: "label", labels: nliLabels,
		splits: map[string][]string{"train": {"train.tsv"}, "dev": {"dev.tsv"}}},
	"stsb": {dirs: []string{"STS-B", "stsb"}, header: true, a: "sentence1", b: "sentence2", label: "score", score: true,
		splits: map[string][]string{"train": {"train.tsv"}, "dev": {"dev.tsv"}}},
	"wnli": {dirs: []string{"WNLI", "wnli"}, header: true, a: "sentence1", b: "sentence2", label: "label",
		splits: map[string][]string{"train": {"train.tsv"}, "dev": {"dev.tsv"}}},
}

// GLUETasks lists the GLUE task names ReadGLUE knows.
func GLUETasks() []string { return sortedKeys(glueSpecs) }

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// splitAlias maps common split names to the ones used here.
func splitAlias(split string) string {
	switch split {
	case "validation", "val", "valid":
		return "dev"
	case "validation_matched":
		return "dev_matched"
	case "validation_mismatched":
		return "dev_mismatched"
	}
	return split
}

// GLUEPath finds the file of a GLUE task's split ("train", "dev"; MNLI
// also "dev_matched"/"dev_mismatched", CoLA "dev_ood") under
// dataDir/glue/<Task>/ or dataDir/<Task>/, where <Task> is the GLUE folder
// name (SST-2, MRPC, CoLA, RTE, QQP, MNLI, QNLI, STS-B, WNLI) or the
// lower-case task name. The error lists every path it tried.
func GLUEPath(task, split, dataDir string) (string, error) {
	spec, ok := glueSpecs[task]
	if !ok {
		return "", fmt.Errorf("unknown GLUE task %q (known: %s)", task, strings.Join(GLUETasks(), ", "))
	}
	names, ok := spec.splits[splitAlias(split)]
	if !ok {
		return "", fmt.Errorf("GLUE task %s has no split %q (known: %s)", task, split, strings.Join(sortedKeys(spec.splits), ", "))
	}
	var cands []string
	for _, name := range names {
		for _, d := range spec.dirs {
			cands = append(cands, filepath.Join("glue", d, name), filepath.Join(d, name))
		}
	}
	return findFile(dataDir, cands)
}

// findFile returns the first of dataDir/rel that exists, or an error
// naming all of them.
func findFile(dataDir string, rels []string) (string, error) {
	var tried []string
	for _, rel := range rels {
		p := filepath.Join(dataDir, rel)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
		tried = append(tried, p)
	}
	return "", fmt.Errorf("data file not found; looked for: %s", strings.Join(tried, ", "))
}

// ReadGLUE reads one split of a GLUE task from dataDir (see GLUEPath).
func ReadGLUE(task, split, dataDir string) ([]PairExample, error) {
	path, err := GLUEPath(task, split, dataDir)
	if err != nil {
		return nil, err
	}
	return ReadGLUEFile(task, path)
}

// ReadGLUEFile reads a GLUE task's file in its standard layout: TSV with a
// header naming the columns (CoLA: no header; source, label, original
// label, sentence), or for RTE also jiant's JSONL {premise, hypothesis,
// label}. Fields are split on tabs only — GLUE files are not quoted.
func ReadGLUEFile(task, path string) ([]PairExample, error) {
	if _, ok := glueSpecs[task]; !ok {
		return nil, fmt.Errorf("unknown GLUE task %q (known: %s)", task, strings.Join(GLUETasks(), ", "))
	}
	return readFile(path, func(r io.Reader, name string) ([]PairExample, error) { return ParseGLUE(task, r, name) })
}

// ParseGLUE parses a GLUE task's file from r; name (the file name) is used
// in errors and to tell JSONL (".jsonl") from TSV.
func ParseGLUE(task string, r io.Reader, name string) ([]PairExample, error) {
	spec, ok := glueSpecs[task]
	if !ok {
		return nil, fmt.Errorf("unknown GLUE task %q (known: %s)", task, strings.Join(GLUETasks(), ", "))
	}
	if spec.jsonlFallback && strings.HasSuffix(name, ".jsonl") {
		return parseNLIJSONL(spec, r, name)
	}
	var out []PairExample
	ai, bi, li := spec.ai, spec.bi, spec.li
	haveHeader := !spec.header
	err := eachLine(r, name, func(line string, n int) error {
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if strings.TrimSpace(line) == "" {
			return nil
		}
		f := strings.Split(line, "\t")
		if !haveHeader {
			col := func(c string) (int, error) {
				if c == "" {
					return -1, nil
				}
				for i, h := range f {
					if strings.TrimSpace(h) == c {
						return i, nil
					}
				}
				return 0, lineError(name, n, "header has no column %q (has %q)", c, f)
			}
			var err error
			if ai, err = col(spec.a); err != nil {
				return err
			}
			if bi, err = col(spec.b); err != nil {
				return err
			}
			if li, err = col(spec.label); err != nil {
				return err
			}
			haveHeader = true
			return nil
		}
		if need := max(ai, bi, li) + 1; len(f) < need {
			return lineError(name, n, "%d tab-separated fields, want at least %d", len(f), need)
		}
		ex := PairExample{A: f[ai]}
		if bi >= 0 {
			ex.B = f[bi]
		}
		lab := strings.TrimSpace(f[li])
		var err error
		if ex.Label, ex.Score, err = parseLabel(spec, lab); err != nil {
			return lineError(name, n, "%v", err)
		}
		out = append(out, ex)
		return nil
	})
	if err == nil && !haveHeader {
		err = fmt.Errorf("%s: empty file (no header)", name)
	}
	return out, err
}

func parseLabel(spec glueSpec, lab string) (int, float64, error) {
	if spec.score {
		s, err := strconv.ParseFloat(lab, 64)
		if err != nil || !(s >= 0 && s <= 5) {
			return 0, 0, fmt.Errorf("score %q is not a number in [0, 5]", lab)
		}
		return -1, s, nil
	}
	if spec.labels != nil {
		if v, ok := spec.labels[lab]; ok {
			return v, 0, nil
		}
		// Also accept the class index.
		if v, err := strconv.Atoi(lab); err == nil && v >= 0 && v < len(spec.labels) {
			return v, 0, nil
		}
		return 0, 0, fmt.Errorf("label %q is not one of %s", lab, strings.Join(sortedKeys(spec.labels), ", "))
	}
	if lab != "0" && lab != "1" {
		return 0, 0, fmt.Errorf("label %q is not 0 or 1", lab)
	}
	return int(lab[0] - '0'), 0, nil
}

func parseNLIJSONL(spec glueSpec, r io.Reader, name string) ([]PairExample, error) {
	type row struct {
		Premise    *string         `json:"premise"`
		Hypothesis *string         `json:"hypothesis"`
		Label      json.RawMessage `json:"label"`
	}
	var out []PairExample
	err := eachJSONLine(r, name, func(v *row, n int) error {
		if v.Premise == nil || v.Hypothesis == nil || v.Label == nil {
			return lineError(name, n, `want "premise", "hypothesis" and "label"`)
		}
		var lab string
		if err := json.Unmarshal(v.Label, &lab); err != nil {
			lab = string(v.Label) // a numeric label
		}
		l, _, err := parseLabel(spec, lab)
		if err != nil {
			return lineError(name, n, "%v", err)
		}
		out = append(out, PairExample{A: *v.Premise, B: *v.Hypothesis, Label: l})
		return nil
	})
	return out, err
}
