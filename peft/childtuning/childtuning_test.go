package childtuning_test

import (
	"math"
	"testing"

	"github.com/gopeft/gopeft/peft/childtuning"
)

// Child-tuning F keeps each entry with probability p and multiplies it by
// 1/p, so the masked gradient is unbiased: a hand case on a constant
// gradient.
func TestChildTuningFRescale(t *testing.T) {
	const n, p = 20000, 0.25
	g := make([]float32, n)
	for i := range g {
		g[i] = 3
	}
	childtuning.Mask(g, p, 1/p, 7)
	kept := 0
	var sum float64
	for i, v := range g {
		switch v {
		case 12: // 3 / 0.25
			kept++
		case 0:
		default:
			t.Fatalf("entry %d is %v: want 0 or 3/p = 12", i, v)
		}
		sum += float64(v)
	}
	if frac := float64(kept) / n; math.Abs(frac-p) > 0.01 {
		t.Errorf("kept %.4f of the entries, want %v ± 0.01", frac, p)
	}
	if mean := sum / n; math.Abs(mean-3) > 0.12 {
		t.Errorf("mean of the masked gradient %.3f, want ≈ 3 (unbiased)", mean)
	}
	h := make([]float32, n)
	for i := range h {
		h[i] = 3
	}
	childtuning.Mask(h, p, 1/p, 7)
	for i := range g {
		if g[i] != h[i] {
			t.Fatal("the same seed drew another mask")
		}
	}
}
