// Package promptlearn is what Hugging Face PEFT's prompt-learning methods
// (PROMPT_TUNING, P_TUNING, PREFIX_TUNING) share: PromptLearningConfig's
// keys, filling them from the model as PEFT's
// _prepare_prompt_learning_config does, and their checks.
package promptlearn

import (
	"fmt"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
)

// Config is PromptLearningConfig: the base keys, modules_to_save and the
// model's shape as the adapter was made for it. PEFT's prompt-learning
// configs have no target_modules, exclude_modules, layers_to_transform or
// layers_pattern (NotKeys): a method's MarshalJSON drops them.
type Config struct {
	peft.BaseConfig
	NumVirtualTokens         int `json:"num_virtual_tokens"`
	TokenDim                 int `json:"token_dim"`
	NumTransformerSubmodules int `json:"num_transformer_submodules"`
	NumAttentionHeads        int `json:"num_attention_heads"`
	NumLayers                int `json:"num_layers"`
}

// NotKeys are BaseConfig's keys that PromptLearningConfig lacks.
var NotKeys = []string{"target_modules", "exclude_modules", "layers_to_transform", "layers_pattern"}

// Validate checks the shared keys.
func (c *Config) Validate() error {
	t := c.PeftType
	switch {
	case c.NumVirtualTokens < 1:
		return &peft.KeyError{Method: t, Key: "num_virtual_tokens", Value: c.NumVirtualTokens, Allowed: "must be at least 1"}
	case c.NumTransformerSubmodules < 0 || c.NumTransformerSubmodules > 1:
		return &peft.KeyError{Method: t, Key: "num_transformer_submodules", Value: c.NumTransformerSubmodules,
			Allowed: "must be 1: a decoder-only model has one transformer stack (2 is for encoder-decoder models)"}
	case c.TokenDim < 0 || c.NumAttentionHeads < 0 || c.NumLayers < 0:
		return fmt.Errorf("%s: token_dim %d, num_attention_heads %d, num_layers %d: none may be negative", t, c.TokenDim, c.NumAttentionHeads, c.NumLayers)
	}
	return nil
}

// Shape is what the model says the keys must be.
type Shape struct {
	TokenDim, Heads int
	// TokenDimWhat and HeadsWhat describe them in errors.
	TokenDimWhat, HeadsWhat string
}

// InputShape is the shape of input-layer prompts (prompt tuning, P-tuning):
// token_dim is the hidden size, num_attention_heads the query heads.
func InputShape(cfg llama.Config) Shape {
	return Shape{cfg.HiddenSize, cfg.NumAttentionHeads, "hidden_size", "num_attention_heads"}
}

// PrefixShape is the shape of key/value prefixes: PEFT sets token_dim to
// head_dim·num_key_value_heads and num_attention_heads to the key/value
// heads for grouped-query models (utils/other.py, 5d602fdb), which LLaMA's
// config always names.
func PrefixShape(cfg llama.Config) Shape {
	return Shape{cfg.KVDim(), cfg.NumKeyValueHeads, "num_key_value_heads·head_dim", "num_key_value_heads"}
}

// Fill sets the unset keys from the model as PEFT does, and refuses set
// ones that contradict it (an adapter for another model), naming the key
// and both values. It also refuses virtual tokens that leave no room in
// the model's context.
func (c *Config) Fill(cfg llama.Config, s Shape) error {
	t := c.PeftType
	fill := func(key string, v *int, want int, what string) error {
		if *v == 0 {
			*v = want
		}
		if *v != want {
			return &peft.KeyError{Method: t, Key: key, Value: *v, Allowed: fmt.Sprintf("the model's %s is %d (an adapter for another model?)", what, want)}
		}
		return nil
	}
	if c.NumTransformerSubmodules == 0 {
		c.NumTransformerSubmodules = 1
	}
	if err := fill("token_dim", &c.TokenDim, s.TokenDim, s.TokenDimWhat); err != nil {
		return err
	}
	if err := fill("num_attention_heads", &c.NumAttentionHeads, s.Heads, s.HeadsWhat); err != nil {
		return err
	}
	if err := fill("num_layers", &c.NumLayers, cfg.NumHiddenLayers, "num_hidden_layers"); err != nil {
		return err
	}
	if n := c.NumVirtualTokens * c.NumTransformerSubmodules; n >= cfg.MaxPositionEmbeddings {
		return &peft.KeyError{Method: t, Key: "num_virtual_tokens", Value: c.NumVirtualTokens,
			Allowed: fmt.Sprintf("%d virtual positions leave no room for text in the model's context of %d (max_position_embeddings)", n, cfg.MaxPositionEmbeddings)}
	}
	return nil
}
