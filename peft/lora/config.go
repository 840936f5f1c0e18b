// Package lora is LoRA (Hu et al. 2021) and rsLoRA: a trainable low-rank
// update y = W₀x + s·B·A·dropout(x) beside a frozen Linear, with A [r, in],
// B [out, r] and s = lora_alpha/r (rsLoRA: lora_alpha/√r). Files follow
// Hugging Face PEFT's LoRA layout exactly.
//
// Its variants are sibling files, as PEFT's are: dora.go (use_dora, and
// the DORA alias), init.go (PiSSA and OLoRA, which start from the base
// weight), and arith.go with combine.go (adapter arithmetic, PEFT's
// add_weighted_adapter with the intended maths).
package lora

import (
	"fmt"
	"maps"
	"slices"

	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
)

// PeftType is LoRA's peft_type.
const PeftType = "LORA"

// Config is LoRA's adapter_config.json, with PEFT's defaults.
type Config struct {
	peft.BaseConfig
	R               int                `json:"r"`
	LoraAlpha       float64            `json:"lora_alpha"`
	LoraDropout     float64            `json:"lora_dropout"`
	FanInFanOut     bool               `json:"fan_in_fan_out"`
	Bias            string             `json:"bias"`
	UseRSLoRA       bool               `json:"use_rslora"`
	UseDoRA         bool               `json:"use_dora"`
	InitLoraWeights Init               `json:"init_lora_weights"`
	RankPattern     map[string]int     `json:"rank_pattern"`
	AlphaPattern    map[string]float64 `json:"alpha_pattern"`
	LoraBias        bool               `json:"lora_bias"`

	// requireDoRA marks a config made for --method DORA, which a peft
	// block must not turn back into plain LoRA.
	requireDoRA bool
}

// Init is init_lora_weights (see lowrank.Init).
type Init = lowrank.Init

// The initialisations of init_lora_weights.
const (
	InitDefault  = lowrank.InitDefault
	InitGaussian = lowrank.InitGaussian
	InitRandom   = lowrank.InitRandom
	InitPiSSA    = lowrank.InitPiSSA
	InitOLoRA    = lowrank.InitOLoRA
)

// NewConfig returns PEFT's LoRA defaults for a causal LM: r 8, alpha 8, no
// dropout, q_proj and v_proj.
func NewConfig() *Config {
	c := &Config{
		BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM", TargetModules: peft.ModuleList("q_proj", "v_proj")},
		R:          8, LoraAlpha: 8, Bias: "none", InitLoraWeights: InitDefault,
		RankPattern: map[string]int{}, AlphaPattern: map[string]float64{},
	}
	c.SetDefaultKeys(lowrank.PEFTKeys())
	return c
}

// Validate checks LoRA's keys, refusing the variants not built here rather
// than computing something else.
func (c *Config) Validate() error {
	switch {
	case c.R <= 0:
		return &peft.KeyError{Method: PeftType, Key: "r", Value: c.R, Allowed: "must be at least 1"}
	case !lowrank.FiniteScale(c.LoraAlpha):
		return &peft.KeyError{Method: PeftType, Key: "lora_alpha", Value: c.LoraAlpha, Allowed: lowrank.AlphaRange}
	case !(c.LoraDropout >= 0 && c.LoraDropout < 1):
		return &peft.KeyError{Method: PeftType, Key: "lora_dropout", Value: c.LoraDropout, Allowed: "must be in [0, 1)"}
	case c.requireDoRA && !c.UseDoRA:
		return &peft.KeyError{Method: "DORA", Key: "use_dora", Value: false, Allowed: "method DORA is LORA with use_dora true; use method LORA for plain LoRA"}
	case c.Bias != "" && c.Bias != "none":
		return fmt.Errorf("lora: bias %q is not supported (LLaMA has no biases): use \"none\"", c.Bias)
	case c.FanInFanOut:
		return fmt.Errorf("lora: fan_in_fan_out is for GPT-2's Conv1D; LLaMA's Linear layers need false")
	case c.LoraBias:
		return fmt.Errorf("lora: lora_bias is not supported yet")
	}
	if err := c.InitLoraWeights.Validate(); err != nil {
		return fmt.Errorf("lora: %w", err)
	}
	if c.UseDoRA && c.InitLoraWeights.ChangesBase() {
		return &peft.KeyError{Method: PeftType, Key: "init_lora_weights", Value: string(c.InitLoraWeights),
			Allowed: "rewrites the base weight, which DoRA's magnitudes are measured on; not with use_dora"}
	}
	for _, k := range slices.Sorted(maps.Keys(c.RankPattern)) {
		if r := c.RankPattern[k]; r <= 0 {
			return &peft.KeyError{Method: PeftType, Key: fmt.Sprintf("rank_pattern[%q]", k), Value: r, Allowed: "must be at least 1"}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.AlphaPattern)) {
		if a := c.AlphaPattern[k]; !lowrank.FiniteScale(a) {
			return &peft.KeyError{Method: PeftType, Key: fmt.Sprintf("alpha_pattern[%q]", k), Value: a, Allowed: lowrank.AlphaRange}
		}
	}
	return nil
}

// rankAlpha resolves a module's rank and alpha through the patterns.
func (c *Config) rankAlpha(module string) (int, float64) {
	return lowrank.RankAlpha(module, c.R, c.LoraAlpha, c.RankPattern, c.AlphaPattern)
}

// Scale is s for a rank and alpha: alpha/r, or alpha/√r with rsLoRA.
func (c *Config) Scale(r int, alpha float64) float64 { return lowrank.Scale(r, alpha, c.UseRSLoRA) }
