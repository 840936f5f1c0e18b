package train

import (
	"fmt"
	"math"
)

// DefaultConfig is the one set of training defaults: the CLI's flags take
// their defaults from it, and a library caller starts from it and changes
// what it needs. Execute uses a Config as given (after Validate), so a zero
// or negative value is never quietly replaced by a default.
func DefaultConfig() Config {
	return Config{
		Steps: 100, BatchSize: 8, GradAccum: 1, LR: 2e-3, Schedule: "cosine", Warmup: 10,
		Optimizer: "adamw", MaxGradNorm: 1, Seed: 42, Keep: 2, LogEvery: 1,
	}
}

// FieldError is a setting outside its allowed range. Key is the recipe's
// name for it (train.<key> in a recipe); callers with other names for the
// setting (a command-line flag) can translate it.
type FieldError struct {
	Key     string // recipe key: "lr", "batch_size", ...
	Value   any    // the value given
	Allowed string // the allowed range, in words
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("train: %s = %v: %s", e.Key, e.Value, e.Allowed)
}

// Validate checks every setting against its allowed range and returns a
// *FieldError for the first one outside it.
func (c *Config) Validate() error {
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	checks := []struct {
		ok      bool
		key     string
		value   any
		allowed string
	}{
		{c.Steps >= 1, "steps", c.Steps, "must be at least 1"},
		{c.BatchSize >= 1, "batch_size", c.BatchSize, "must be at least 1"},
		{c.GradAccum >= 1, "grad_accum", c.GradAccum, "must be at least 1 (1: no accumulation)"},
		{finite(c.LR) && c.LR > 0, "lr", c.LR, "must be a finite number > 0"},
		{c.Warmup >= 0, "warmup_steps", c.Warmup, "must be ≥ 0"},
		{finite(c.MinLRRatio) && c.MinLRRatio >= 0 && c.MinLRRatio <= 1, "min_lr_ratio", c.MinLRRatio, "must be in [0, 1]"},
		{c.Optimizer == "adamw" || c.Optimizer == "adamw_8bit" || c.Optimizer == "sgd", "optimizer", fmt.Sprintf("%q", c.Optimizer), `must be "adamw", "adamw_8bit" or "sgd"`},
		{finite(c.WeightDecay) && c.WeightDecay >= 0, "weight_decay", c.WeightDecay, "must be a finite number ≥ 0"},
		{finite(c.Momentum) && c.Momentum >= 0 && c.Momentum < 1, "momentum", c.Momentum, "must be in [0, 1)"},
		{finite(c.MaxGradNorm) && c.MaxGradNorm >= 0, "max_grad_norm", c.MaxGradNorm, "must be a finite number ≥ 0 (0: no clipping)"},
		{c.EvalEvery >= 0, "eval_every", c.EvalEvery, "must be ≥ 0 (0: evaluate before and after only)"},
		{c.SaveEvery >= 0, "save_every", c.SaveEvery, "must be ≥ 0 (0: checkpoint at the end only)"},
		{c.Keep >= 0, "keep_checkpoints", c.Keep, "must be ≥ 0 (0: keep all)"},
		{c.LogEvery >= 1, "log_every", c.LogEvery, "must be at least 1"},
	}
	for _, ck := range checks {
		if !ck.ok {
			return &FieldError{Key: ck.key, Value: ck.value, Allowed: ck.allowed}
		}
	}
	if _, err := NewSchedule(c.Schedule, c.LR, c.Warmup, c.Steps, c.MinLRRatio); err != nil {
		return &FieldError{Key: "schedule", Value: fmt.Sprintf("%q", c.Schedule), Allowed: "must be constant, linear, cosine, constant_with_warmup or cosine_with_min_lr"}
	}
	return nil
}
