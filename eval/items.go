package eval

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/gopeft/gopeft/internal/safefile"
)

// Item is one multiple-choice question.
//
// Usually Query is the context and Choices are the answers, each scored as
// Query + " " + choice. When Contexts is set (WinoGrande), the choices are
// instead alternative contexts, and the shared Continuation is scored as
// context + " " + Continuation under each; Choices is then nil.
type Item struct {
	Query        string
	Choices      []string
	Contexts     []string
	Continuation string
	// Gold is the index of the right choice or context.
	Gold int
	// Score is the gold similarity of an STS-B pair; Gold is then the
	// nearest whole score, used only as a few-shot example's answer.
	Score float64
}

// numOptions is the number of choices or contexts.
func (it Item) numOptions() int {
	if it.Contexts != nil {
		return len(it.Contexts)
	}
	return len(it.Choices)
}

// lineError names a file and 1-based line (or JSON array row).
func lineError(name string, line int, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...))
}

// eachLine calls fn with every line of r (without its line ending) and its
// 1-based number. Lines may be of any length.
func eachLine(r io.Reader, name string, fn func(line string, n int) error) error {
	br := bufio.NewReaderSize(r, 1<<16)
	for n := 1; ; n++ {
		s, err := br.ReadString('\n')
		if len(s) > 0 {
			s = strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r")
			if ferr := fn(s, n); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
	}
}

// eachJSONLine decodes every non-blank line of r into a fresh T.
func eachJSONLine[T any](r io.Reader, name string, fn func(v *T, n int) error) error {
	return eachLine(r, name, func(line string, n int) error {
		if strings.TrimSpace(line) == "" {
			return nil
		}
		v := new(T)
		if err := json.Unmarshal([]byte(line), v); err != nil {
			return lineError(name, n, "bad JSON: %v", err)
		}
		return fn(v, n)
	})
}

// readFile opens path and hands it to parse, closing it after.
func readFile[T any](path string, parse func(io.Reader, string) (T, error)) (T, error) {
	// A device such as /dev/zero would stream forever.
	if _, err := safefile.CheckRegular(path); err != nil {
		var zero T
		return zero, err
	}
	f, err := os.Open(path)
	if err != nil {
		var zero T
		return zero, err
	}
	defer f.Close()
	return parse(f, path)
}

func checkGold(name string, line int, gold *int, n int) error {
	if gold == nil {
		return lineError(name, line, `missing "gold"`)
	}
	if *gold < 0 || *gold >= n {
		return lineError(name, line, "gold %d out of range for %d options", *gold, n)
	}
	return nil
}

// ReadChoices reads a {query, choices, gold} JSONL file (llm-foundry's
// multiple-choice format: BoolQ, ARC, OpenBookQA, PIQA, SIQA).
func ReadChoices(path string) ([]Item, error) { return readFile(path, ParseChoices) }

// ParseChoices parses {query, choices, gold} JSONL from r; name is used in
// error messages. Blank lines are skipped.
func ParseChoices(r io.Reader, name string) ([]Item, error) {
	type row struct {
		Query   *string  `json:"query"`
		Choices []string `json:"choices"`
		Gold    *int     `json:"gold"`
	}
	var items []Item
	err := eachJSONLine(r, name, func(v *row, n int) error {
		if v.Query == nil {
			return lineError(name, n, `missing "query"`)
		}
		if len(v.Choices) < 2 {
			return lineError(name, n, "want at least 2 choices, got %d", len(v.Choices))
		}
		if err := checkGold(name, n, v.Gold, len(v.Choices)); err != nil {
			return err
		}
		items = append(items, Item{Query: *v.Query, Choices: v.Choices, Gold: *v.Gold})
		return nil
	})
	return items, err
}

// ReadWinoGrande reads a {context_options, continuation, gold} JSONL file.
func ReadWinoGrande(path string) ([]Item, error) { return readFile(path, ParseWinoGrande) }

// ParseWinoGrande parses {context_options, continuation, gold} JSONL.
func ParseWinoGrande(r io.Reader, name string) ([]Item, error) {
	type row struct {
		Contexts     []string `json:"context_options"`
		Continuation *string  `json:"continuation"`
		Gold         *int     `json:"gold"`
	}
	var items []Item
	err := eachJSONLine(r, name, func(v *row, n int) error {
		if v.Continuation == nil {
			return lineError(name, n, `missing "continuation"`)
		}
		if len(v.Contexts) < 2 {
			return lineError(name, n, "want at least 2 context_options, got %d", len(v.Contexts))
		}
		if err := checkGold(name, n, v.Gold, len(v.Contexts)); err != nil {
			return err
		}
		items = append(items, Item{Contexts: v.Contexts, Continuation: *v.Continuation, Gold: *v.Gold})
		return nil
	})
	return items, err
}

// ReadHellaSwag reads the HellaSwag text format: six lines an item
// (context, gold label 0–3, four endings), bzip2-compressed when the file
// starts with the bzip2 magic "BZh". Text is returned as stored; the
// hellaswag task applies PreprocessHellaSwag.
func ReadHellaSwag(path string) ([]Item, error) { return readFile(path, ParseHellaSwag) }

// ParseHellaSwag parses the six-lines-an-item HellaSwag text format from r,
// decompressing bzip2 input.
func ParseHellaSwag(r io.Reader, name string) ([]Item, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(3); bytes.Equal(magic, []byte("BZh")) {
		r = bzip2.NewReader(br)
	} else {
		r = br
	}
	const per = 6
	var items []Item
	var cur []string
	err := eachLine(r, name, func(line string, n int) error {
		cur = append(cur, line)
		if len(cur) < per {
			return nil
		}
		start := n - per + 1
		gold, err := strconv.Atoi(strings.TrimSpace(cur[1]))
		if err != nil || gold < 0 || gold >= per-2 {
			return lineError(name, start+1, "item starting at line %d: label %q is not 0-3", start, cur[1])
		}
		items = append(items, Item{Query: cur[0], Choices: append([]string(nil), cur[2:]...), Gold: gold})
		cur = cur[:0]
		return nil
	})
	if err != nil {
		var se bzip2.StructuralError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%s: bzip2: %v", name, se)
		}
		return nil, err
	}
	if len(cur) != 0 {
		return nil, fmt.Errorf("%s: ends with an incomplete item (%d of %d lines)", name, len(cur), per)
	}
	return items, nil
}

var (
	hellaBrackets = regexp.MustCompile(`\[.*?\]`)
)

// PreprocessHellaSwag is lm-eval's hellaswag preprocess: trim, " [title]" →
// ". ", drop "[...]" spans, and replace double spaces by single ones (one
// pass, like Python's str.replace).
func PreprocessHellaSwag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.ReplaceAll(s, " [title]", ". ")
	s = hellaBrackets.ReplaceAllString(s, "")
	return strings.ReplaceAll(s, "  ", " ")
}

// AlpacaKind says how ReadAlpacaChoices maps an Alpaca-style training row
// back to a multiple-choice item.
type AlpacaKind int

const (
	// AlpacaARC: "Please choose the correct answer to the question: {q}\n\n
	// Answer1: a Answer2: b ...\n\nAnswer format: ...", answer "answerN";
	// the query becomes "Question: {q}" (the ARC evaluation files' form).
	AlpacaARC AlpacaKind = iota
	// AlpacaOpenBookQA: as AlpacaARC, but the query is the bare question
	// (the OpenBookQA evaluation file's form).
	AlpacaOpenBookQA
	// AlpacaBoolQ: "Please answer the following question with true or
	// false, question: {q}\n\nAnswer format: true/false", answer
	// "true"/"false"; the query becomes "Question: {q}", choices no/yes.
	// These rows have no passage.
	AlpacaBoolQ
)

// ReadAlpacaChoices reads an Alpaca-style JSON array of {instruction, input,
// output, answer} (LLM-Adapters' training splits) as multiple-choice items.
func ReadAlpacaChoices(path string, kind AlpacaKind) ([]Item, error) {
	return readFile(path, func(r io.Reader, name string) ([]Item, error) { return ParseAlpacaChoices(r, name, kind) })
}

var alpacaAnswer = regexp.MustCompile(`\s*Answer(\d+): `)

// ParseAlpacaChoices parses what ReadAlpacaChoices reads; errors name the
// 1-based row of the array.
func ParseAlpacaChoices(r io.Reader, name string, kind AlpacaKind) ([]Item, error) {
	var rows []struct {
		Instruction string `json:"instruction"`
		Answer      string `json:"answer"`
	}
	if err := json.NewDecoder(r).Decode(&rows); err != nil {
		return nil, fmt.Errorf("%s: bad JSON: %v", name, err)
	}
	rowErr := func(i int, format string, args ...any) error {
		return fmt.Errorf("%s: row %d: %s", name, i+1, fmt.Sprintf(format, args...))
	}
	items := make([]Item, 0, len(rows))
	for i, row := range rows {
		ins := row.Instruction
		if kind == AlpacaBoolQ {
			const pre = "Please answer the following question with true or false, question: "
			q, ok := strings.CutPrefix(ins, pre)
			if !ok {
				return nil, rowErr(i, "instruction does not start with %q", pre)
			}
			q, _, _ = strings.Cut(q, "\n\nAnswer format:")
			gold := map[string]int{"false": 0, "true": 1}
			g, ok := gold[strings.TrimSpace(row.Answer)]
			if !ok {
				return nil, rowErr(i, "answer %q is not true/false", row.Answer)
			}
			items = append(items, Item{Query: "Question: " + strings.TrimSpace(q), Choices: []string{"no", "yes"}, Gold: g})
			continue
		}
		const pre = "Please choose the correct answer to the question: "
		body, ok := strings.CutPrefix(ins, pre)
		if !ok {
			return nil, rowErr(i, "instruction does not start with %q", pre)
		}
		body, _, _ = strings.Cut(body, "\n\nAnswer format:")
		q, opts, ok := strings.Cut(body, "\n\n")
		if !ok {
			return nil, rowErr(i, "no answers after the question")
		}
		locs := alpacaAnswer.FindAllStringSubmatchIndex(opts, -1)
		if len(locs) < 2 || locs[0][0] != 0 {
			return nil, rowErr(i, "answers not in the form \"Answer1: ... Answer2: ...\"")
		}
		var choices []string
		for j, loc := range locs {
			if num, _ := strconv.Atoi(opts[loc[2]:loc[3]]); num != j+1 {
				return nil, rowErr(i, "answer %d is numbered %d", j+1, num)
			}
			end := len(opts)
			if j+1 < len(locs) {
				end = locs[j+1][0]
			}
			choices = append(choices, strings.TrimSpace(opts[loc[1]:end]))
		}
		num, ok := strings.CutPrefix(strings.TrimSpace(row.Answer), "answer")
		g, err := strconv.Atoi(num)
		if !ok || err != nil || g < 1 || g > len(choices) {
			return nil, rowErr(i, "answer %q is not answer1..answer%d", row.Answer, len(choices))
		}
		q = strings.TrimSpace(q)
		if kind == AlpacaARC {
			q = "Question: " + q
		}
		items = append(items, Item{Query: q, Choices: choices, Gold: g - 1})
	}
	return items, nil
}
