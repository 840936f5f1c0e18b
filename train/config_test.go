package train

import (
	"errors"
	"math"
	"testing"
)

// TestConfigValidateNamesTheKey: every out-of-range value is refused with
// its recipe key; none is replaced by a default.
func TestConfigValidateNamesTheKey(t *testing.T) {
	if c := DefaultConfig(); c.Validate() != nil {
		t.Fatalf("DefaultConfig is invalid: %v", c.Validate())
	}
	for _, o := range []string{"adamw", "adamw_8bit", "sgd"} {
		c := DefaultConfig()
		c.Optimizer = o
		if err := c.Validate(); err != nil {
			t.Errorf("optimizer %q refused: %v", o, err)
		}
	}
	cases := map[string]func(*Config){
		"steps":            func(c *Config) { c.Steps = 0 },
		"batch_size":       func(c *Config) { c.BatchSize = -1 },
		"grad_accum":       func(c *Config) { c.GradAccum = 0 },
		"lr":               func(c *Config) { c.LR = math.NaN() },
		"warmup_steps":     func(c *Config) { c.Warmup = -1 },
		"min_lr_ratio":     func(c *Config) { c.MinLRRatio = 2 },
		"optimizer":        func(c *Config) { c.Optimizer = "" },
		"weight_decay":     func(c *Config) { c.WeightDecay = math.Inf(1) },
		"momentum":         func(c *Config) { c.Momentum = 1 },
		"max_grad_norm":    func(c *Config) { c.MaxGradNorm = -1 },
		"eval_every":       func(c *Config) { c.EvalEvery = -1 },
		"save_every":       func(c *Config) { c.SaveEvery = -1 },
		"keep_checkpoints": func(c *Config) { c.Keep = -1 },
		"log_every":        func(c *Config) { c.LogEvery = 0 },
		"schedule":         func(c *Config) { c.Schedule = "foo" },
	}
	for key, set := range cases {
		c := DefaultConfig()
		set(&c)
		var fe *FieldError
		if err := c.Validate(); !errors.As(err, &fe) || fe.Key != key {
			t.Errorf("%s: Validate() = %v", key, err)
		}
	}
	// Execute validates too: a library caller's zero is refused, not
	// replaced.
	c := DefaultConfig()
	c.LR = 0
	var fe *FieldError
	if _, err := (&Run{Config: c}).Execute(t.Context()); !errors.As(err, &fe) || fe.Key != "lr" {
		t.Errorf("Execute with lr 0: %v", err)
	}
}
