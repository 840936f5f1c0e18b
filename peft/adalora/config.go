// Package adalora is AdaLoRA (Zhang et al. 2023): an SVD-shaped update
// ΔW = P·diag(λ)·Q beside a frozen Linear whose ranks a budget schedule
// prunes during training, giving them to the matrices whose triplets
// matter most. Files follow Hugging Face PEFT's ADALORA layout exactly
// (peft/tuners/adalora at the pinned snapshot): P is lora_B [out, r], λ is
// lora_E [r, 1] and Q is lora_A [r, in], saved without ".weight", sliced
// to the ranks rank_pattern keeps; ranknum (the divisor) is not saved.
package adalora

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
)

// PeftType is AdaLoRA's peft_type.
const PeftType = "ADALORA"

// Config is AdaLoRA's adapter_config.json: PEFT's AdaLoraConfig, which is
// a LoraConfig (whose r it ignores: ranks start at init_r) plus the budget
// schedule's keys.
type Config struct {
	peft.BaseConfig
	R               int                `json:"r"` // unused, as in PEFT
	LoraAlpha       float64            `json:"lora_alpha"`
	LoraDropout     float64            `json:"lora_dropout"`
	FanInFanOut     bool               `json:"fan_in_fan_out"`
	Bias            string             `json:"bias"`
	UseRSLoRA       bool               `json:"use_rslora"`
	UseDoRA         bool               `json:"use_dora"`
	InitLoraWeights lowrank.Init       `json:"init_lora_weights"`
	AlphaPattern    map[string]float64 `json:"alpha_pattern"`
	LoraBias        bool               `json:"lora_bias"`

	TargetR       int     `json:"target_r"`
	InitR         int     `json:"init_r"`
	Tinit         int     `json:"tinit"`
	Tfinal        int     `json:"tfinal"`
	DeltaT        int     `json:"deltaT"`
	Beta1         float64 `json:"beta1"`
	Beta2         float64 `json:"beta2"`
	OrthRegWeight float64 `json:"orth_reg_weight"`
	// TotalStep is the number of optimizer updates the schedule spans;
	// required (PEFT refuses null).
	TotalStep *int `json:"total_step"`
	// RankPattern maps "<module>.lora_E" to which of its init_r triplets
	// are kept; null until the allocator first masks.
	RankPattern map[string][]bool `json:"rank_pattern"`
}

// NewConfig returns PEFT's AdaLoRA defaults for a causal LM: init_r 12,
// target_r 8, no warm-ups, a reallocation every step, β₁ = β₂ = 0.85,
// orth_reg_weight 0.5, lora_alpha 8, q_proj and v_proj; total_step unset.
func NewConfig() *Config {
	c := &Config{
		BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM", TargetModules: peft.ModuleList("q_proj", "v_proj")},
		R:          8, LoraAlpha: 8, Bias: "none", InitLoraWeights: lowrank.InitDefault, AlphaPattern: map[string]float64{},
		TargetR: 8, InitR: 12, DeltaT: 1, Beta1: 0.85, Beta2: 0.85, OrthRegWeight: 0.5,
	}
	c.SetDefaultKeys(lowrank.PEFTKeys())
	return c
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// Validate checks AdaLoRA's keys as PEFT's __post_init__ does, and refuses
// the LoRA keys AdaLoRA would ignore or that are not built here.
func (c *Config) Validate() error {
	bad := func(key string, v any, allowed string) error {
		return &peft.KeyError{Method: PeftType, Key: key, Value: v, Allowed: allowed}
	}
	switch {
	case c.TotalStep == nil:
		return bad("total_step", "null", "is required: the number of optimizer updates the rank budget schedule spans (--total-step)")
	case *c.TotalStep <= 0:
		return bad("total_step", *c.TotalStep, "must be at least 1")
	case c.InitR < 1:
		return bad("init_r", c.InitR, "must be at least 1")
	case c.TargetR < 0 || c.TargetR > c.InitR:
		return bad("target_r", c.TargetR, fmt.Sprintf("must be in [0, init_r = %d]", c.InitR))
	case c.Tinit < 0:
		return bad("tinit", c.Tinit, "must be ≥ 0")
	case c.Tfinal < 0:
		return bad("tfinal", c.Tfinal, "must be ≥ 0")
	case c.Tinit >= *c.TotalStep-c.Tfinal:
		return bad("tinit", c.Tinit, fmt.Sprintf("must be below total_step − tfinal = %d − %d: the schedule needs a budgeting phase", *c.TotalStep, c.Tfinal))
	case c.DeltaT < 1:
		return bad("deltaT", c.DeltaT, "must be at least 1")
	case !(c.Beta1 > 0 && c.Beta1 < 1):
		return bad("beta1", c.Beta1, "must be in (0, 1)")
	case !(c.Beta2 > 0 && c.Beta2 < 1):
		return bad("beta2", c.Beta2, "must be in (0, 1)")
	case !finite(c.OrthRegWeight) || c.OrthRegWeight < 0:
		return bad("orth_reg_weight", c.OrthRegWeight, "must be a finite number ≥ 0")
	case !lowrank.FiniteScale(c.LoraAlpha):
		return bad("lora_alpha", c.LoraAlpha, lowrank.AlphaRange)
	case !(c.LoraDropout >= 0 && c.LoraDropout < 1):
		return bad("lora_dropout", c.LoraDropout, "must be in [0, 1)")
	case c.UseDoRA:
		return bad("use_dora", true, "ADALORA does not support DoRA (as in PEFT)")
	case c.UseRSLoRA:
		return bad("use_rslora", true, "AdaLoRA divides by ranknum, not by r or √r; use_rslora would be ignored")
	case len(c.AlphaPattern) > 0:
		return bad("alpha_pattern", c.AlphaPattern, "AdaLoRA uses lora_alpha for every module; alpha_pattern would be ignored")
	case c.Bias != "" && c.Bias != "none":
		return bad("bias", c.Bias, `must be "none" (LLaMA has no biases)`)
	case c.FanInFanOut:
		return bad("fan_in_fan_out", true, "is for GPT-2's Conv1D; LLaMA's Linear layers need false")
	case c.LoraBias:
		return bad("lora_bias", true, "is not supported")
	}
	switch c.InitLoraWeights {
	case lowrank.InitDefault, lowrank.InitRandom, "":
	default:
		return bad("init_lora_weights", string(c.InitLoraWeights), "AdaLoRA initialises with true (λ = 0, P and Q ~ N(0, 0.02)) or false (all N(0, 1))")
	}
	for k, v := range c.RankPattern {
		if len(v) != c.InitR {
			return bad(fmt.Sprintf("rank_pattern[%q]", k), fmt.Sprintf("a list of %d", len(v)), fmt.Sprintf("must list init_r = %d booleans", c.InitR))
		}
	}
	return nil
}
