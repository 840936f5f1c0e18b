package train

import (
	"fmt"
	"math"
	"strings"
)

// Schedule is a learning-rate schedule with linear warm-up, as Hugging Face
// transformers' get_*_schedule_with_warmup define them. Step counts the
// optimizer updates already taken: the first update uses At(0), which is 0
// when there is warm-up (as in the Trainer).
type Schedule struct {
	// Kind is "constant", "linear" or "cosine" (see NewSchedule).
	Kind   string
	Base   float64 // peak learning rate, reached when warm-up ends
	Warmup int     // warm-up updates: the rate rises linearly from 0
	Total  int     // total updates: linear reaches 0 here, cosine its minimum
	// MinRatio is cosine's floor as a fraction of Base (transformers'
	// min_lr_rate of cosine_with_min_lr); 0 decays to 0.
	MinRatio float64
	// Cycles is the number of cosine waves over the decay (transformers'
	// num_cycles); 0 means the default 0.5, a half wave from Base down.
	Cycles float64
}

// NewSchedule validates a schedule. kind is one of
//
//	constant             Base after warm-up (transformers' constant_with_warmup;
//	                     with warmup 0 it is their constant)
//	linear               get_linear_schedule_with_warmup: down to 0 at total
//	cosine               get_cosine_schedule_with_warmup: half a cosine to 0
//	cosine_with_min_lr   cosine down to minRatio·Base
//
// "constant_with_warmup" is accepted for constant. minRatio is used only by
// the cosine kinds and must lie in [0, 1].
func NewSchedule(kind string, base float64, warmup, total int, minRatio float64) (Schedule, error) {
	k := strings.ToLower(strings.TrimSpace(kind))
	switch k {
	case "constant", "constant_with_warmup":
		k = "constant"
	case "linear", "cosine":
	case "cosine_with_min_lr":
		k = "cosine"
	default:
		return Schedule{}, fmt.Errorf("unknown learning-rate schedule %q (want constant, linear, cosine or cosine_with_min_lr)", kind)
	}
	switch {
	case !(base >= 0) || math.IsInf(base, 0):
		return Schedule{}, fmt.Errorf("learning rate %v must be a finite value ≥ 0", base)
	case warmup < 0 || total < 0:
		return Schedule{}, fmt.Errorf("schedule steps must be ≥ 0 (warmup %d, total %d)", warmup, total)
	case k != "constant" && total == 0:
		return Schedule{}, fmt.Errorf("a %s schedule needs the total number of steps", k)
	case !(minRatio >= 0 && minRatio <= 1):
		return Schedule{}, fmt.Errorf("minimum learning-rate ratio %v is outside [0, 1]", minRatio)
	}
	return Schedule{Kind: k, Base: base, Warmup: warmup, Total: total, MinRatio: minRatio}, nil
}

// At returns the learning rate for the update that follows step completed
// updates.
func (s Schedule) At(step int) float64 { return s.Base * s.Factor(step) }

// Factor is transformers' lr_lambda: the multiplier of Base at step. Past
// Total, linear stays at 0 and cosine follows the cosine on (as in
// transformers). It panics on a Kind NewSchedule would reject.
func (s Schedule) Factor(step int) float64 {
	if step < s.Warmup {
		return float64(step) / float64(max(1, s.Warmup))
	}
	decay := float64(max(1, s.Total-s.Warmup))
	switch s.Kind {
	case "constant", "constant_with_warmup":
		return 1
	case "linear":
		return max(0, float64(s.Total-step)/decay)
	case "cosine", "cosine_with_min_lr":
		cycles := s.Cycles
		if cycles == 0 {
			cycles = 0.5
		}
		progress := float64(step-s.Warmup) / decay
		f := 0.5 * (1 + math.Cos(math.Pi*cycles*2*progress))
		return max(0, f*(1-s.MinRatio)+s.MinRatio)
	}
	panic(fmt.Sprintf("train: unknown learning-rate schedule %q", s.Kind))
}

// LR is the learning rate of schedule kind (constant, linear or cosine,
// decaying to 0) at step; see Schedule. It panics on an unknown kind: check
// user input with NewSchedule.
func LR(kind string, base float64, step, warmup, total int) float64 {
	return Schedule{Kind: kind, Base: base, Warmup: warmup, Total: total}.At(step)
}

// WarmupSteps converts a warm-up ratio to steps as transformers'
// TrainingArguments.get_warmup_steps does: ⌈ratio·total⌉.
func WarmupSteps(ratio float64, total int) int {
	return int(math.Ceil(float64(total) * ratio))
}
