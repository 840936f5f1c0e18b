// Package ia3 is (IA)³ (Liu et al. 2022, "Few-Shot Parameter-Efficient
// Fine-Tuning is Better and Cheaper than In-Context Learning"): a learned
// vector that rescales a Linear's output, or for the feed-forward modules
// its input. Files follow Hugging Face PEFT's IA3 layout exactly.
//
// From PEFT's tuners/ia3 (5d602fdb): the vector ia3_l is [out, 1] for an
// ordinary target (y = (W·x) ⊙ l) and [1, in] for a feed-forward one
// (y = W·(x ⊙ l)); it starts at ones (init_ia3_weights true, else N(0,1));
// a target is feed-forward when its name ends with an entry of a
// feedforward_modules list (no dot needed) or fully matches its regex;
// LLaMA's defaults are target_modules [k_proj, v_proj, down_proj] and
// feedforward_modules [down_proj]; merging multiplies the weight's rows
// (ordinary) or columns (feed-forward) by l, and unmerging divides by
// l + 1e-8.
package ia3

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/gopeft/gopeft/peft"
)

// PeftType is (IA)³'s peft_type.
const PeftType = "IA3"

// Config is IA3Config's adapter_config.json, with PEFT's LLaMA defaults.
type Config struct {
	peft.BaseConfig
	FeedforwardModules peft.Modules `json:"feedforward_modules"`
	FanInFanOut        bool         `json:"fan_in_fan_out"`
	InitIA3Weights     bool         `json:"init_ia3_weights"`
}

// NewConfig returns PEFT's IA3 defaults for LLaMA.
func NewConfig() *Config {
	return &Config{
		BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM",
			TargetModules: peft.ModuleList("k_proj", "v_proj", "down_proj")},
		FeedforwardModules: peft.ModuleList("down_proj"),
		InitIA3Weights:     true,
	}
}

// MarshalJSON writes IA3Config's keys: it has no layers_to_transform or
// layers_pattern.
func (c *Config) MarshalJSON() ([]byte, error) {
	type plain Config
	b, err := json.Marshal((*plain)(c))
	if err != nil {
		return nil, err
	}
	return peft.DropKeys(b, "layers_to_transform", "layers_pattern")
}

// Validate checks IA3's keys as IA3Config.__post_init__ does.
func (c *Config) Validate() error {
	if c.FanInFanOut {
		return fmt.Errorf("ia3: fan_in_fan_out is for GPT-2's Conv1D; LLaMA's Linear layers need false")
	}
	if ff, tm := c.FeedforwardModules.Names, c.TargetModules.Names; ff != nil && tm != nil {
		for _, f := range ff {
			found := false
			for _, t := range tm {
				found = found || t == f
			}
			if !found {
				return &peft.KeyError{Method: PeftType, Key: "feedforward_modules", Value: fmt.Sprintf("%q", ff),
					Allowed: fmt.Sprintf("must be a subset of target_modules %q (%q is not in it)", tm, f)}
			}
		}
	}
	if c.FeedforwardModules.Names == nil && c.FeedforwardModules.IsSet() {
		if _, err := regexp.Compile(c.FeedforwardModules.Regex); err != nil {
			return &peft.KeyError{Method: PeftType, Key: "feedforward_modules", Value: fmt.Sprintf("%q", c.FeedforwardModules.Regex), Allowed: "must be a regular expression: " + err.Error()}
		}
	}
	return nil
}

// feedforward reports whether a target scales its input, by PEFT's
// _check_target_module_feedforward: a regex must match the whole name, a
// list entry need only end it. Unset is LLaMA's default, down_proj.
func (c *Config) feedforward(name string) bool {
	ff := c.FeedforwardModules
	if !ff.IsSet() {
		ff = peft.ModuleList("down_proj")
	}
	if ff.Names == nil {
		re, err := regexp.Compile(`^(?:` + ff.Regex + `)$`)
		return err == nil && re.MatchString(name)
	}
	for _, f := range ff.Names {
		if strings.HasSuffix(name, f) {
			return true
		}
	}
	return false
}
