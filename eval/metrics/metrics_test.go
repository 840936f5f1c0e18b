package metrics

import (
	"math"
	"testing"
)

func near(t *testing.T, name string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol || math.IsNaN(got) != math.IsNaN(want) {
		t.Errorf("%s = %.12g, want %.12g", name, got, want)
	}
}

func TestBinaryMetricsByHand(t *testing.T) {
	pred := []int{1, 1, 0, 1, 0, 0}
	gold := []int{1, 0, 0, 1, 1, 0}
	// TP=2 FP=1 FN=1 TN=2.
	near(t, "acc", Accuracy(pred, gold), 4.0/6, 1e-15)
	near(t, "f1", F1(pred, gold), 4.0/6, 1e-15)                   // 2·2/(2·2+1+1)
	near(t, "mcc", MCC(pred, gold), (4.0-1)/math.Sqrt(81), 1e-15) // (2·2−1·1)/√(3·3·3·3)
	// Degenerate cases follow scikit-learn: all-negative F1 is 0, constant MCC is 0.
	near(t, "f1 none", F1([]int{0, 0}, []int{0, 0}), 0, 0)
	near(t, "mcc const", MCC([]int{1, 1, 1}, []int{1, 0, 1}), 0, 0)
	near(t, "mcc perfect", MCC([]int{1, 0, 1}, []int{1, 0, 1}), 1, 1e-15)
	near(t, "mcc inverse", MCC([]int{0, 1, 0}, []int{1, 0, 1}), -1, 1e-15)
}

func TestCorrelationsByHand(t *testing.T) {
	// Σdxdy = 11, Σdx² = 5, Σdy² = 26.
	near(t, "pearson", Pearson([]float64{1, 2, 3, 4}, []float64{2, 4, 5, 9}), 11/math.Sqrt(130), 1e-14)
	x := []float64{1, 2, 2, 3}
	r := Ranks(x)
	want := []float64{1, 2.5, 2.5, 4}
	for i := range r {
		if r[i] != want[i] {
			t.Fatalf("Ranks(%v) = %v, want %v", x, r, want)
		}
	}
	// Ranks x: 1 2.5 2.5 4; y: 1 3 2 4 → Σdxdy = 4.5, Σdx² = 4.5, Σdy² = 5.
	near(t, "spearman ties", Spearman(x, []float64{1, 3, 2, 4}), 4.5/math.Sqrt(22.5), 1e-14)
	// A monotone but non-linear relation: Spearman 1, Pearson below 1.
	a := []float64{1, 2, 3, 4, 5}
	b := []float64{1, 4, 9, 16, 100}
	near(t, "spearman monotone", Spearman(a, b), 1, 1e-14)
	if p := Pearson(a, b); p >= 0.99 {
		t.Errorf("Pearson of a convex relation = %v, want < 0.99", p)
	}
	if !math.IsNaN(Pearson([]float64{1, 1}, []float64{1, 2})) {
		t.Error("Pearson of a constant should be NaN")
	}
}

func TestStderr(t *testing.T) {
	c := Correct([]int{1, 2, 0, 3}, []int{1, 2, 1, 3})
	p := 0.75
	near(t, "mean stderr", MeanStderr(c), math.Sqrt(p*(1-p)/3), 1e-15)
	if !math.IsNaN(MeanStderr([]float64{1})) {
		t.Error("stderr of one value should be NaN")
	}
	// The bootstrap stderr of a mean approaches √(p(1-p)/n) and is reproducible.
	n := 400
	xs := make([]float64, n)
	for i := range xs {
		if i%4 != 0 {
			xs[i] = 1
		}
	}
	stat := func(idx []int) float64 { return Mean(Pick(xs, idx)) }
	b1 := BootstrapStderr(n, 2000, 7, stat)
	b2 := BootstrapStderr(n, 2000, 7, stat)
	if b1 != b2 {
		t.Errorf("bootstrap not reproducible: %v vs %v", b1, b2)
	}
	near(t, "bootstrap", b1, math.Sqrt(p*(1-p)/float64(n)), 0.002)
}
