package eval

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"unicode"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/internal/safefile"
	"github.com/gopeft/gopeft/tokenizer"
)

// defaultWindow is the perplexity window when neither Options.MaxLen nor
// the model says.
const defaultWindow = 2048

// RollingWindows cuts tokens into requests covering every token once, as
// lm-eval's get_rolling_token_windows followed by make_disjoint_window:
// each window holds at most maxLen tokens of input; the first predicts
// tokens[0:maxLen] from prefix (BOS) alone, later ones predict up to
// maxLen-contextLen+1 new tokens with at least contextLen tokens of context
// (more for the last, shorter window, which reads a full maxLen).
// It panics if not 1 <= contextLen <= maxLen.
func RollingWindows(tokens []int, prefix, maxLen, contextLen int) []Request {
	if contextLen < 1 || contextLen > maxLen {
		panic(fmt.Sprintf("eval: RollingWindows: context length %d not in [1, %d]", contextLen, maxLen))
	}
	if len(tokens) == 0 {
		return nil
	}
	predLen := maxLen - contextLen + 1
	first := min(maxLen, len(tokens))
	reqs := []Request{{Context: []int{prefix}, Continuation: tokens[:first]}}
	for done := first; done < len(tokens); {
		n := min(len(tokens)-done, predLen)
		end := done + n
		input := tokens[end-maxLen-1 : end-1]
		reqs = append(reqs, Request{Context: input[:len(input)-(n-1)], Continuation: tokens[end-n : end]})
		done = end
	}
	return reqs
}

// countWords counts like Python's len(re.split(r"\s+", text)): one more
// than the number of white-space runs.
func countWords(text string) int {
	n, inSpace := 1, false
	for _, r := range text {
		sp := unicode.IsSpace(r)
		if sp && !inSpace {
			n++
		}
		inSpace = sp
	}
	return n
}

// firstLines returns the first n lines of b (all if n <= 0).
func firstLines(b []byte, n int) []byte {
	if n <= 0 {
		return b
	}
	off := 0
	for range n {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return b
		}
		off += i + 1
	}
	return b[:off]
}

// perplexityDocs reads the documents of a perplexity file: the rows'
// "text" of a JSONL file (first limit rows), or the whole of any other
// file as one document (first limit lines; with heldOut > 0, of its last
// heldOut fraction as data.SplitText cuts it).
func perplexityDocs(path string, limit int, heldOut float64) ([]string, error) {
	if strings.HasSuffix(path, ".jsonl") {
		if heldOut != 0 {
			return nil, fmt.Errorf("%s: an eval fraction applies to a plain-text file, not to JSONL rows", path)
		}
		type row struct {
			Text *string `json:"text"`
		}
		var docs []string
		err := func() error {
			if _, err := safefile.CheckRegular(path); err != nil {
				return err
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			return eachJSONLine(f, path, func(v *row, n int) error {
				if v.Text == nil {
					return lineError(path, n, `missing "text"`)
				}
				if limit <= 0 || len(docs) < limit {
					docs = append(docs, *v.Text)
				}
				return nil
			})
		}()
		return docs, err
	}
	text, err := safefile.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if heldOut != 0 {
		if err := CheckEvalFraction(heldOut); err != nil {
			return nil, err
		}
		_, tail, err := data.SplitText(string(text), heldOut)
		if err != nil {
			return nil, err
		}
		text = []byte(tail)
	}
	return []string{string(firstLines(text, limit))}, nil
}

// CheckEvalFraction refuses an Options.EvalFraction outside (0, 1): the
// CLI asks before the model loads, perplexity again before it reads.
func CheckEvalFraction(f float64) error {
	if !(f > 0 && f < 1) {
		return fmt.Errorf("eval fraction %v: want a fraction in (0, 1)", f)
	}
	return nil
}

func evalPerplexity(ctx context.Context, lm LM, tok tokenizer.Tokenizer, task, path string, opts Options) (Result, error) {
	docs, err := perplexityDocs(path, opts.Limit, opts.EvalFraction)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", task, err)
	}
	prefix := tok.BOS()
	if prefix < 0 {
		prefix = tok.EOS() // lm-eval falls back to the end-of-text token
	}
	if prefix < 0 {
		return Result{}, fmt.Errorf("%s: the tokenizer has neither BOS nor EOS to start windows with", task)
	}
	window := opts.MaxLen
	if window <= 0 {
		window = defaultWindow
	}
	// lm-eval's weighted perplexities: sums of log-likelihoods over sums of
	// tokens, words or bytes across documents.
	var total, ntok, nw, nb float64
	for d, text := range docs {
		ids := tok.Encode(text)
		reqs := RollingWindows(ids, prefix, window, 1)
		docLL := 0.0
		for start := 0; start < len(reqs); start += opts.BatchItems {
			if err := ctx.Err(); err != nil {
				return Result{}, err
			}
			end := min(start+opts.BatchItems, len(reqs))
			lls, err := callLM(ctx, lm, reqs[start:end])
			if err != nil {
				return Result{}, fmt.Errorf("%s: document %d, windows %d-%d: %w", task, d, start, end-1, err)
			}
			for _, ll := range lls {
				docLL += ll
			}
		}
		total += docLL
		ntok += float64(len(ids))
		nw += float64(countWords(text))
		nb += float64(len(text))
		if opts.Samples != nil {
			if err := writeSample(opts.Samples, Sample{Index: d, Loglik: []float64{docLL}, Pred: len(ids), Gold: nil}); err != nil {
				return Result{}, fmt.Errorf("%s: samples: %w", task, err)
			}
		}
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, "%s: %d/%d documents, token perplexity %.4f\n", task, d+1, len(docs), math.Exp(-total/ntok))
		}
	}
	if ntok == 0 {
		return Result{}, fmt.Errorf("%s: %s has no tokens", task, path)
	}
	nan := math.NaN()
	return Result{Task: task, Data: path, N: int(ntok), Metrics: []Metric{
		{MetricTokenPPL, math.Exp(-total / ntok), nan},
		{MetricWordPPL, math.Exp(-total / nw), nan},
		{MetricBytePPL, math.Exp(-total / nb), nan},
		{MetricBitsPerByte, -total / nb / math.Ln2, nan},
	}}, nil
}
