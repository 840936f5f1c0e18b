package train

import (
	"fmt"
	"math"
	"testing"
)

// TestSchedules checks transformers' lr_lambda values worked by hand for
// warm-up 10, total 110 (100 decay steps), base 2.
func TestSchedules(t *testing.T) {
	cases := []struct {
		kind string
		min  float64
		step int
		want float64
	}{
		{"linear", 0, 0, 0},                  // warm-up starts at 0
		{"linear", 0, 5, 1},                  // 2·5/10
		{"linear", 0, 10, 2},                 // 2·(110−10)/100
		{"linear", 0, 60, 1},                 // 2·50/100
		{"linear", 0, 109, 0.02},             // 2·1/100
		{"linear", 0, 110, 0},                // end
		{"linear", 0, 150, 0},                // clamped past the end
		{"cosine", 0, 3, 0.6},                // 2·3/10
		{"cosine", 0, 10, 2},                 // cos 0
		{"cosine", 0, 35, 1 + math.Sqrt2/2},  // 2·½(1+cos π/4)
		{"cosine", 0, 60, 1},                 // 2·½(1+cos π/2)
		{"cosine", 0, 110, 0},                // 2·½(1+cos π)
		{"cosine_with_min_lr", 0.1, 60, 1.1}, // 2·(0.5·0.9+0.1)
		{"cosine_with_min_lr", 0.1, 110, 0.2},
		{"cosine_with_min_lr", 0.1, 5, 1}, // warm-up ignores the floor
		{"constant", 0, 4, 0.8},
		{"constant", 0, 10, 2},
		{"constant_with_warmup", 0, 1000, 2},
	}
	for _, c := range cases {
		s, err := NewSchedule(c.kind, 2, 10, 110, c.min)
		if err != nil {
			t.Fatal(err)
		}
		near(t, fmt.Sprintf("%s at step %d", c.kind, c.step), s.At(c.step), c.want, 1e-12)
		if c.min == 0 && c.kind != "constant_with_warmup" {
			near(t, fmt.Sprintf("LR(%s) at step %d", c.kind, c.step), LR(c.kind, 2, c.step, 10, 110), c.want, 1e-12)
		}
	}
	// No warm-up: the first update gets the full rate.
	near(t, "linear without warm-up", LR("linear", 1, 0, 0, 100), 1, 0)
	near(t, "linear without warm-up, step 25", LR("linear", 1, 25, 0, 100), 0.75, 1e-15)
	// Warm-up as long as the run: decay over max(1, 0) steps.
	near(t, "warm-up = total", LR("cosine", 1, 10, 10, 10), 1, 1e-15)
}

func TestScheduleErrors(t *testing.T) {
	bad := []struct {
		kind          string
		base          float64
		warmup, total int
		min           float64
	}{
		{"polynomial", 1, 0, 10, 0},
		{"linear", 1, 0, 0, 0},
		{"cosine", 1, -1, 10, 0},
		{"cosine", math.NaN(), 0, 10, 0},
		{"cosine", 1, 0, 10, 1.5},
	}
	for _, b := range bad {
		if _, err := NewSchedule(b.kind, b.base, b.warmup, b.total, b.min); err == nil {
			t.Errorf("NewSchedule(%q, %v, %d, %d, %v) accepted", b.kind, b.base, b.warmup, b.total, b.min)
		}
	}
	if _, err := NewSchedule(" Cosine ", 1, 0, 10, 0); err != nil {
		t.Errorf("case/space-insensitive kind refused: %v", err)
	}
}

func TestWarmupSteps(t *testing.T) {
	for _, c := range []struct {
		ratio float64
		total int
		want  int
	}{{0.03, 1000, 30}, {0.1, 15, 2}, {0, 100, 0}, {0.5, 3, 2}} {
		if got := WarmupSteps(c.ratio, c.total); got != c.want {
			t.Errorf("WarmupSteps(%v, %d) = %d, want %d", c.ratio, c.total, got, c.want)
		}
	}
}
