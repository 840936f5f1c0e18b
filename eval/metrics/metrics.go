// Package metrics holds the scores that benchmark tasks report: accuracy,
// binary F1, Matthews correlation, Pearson and Spearman correlation, and
// their standard errors.
//
// The definitions follow lm-evaluation-harness (which delegates to
// scikit-learn and SciPy): F1 treats label 1 as the positive class, the
// Matthews coefficient is 0 when it is undefined, Spearman ranks ties by
// their average rank, and the standard error of a mean is the sample
// standard deviation (n-1 denominator) divided by √n — for 0/1 scores that
// is √(p(1-p)/(n-1)). Scores that are not means get a bootstrap standard
// error, as lm-evaluation-harness does for F1 and MCC.
package metrics

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Mean returns the arithmetic mean of xs, or NaN when xs is empty.
func Mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// SampleStddev is the standard deviation with Bessel's correction
// (denominator n-1); NaN for fewer than two values.
func SampleStddev(xs []float64) float64 {
	if len(xs) < 2 {
		return math.NaN()
	}
	m := Mean(xs)
	s := 0.0
	for _, x := range xs {
		s += (x - m) * (x - m)
	}
	return math.Sqrt(s / float64(len(xs)-1))
}

// MeanStderr is the standard error of the mean, SampleStddev(xs)/√n
// (lm-evaluation-harness's mean_stderr).
func MeanStderr(xs []float64) float64 {
	return SampleStddev(xs) / math.Sqrt(float64(len(xs)))
}

// Accuracy is the fraction of i with pred[i] == gold[i]; NaN when empty.
// It panics if the slices differ in length (a programming error).
func Accuracy(pred, gold []int) float64 {
	return Mean(Correct(pred, gold))
}

// Correct returns 1 where pred[i] == gold[i] and 0 elsewhere.
func Correct(pred, gold []int) []float64 {
	mustSameLen(len(pred), len(gold))
	out := make([]float64, len(pred))
	for i := range pred {
		if pred[i] == gold[i] {
			out[i] = 1
		}
	}
	return out
}

// confusion counts a binary confusion matrix with 1 as the positive class;
// any label other than 1 counts as negative.
func confusion(pred, gold []int) (tp, fp, fn, tn float64) {
	mustSameLen(len(pred), len(gold))
	for i := range pred {
		p, g := pred[i] == 1, gold[i] == 1
		switch {
		case p && g:
			tp++
		case p && !g:
			fp++
		case !p && g:
			fn++
		default:
			tn++
		}
	}
	return
}

// F1 is the binary F1 score with 1 as the positive class:
// 2·TP / (2·TP + FP + FN). It is 0 when there are no positive predictions
// and no positive labels (scikit-learn's zero_division default).
func F1(pred, gold []int) float64 {
	tp, fp, fn, _ := confusion(pred, gold)
	if 2*tp+fp+fn == 0 {
		return 0
	}
	return 2 * tp / (2*tp + fp + fn)
}

// MCC is the Matthews correlation coefficient of binary labels (1 positive):
// (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)), and 0 when the
// denominator is 0 (scikit-learn's convention).
func MCC(pred, gold []int) float64 {
	tp, fp, fn, tn := confusion(pred, gold)
	den := (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
	if den == 0 {
		return 0
	}
	return (tp*tn - fp*fn) / math.Sqrt(den)
}

// Pearson is the Pearson correlation of x and y; NaN when either is
// constant or they hold fewer than two values.
func Pearson(x, y []float64) float64 {
	mustSameLen(len(x), len(y))
	if len(x) < 2 {
		return math.NaN()
	}
	mx, my := Mean(x), Mean(y)
	var sxy, sxx, syy float64
	for i := range x {
		dx, dy := x[i]-mx, y[i]-my
		sxy += dx * dy
		sxx += dx * dx
		syy += dy * dy
	}
	if sxx == 0 || syy == 0 {
		return math.NaN()
	}
	return sxy / math.Sqrt(sxx*syy)
}

// Ranks returns the 1-based ranks of xs, tied values sharing the average of
// the ranks they span (SciPy's rankdata "average").
func Ranks(xs []float64) []float64 {
	idx := make([]int, len(xs))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return xs[idx[a]] < xs[idx[b]] })
	r := make([]float64, len(xs))
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && xs[idx[j+1]] == xs[idx[i]] {
			j++
		}
		avg := float64(i+j)/2 + 1
		for k := i; k <= j; k++ {
			r[idx[k]] = avg
		}
		i = j + 1
	}
	return r
}

// Spearman is the Spearman rank correlation: Pearson on average ranks.
func Spearman(x, y []float64) float64 {
	mustSameLen(len(x), len(y))
	return Pearson(Ranks(x), Ranks(y))
}

// BootstrapStderr estimates the standard error of stat over n items by
// resampling item indices with replacement iters times (seeded, so the
// result is reproducible) and taking the sample standard deviation of the
// replicates, as lm-evaluation-harness's bootstrap_stderr does. Replicates
// where stat is NaN are skipped. It returns NaN when n < 2 or iters < 2.
func BootstrapStderr(n, iters int, seed uint64, stat func(idx []int) float64) float64 {
	if n < 2 || iters < 2 {
		return math.NaN()
	}
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	idx := make([]int, n)
	reps := make([]float64, 0, iters)
	for range iters {
		for i := range idx {
			idx[i] = rng.IntN(n)
		}
		if v := stat(idx); !math.IsNaN(v) {
			reps = append(reps, v)
		}
	}
	return SampleStddev(reps)
}

// Pick returns xs[idx[0]], xs[idx[1]], ... (a bootstrap resample).
func Pick[T any](xs []T, idx []int) []T {
	out := make([]T, len(idx))
	for i, j := range idx {
		out[i] = xs[j]
	}
	return out
}

func mustSameLen(a, b int) {
	if a != b {
		panic("metrics: predictions and references differ in length")
	}
}
