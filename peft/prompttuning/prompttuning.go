// Package prompttuning is prompt tuning (Lester et al. 2021): n trainable
// virtual-token embeddings placed before every sequence, the model frozen.
// Files follow Hugging Face PEFT's PROMPT_TUNING layout exactly: one tensor,
// prompt_embeddings [num_virtual_tokens·num_transformer_submodules,
// token_dim], and PromptTuningConfig's keys.
//
// Positions and masks, from PEFT's peft_model.py (PeftModelForCausalLM.
// forward, 5d602fdb): inputs_embeds = cat(prompts, embed(input_ids)), the
// attention mask gets n leading ones and the labels n leading −100, so
// with transformers' LLaMA (position_ids from the mask) virtual token j
// sits at position j and real token t at n+t, and the last virtual row
// predicts the first label. llama.Model places nn.PromptHook tokens so.
// In generation PEFT prepends the prompts on the first step only and the
// KV cache holds them afterwards, as llama.Model's cache does.
//
// Initialisation, from PEFT's tuners/prompt_tuning/model.py: RANDOM keeps
// torch.nn.Embedding's N(0, 1); SAMPLE_VOCAB copies the embeddings of
// uniformly drawn token ids; TEXT tokenises prompt_tuning_init_text with
// the tokenizer (Hugging Face's LLaMA tokenizer adds BOS, so the ids start
// with it here too) and tiles or truncates the ids to n. A config with
// inference_mode (every saved adapter) skips initialisation: the file's
// tensor replaces it.
package prompttuning

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/promptlearn"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tokenizer"
)

// PeftType is prompt tuning's peft_type.
const PeftType = "PROMPT_TUNING"

// SaveName is the tensor PEFT saves: no base_model.model. prefix.
const SaveName = "prompt_embeddings"

// The values of prompt_tuning_init.
const (
	InitRandom      = "RANDOM"
	InitText        = "TEXT"
	InitSampleVocab = "SAMPLE_VOCAB"
)

// Config is PromptTuningConfig's adapter_config.json.
type Config struct {
	promptlearn.Config
	PromptTuningInit     string         `json:"prompt_tuning_init"`
	PromptTuningInitText *string        `json:"prompt_tuning_init_text"`
	TokenizerNameOrPath  *string        `json:"tokenizer_name_or_path"`
	TokenizerKwargs      map[string]any `json:"tokenizer_kwargs"`
}

// NewConfig returns PEFT's defaults (RANDOM) with 20 virtual tokens, a
// common choice (PEFT has no default).
func NewConfig() *Config {
	return &Config{
		Config: promptlearn.Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM"},
			NumVirtualTokens: 20},
		PromptTuningInit: InitRandom,
	}
}

// MarshalJSON writes PromptTuningConfig's keys exactly.
func (c *Config) MarshalJSON() ([]byte, error) {
	type plain Config
	b, err := json.Marshal((*plain)(c))
	if err != nil {
		return nil, err
	}
	return peft.DropKeys(b, promptlearn.NotKeys...)
}

// Validate checks the keys as PromptTuningConfig.__post_init__ does, and
// refuses an init text that RANDOM or SAMPLE_VOCAB would silently ignore.
func (c *Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	switch c.PromptTuningInit {
	case InitRandom, InitSampleVocab:
		if c.PromptTuningInitText != nil && *c.PromptTuningInitText != "" {
			return &peft.KeyError{Method: PeftType, Key: "prompt_tuning_init_text", Value: fmt.Sprintf("%q", *c.PromptTuningInitText),
				Allowed: fmt.Sprintf("is only used with prompt_tuning_init TEXT, and prompt_tuning_init is %s", c.PromptTuningInit)}
		}
	case InitText:
		if c.PromptTuningInitText == nil || *c.PromptTuningInitText == "" {
			return &peft.KeyError{Method: PeftType, Key: "prompt_tuning_init_text", Value: "empty", Allowed: "prompt_tuning_init TEXT needs the text"}
		}
	default:
		return &peft.KeyError{Method: PeftType, Key: "prompt_tuning_init", Value: fmt.Sprintf("%q", c.PromptTuningInit), Allowed: "must be RANDOM, TEXT or SAMPLE_VOCAB"}
	}
	if len(c.TokenizerKwargs) > 0 && c.PromptTuningInit != InitText {
		return &peft.KeyError{Method: PeftType, Key: "tokenizer_kwargs", Value: c.TokenizerKwargs, Allowed: "only valid with prompt_tuning_init TEXT"}
	}
	return nil
}

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "virtual-tokens", Key: "num_virtual_tokens", Kind: peft.IntFlag, Default: "20", Usage: "num_virtual_tokens"},
			{Name: "prompt-init", Key: "prompt_tuning_init", Kind: peft.StringFlag, Usage: "prompt_tuning_init: RANDOM, TEXT or SAMPLE_VOCAB"},
			{Name: "prompt-init-text", Key: "prompt_tuning_init_text", Kind: peft.StringFlag, Usage: "prompt_tuning_init_text (with --prompt-init TEXT)"},
			{Name: "prompt-tokenizer", Key: "tokenizer_name_or_path", Kind: peft.StringFlag, Usage: "tokenizer_name_or_path for TEXT (default: the model's, found beside it)"},
		},
	})
}

// Method is a prompt-tuning adapter.
type Method struct {
	Cfg    *Config
	prompt *autograd.Var
}

// New returns a prompt-tuning method for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// hook supplies the virtual tokens at the embedding.
type hook struct {
	nn.OwnedBy
	prompt *autograd.Var
}

// VirtualTokens implements nn.PromptHook.
func (h *hook) VirtualTokens(*nn.Pass, *nn.Embedding) *autograd.Var { return h.prompt }

// Attach implements peft.Method.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	c := m.Cfg
	if err := c.Fill(pm.Base.Config, promptlearn.InputShape(pm.Base.Config)); err != nil {
		return nil, err
	}
	n := c.NumVirtualTokens * c.NumTransformerSubmodules
	e := pm.Base.Embed
	v := tensor.New(n, c.TokenDim)
	if !c.InferenceMode {
		g := tensor.NewRNG(c.Seed)
		var ids []int
		switch c.PromptTuningInit {
		case InitRandom:
			v.Normal(g, 0, 1)
		case InitSampleVocab:
			for range n {
				ids = append(ids, g.IntN(pm.Base.Config.VocabSize))
			}
		case InitText:
			tok, err := m.tokenizer()
			if err != nil {
				return nil, err
			}
			text := tokenizer.EncodeSpecial(tok, *c.PromptTuningInitText, true, false)
			if len(text) == 0 {
				return nil, &peft.KeyError{Method: PeftType, Key: "prompt_tuning_init_text", Value: fmt.Sprintf("%q", *c.PromptTuningInitText), Allowed: "encodes to no tokens"}
			}
			for len(ids) < n {
				ids = append(ids, text...)
			}
			ids = ids[:n]
		}
		if ids != nil {
			table := e.Weight.Value.ToF32()
			for i, id := range ids {
				if id < 0 || id >= table.Rows() {
					return nil, fmt.Errorf("prompt_tuning: token id %d of the init text is outside the model's vocabulary of %d", id, table.Rows())
				}
				copy(v.Row(i), table.Row(id))
			}
		}
	}
	m.prompt = autograd.Param(SaveName, v, true)
	e.Hooks = append(e.Hooks, &hook{OwnedBy: nn.OwnedBy{Adapter: a.Name}, prompt: m.prompt})
	return nn.Params{{Name: SaveName, Var: m.prompt}}, nil
}

// tokenizer opens tokenizer_name_or_path, or the tokenizer beside the
// base model (base_model_name_or_path), recording the path it used in the
// config as PEFT requires it for TEXT.
func (m *Method) tokenizer() (tokenizer.Tokenizer, error) {
	c := m.Cfg
	if c.TokenizerNameOrPath != nil && *c.TokenizerNameOrPath != "" {
		tok, err := tokenizer.Load(*c.TokenizerNameOrPath)
		if err != nil {
			return nil, fmt.Errorf("prompt_tuning: tokenizer_name_or_path: %w", err)
		}
		return tok, nil
	}
	dir := c.BaseModelNameOrPath
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		dir = filepath.Dir(dir)
	}
	var tried []string
	if dir != "" {
		cands := []string{filepath.Join(dir, "tokenizer.json"), filepath.Join(dir, "tokenizer.bin")}
		more, _ := filepath.Glob(filepath.Join(dir, "tok*.bin"))
		for _, p := range append(cands, more...) {
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				tok, err := tokenizer.Load(p)
				if err != nil {
					return nil, fmt.Errorf("prompt_tuning: %w", err)
				}
				c.TokenizerNameOrPath = &p
				return tok, nil
			}
			tried = append(tried, p)
		}
	}
	return nil, &peft.KeyError{Method: PeftType, Key: "tokenizer_name_or_path", Value: "unset",
		Allowed: fmt.Sprintf("prompt_tuning_init TEXT needs a tokenizer, and none was found beside the model (%q)", dir)}
}
