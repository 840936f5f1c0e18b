package eval

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"

	"github.com/gopeft/gopeft/eval/metrics"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tokenizer"
)

// Options control Evaluate. The zero value evaluates zero-shot on every
// item of the default data.
type Options struct {
	// DataDir is the folder the task files are looked up in; empty means
	// DefaultDataDir().
	DataDir string
	// Data, if set, is the evaluation file itself (training files for
	// few-shot examples are still looked up under DataDir).
	Data string
	// Shots is the number of few-shot examples before each item.
	Shots int
	// Limit, if positive, evaluates only the first Limit items (for
	// perplexity: the first Limit lines of a text file, or rows of a
	// JSONL file).
	Limit int
	// EvalFraction, if positive, scores only the last EvalFraction of a
	// plain-text perplexity file, cut where train's --eval-fraction cuts it
	// (data.SplitText): the part of the file a run with that fraction held
	// out.
	EvalFraction float64
	// Seed seeds the few-shot sampler (lm-eval's default is 1234) and the
	// bootstrap.
	Seed uint64
	// MaxLen is the model's window in tokens: requests are left-truncated
	// to it, and perplexity windows predict at most MaxLen tokens. Zero
	// means the model's MaxLength() if it has one; otherwise no truncation
	// and perplexity windows of 2048.
	MaxLen int
	// BatchItems is how many items' requests go in one LogLikelihood call
	// (default 1: one item, all its choices, a call).
	BatchItems int
	// BootstrapIters is the number of bootstrap resamples for the
	// standard error of F1, MCC, Pearson and Spearman (default 1000;
	// negative: none).
	BootstrapIters int
	// Samples, if set, receives one JSON line per item (see Sample).
	Samples io.Writer
	// Progress, if set, receives a line now and then.
	Progress io.Writer
}

// Metric is one reported score. Stderr is NaN where there is none.
type Metric struct {
	Name   string
	Value  float64
	Stderr float64
}

// Result is the outcome of one task.
type Result struct {
	Task  string
	Data  string // the evaluation file
	Shots int
	// N is the number of items scored (for perplexity: tokens predicted).
	N       int
	Metrics []Metric
}

// Metric returns the metric with the given name.
func (r Result) Metric(name string) (Metric, bool) {
	for _, m := range r.Metrics {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// DefaultDataDir is the shared/data folder beside the module root when it
// exists (found by walking up from the working directory to go.mod), and
// "../shared/data" otherwise.
func DefaultDataDir() string {
	if root, ok := shared.Root(); ok {
		return filepath.Join(root, "data")
	}
	return filepath.Join("..", "shared", "data")
}

// Evaluate runs task (one of Tasks()) on lm with tokenizer tok.
func Evaluate(ctx context.Context, lm LM, tok tokenizer.Tokenizer, task string, opts Options) (Result, error) {
	spec, ok := tasks[task]
	if !ok {
		return Result{}, fmt.Errorf("unknown task %q (known: %s)", task, strings.Join(Tasks(), ", "))
	}
	if opts.Shots < 0 || opts.Limit < 0 {
		return Result{}, fmt.Errorf("%s: shots and limit must not be negative", task)
	}
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir()
	}
	if opts.MaxLen == 0 {
		if m, ok := lm.(MaxLengther); ok {
			opts.MaxLen = m.MaxLength()
		}
	}
	if opts.BatchItems <= 0 {
		opts.BatchItems = 1
	}
	if opts.BootstrapIters == 0 {
		opts.BootstrapIters = 1000
	}
	path := opts.Data
	if path == "" {
		var err error
		if path, err = spec.find(opts.DataDir, "dev"); err != nil {
			return Result{}, fmt.Errorf("%s: %w", task, err)
		}
	}
	if spec.perplexity {
		return evalPerplexity(ctx, lm, tok, task, path, opts)
	}
	items, err := spec.load(path, "dev")
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", task, err)
	}
	if len(items) == 0 {
		return Result{}, fmt.Errorf("%s: %s has no items", task, path)
	}
	pool := items
	if opts.Shots > 0 && spec.hasTrain {
		tpath, err := spec.find(opts.DataDir, "train")
		if err != nil {
			return Result{}, fmt.Errorf("%s: few-shot examples: %w", task, err)
		}
		if pool, err = spec.load(tpath, "train"); err != nil {
			return Result{}, fmt.Errorf("%s: few-shot examples: %w", task, err)
		}
	}
	if opts.Limit > 0 && opts.Limit < len(items) {
		items = items[:opts.Limit]
	}
	prefixes, err := fewShotPrefixes(len(items), pool, !spec.hasTrain, opts.Shots, opts.Seed)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", task, err)
	}

	res := Result{Task: task, Data: path, Shots: opts.Shots, N: len(items)}
	sc := make([]scored, len(items))
	for start := 0; start < len(items); start += opts.BatchItems {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		end := min(start+opts.BatchItems, len(items))
		var reqs []Request
		for i := start; i < end; i++ {
			r, err := itemRequests(tok, items[i], prefixes[i], opts.MaxLen)
			if err != nil {
				return res, fmt.Errorf("%s: item %d: %w", task, i, err)
			}
			reqs = append(reqs, r...)
		}
		lls, err := callLM(ctx, lm, reqs)
		if err != nil {
			return res, fmt.Errorf("%s: items %d-%d: %w", task, start, end-1, err)
		}
		for i := start; i < end; i++ {
			n := items[i].numOptions()
			sc[i] = scoreItem(items[i], lls[:n:n])
			lls = lls[n:]
			if opts.Samples != nil {
				if err := writeItemSample(opts.Samples, i, items[i], sc[i], spec.regression); err != nil {
					return res, fmt.Errorf("%s: samples: %w", task, err)
				}
			}
		}
		if opts.Progress != nil && (end == len(items) || end/progressEvery(len(items)) != start/progressEvery(len(items))) {
			acc := 0.0
			for _, s := range sc[:end] {
				acc += s.correct
			}
			fmt.Fprintf(opts.Progress, "%s: %d/%d items, acc %.4f\n", task, end, len(items), acc/float64(end))
		}
	}
	res.Metrics = computeMetrics(spec, items, sc, opts)
	return res, nil
}

func progressEvery(n int) int { return max(1, n/20) }

// scored is one item's outcome.
type scored struct {
	lls                       []float64
	pred, predNorm, predBytes int
	expect                    float64 // STS-B: expected score under softmax(lls)
	correct                   float64
}

func scoreItem(it Item, lls []float64) scored {
	s := scored{lls: lls, pred: tensor.Argmax(lls)}
	s.predNorm, s.predBytes = s.pred, s.pred
	if it.Choices != nil && it.Contexts == nil {
		s.predNorm = tensor.Argmax(normalized(lls, it.Choices, charLen))
		s.predBytes = tensor.Argmax(normalized(lls, it.Choices, byteLen))
	}
	if s.pred == it.Gold {
		s.correct = 1
	}
	// Expected answer index under the softmax; for STS-B the index is the score.
	m := lls[s.pred]
	var z, e float64
	for k, ll := range lls {
		w := math.Exp(ll - m)
		z += w
		e += w * float64(k)
	}
	s.expect = e / z
	return s
}

// itemRequests builds an item's requests after the few-shot prefix.
func itemRequests(tok tokenizer.Tokenizer, it Item, prefix string, maxLen int) ([]Request, error) {
	var reqs []Request
	if it.Contexts != nil {
		for _, c := range it.Contexts {
			reqs = append(reqs, encodeChoices(tok, prefix+c, []string{" " + it.Continuation})...)
		}
	} else {
		conts := make([]string, len(it.Choices))
		for i, c := range it.Choices {
			conts[i] = " " + c
		}
		reqs = encodeChoices(tok, prefix+it.Query, conts)
	}
	for i, r := range reqs {
		if len(r.Context) == 0 {
			return nil, fmt.Errorf("option %d: empty context and the tokenizer has no BOS", i)
		}
		if len(r.Continuation) == 0 {
			return nil, fmt.Errorf("option %d: continuation encodes to no tokens", i)
		}
		reqs[i] = truncate(r, maxLen)
	}
	return reqs, nil
}

// fewShotPrefixes draws k examples for each of n items from pool, with a
// PCG generator seeded by seed, and joins them as lm-eval does: examples
// separated by "\n\n", followed by "\n\n". When fromEval is set, pool is
// the evaluation set and item i never sees itself.
func fewShotPrefixes(n int, pool []Item, fromEval bool, k int, seed uint64) ([]string, error) {
	out := make([]string, n)
	if k == 0 {
		return out, nil
	}
	avail := len(pool)
	if fromEval {
		avail--
	}
	if k > avail {
		return nil, fmt.Errorf("%d shots wanted but only %d examples to draw from", k, avail)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed_f00d))
	chosen := make(map[int]bool, k)
	var b strings.Builder
	for i := range out {
		clear(chosen)
		b.Reset()
		for len(chosen) < k {
			j := rng.IntN(len(pool))
			if chosen[j] || (fromEval && j == i) {
				continue
			}
			chosen[j] = true
			b.WriteString(shotText(pool[j]))
			b.WriteString("\n\n")
		}
		out[i] = b.String()
	}
	return out, nil
}

// computeMetrics aggregates the task's metrics over the scored items.
func computeMetrics(spec taskSpec, items []Item, sc []scored, opts Options) []Metric {
	n := len(items)
	gold := make([]int, n)
	pred := make([]int, n)
	for i := range items {
		gold[i], pred[i] = items[i].Gold, sc[i].pred
	}
	boot := func(stat func(idx []int) float64) float64 {
		if opts.BootstrapIters < 0 {
			return math.NaN()
		}
		return metrics.BootstrapStderr(n, opts.BootstrapIters, opts.Seed, stat)
	}
	meanMetric := func(name string, p func(scored) int) Metric {
		c := make([]float64, n)
		for i := range sc {
			if p(sc[i]) == gold[i] {
				c[i] = 1
			}
		}
		return Metric{Name: name, Value: metrics.Mean(c), Stderr: metrics.MeanStderr(c)}
	}
	var out []Metric
	for _, name := range spec.metrics {
		switch name {
		case MetricAcc:
			out = append(out, meanMetric(name, func(s scored) int { return s.pred }))
		case MetricAccNorm:
			out = append(out, meanMetric(name, func(s scored) int { return s.predNorm }))
		case MetricAccBytes:
			out = append(out, meanMetric(name, func(s scored) int { return s.predBytes }))
		case MetricF1, MetricMCC:
			f := metrics.F1
			if name == MetricMCC {
				f = metrics.MCC
			}
			out = append(out, Metric{Name: name, Value: f(pred, gold), Stderr: boot(func(idx []int) float64 {
				return f(metrics.Pick(pred, idx), metrics.Pick(gold, idx))
			})})
		case MetricPearson, MetricSpearman:
			x := make([]float64, n)
			y := make([]float64, n)
			for i := range items {
				x[i], y[i] = sc[i].expect, items[i].Score
			}
			f := metrics.Pearson
			if name == MetricSpearman {
				f = metrics.Spearman
			}
			out = append(out, Metric{Name: name, Value: f(x, y), Stderr: boot(func(idx []int) float64 {
				return f(metrics.Pick(x, idx), metrics.Pick(y, idx))
			})})
		}
	}
	return out
}
