// Package ptuning is P-tuning (Liu et al. 2021, "GPT Understands, Too"),
// Hugging Face PEFT's P_TUNING: virtual tokens before every sequence, as
// prompt tuning places them, produced by a trained encoder from a
// trained embedding. Files follow PEFT's layout: the encoder's output is
// saved as prompt_embeddings [num_virtual_tokens, token_dim] with
// PromptEncoderConfig's keys.
//
// From PEFT's tuners/p_tuning/model.py (5d602fdb): the MLP encoder is
// Linear(token_dim, h) → ReLU → Linear(h, h) → ReLU → Linear(h, token_dim)
// with h = encoder_hidden_size (default token_dim), torch's default
// initialisation, the embedding N(0, 1); a config with inference_mode
// (every saved one) holds no encoder and its prompt_embeddings are the
// virtual tokens. The LSTM encoder trains here only as a refusal: files
// saved from one load (they hold only the output).
package ptuning

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/promptlearn"
	"github.com/gopeft/gopeft/tensor"
)

// PeftType is P-tuning's peft_type.
const PeftType = "P_TUNING"

// SaveName is the tensor PEFT saves.
const SaveName = "prompt_embeddings"

// Config is PromptEncoderConfig's adapter_config.json.
type Config struct {
	promptlearn.Config
	EncoderReparameterizationType string  `json:"encoder_reparameterization_type"`
	EncoderHiddenSize             int     `json:"encoder_hidden_size"`
	EncoderNumLayers              int     `json:"encoder_num_layers"`
	EncoderDropout                float64 `json:"encoder_dropout"`
}

// NewConfig returns PEFT's defaults (MLP, 2 layers, no dropout) with 20
// virtual tokens.
func NewConfig() *Config {
	return &Config{Config: promptlearn.Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM"}, NumVirtualTokens: 20},
		EncoderReparameterizationType: "MLP", EncoderNumLayers: 2}
}

// MarshalJSON writes PromptEncoderConfig's keys exactly.
func (c *Config) MarshalJSON() ([]byte, error) {
	type plain Config
	b, err := json.Marshal((*plain)(c))
	if err != nil {
		return nil, err
	}
	return peft.DropKeys(b, promptlearn.NotKeys...)
}

// Validate checks the keys.
func (c *Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	switch {
	case c.EncoderReparameterizationType != "MLP" && c.EncoderReparameterizationType != "LSTM":
		return &peft.KeyError{Method: PeftType, Key: "encoder_reparameterization_type", Value: fmt.Sprintf("%q", c.EncoderReparameterizationType), Allowed: "must be MLP or LSTM"}
	case c.EncoderHiddenSize < 0:
		return &peft.KeyError{Method: PeftType, Key: "encoder_hidden_size", Value: c.EncoderHiddenSize, Allowed: "must be at least 1"}
	case !(c.EncoderDropout >= 0 && c.EncoderDropout < 1):
		return &peft.KeyError{Method: PeftType, Key: "encoder_dropout", Value: c.EncoderDropout, Allowed: "must be in [0, 1)"}
	}
	return nil
}

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "virtual-tokens", Key: "num_virtual_tokens", Kind: peft.IntFlag, Default: "20", Usage: "num_virtual_tokens"},
			{Name: "encoder-hidden", Key: "encoder_hidden_size", Kind: peft.IntFlag, Usage: "encoder_hidden_size of the prompt encoder (default token_dim)"},
		},
	})
}

// Method is a P-tuning adapter.
type Method struct {
	Cfg *Config
	// Encoded holds the virtual tokens when loaded, else the encoder's
	// output, and saves them.
	promptlearn.Encoded
}

// New returns a P-tuning method for a config.
func New(c *Config) *Method { return &Method{Cfg: c, Encoded: promptlearn.Encoded{Name: SaveName}} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

type encoder struct {
	emb *autograd.Var
	w   [3]*autograd.Var
	b   [3]*autograd.Var
}

// Attach implements peft.Method.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	c := m.Cfg
	if err := c.Fill(pm.Base.Config, promptlearn.InputShape(pm.Base.Config)); err != nil {
		return nil, err
	}
	if c.EncoderHiddenSize == 0 {
		c.EncoderHiddenSize = c.TokenDim
	}
	n, td, h := c.NumVirtualTokens*c.NumTransformerSubmodules, c.TokenDim, c.EncoderHiddenSize
	var ps nn.Params
	if c.InferenceMode || pm.LoadingFile() { // a file holds the table (peft.Model.LoadingFile)
		m.Table = autograd.Param(SaveName, tensor.New(n, td), true)
		ps = nn.Params{{Name: SaveName, Var: m.Table}}
	} else {
		if c.EncoderReparameterizationType == "LSTM" {
			return nil, &peft.KeyError{Method: PeftType, Key: "encoder_reparameterization_type", Value: "LSTM",
				Allowed: "training an LSTM prompt encoder is not supported yet: use MLP (PEFT's recommendation); saved LSTM adapters load"}
		}
		g := tensor.NewRNG(c.Seed)
		e := &encoder{emb: autograd.Param("prompt_encoder.embedding.weight", tensor.New(n, td).Normal(g, 0, 1), true)}
		dims := [][2]int{{h, td}, {h, h}, {td, h}}
		for i, d := range dims {
			bound := 1 / float32(math.Sqrt(float64(d[1])))
			e.w[i] = autograd.Param(fmt.Sprintf("prompt_encoder.mlp_head.%d.weight", 2*i), tensor.New(d[0], d[1]).Uniform(g, -bound, bound), true)
			e.b[i] = autograd.Param(fmt.Sprintf("prompt_encoder.mlp_head.%d.bias", 2*i), tensor.New(d[0]).Uniform(g, -bound, bound), true)
		}
		m.Encode = e.forward
		ps = nn.Params{{Name: e.emb.Name, Var: e.emb}}
		for i := range 3 {
			ps = append(ps, nn.Param{Name: e.w[i].Name, Var: e.w[i]}, nn.Param{Name: e.b[i].Name, Var: e.b[i]})
		}
	}
	pm.Base.Embed.Hooks = append(pm.Base.Embed.Hooks, &hook{OwnedBy: nn.OwnedBy{Adapter: a.Name}, m: m})
	return ps, nil
}

type hook struct {
	nn.OwnedBy
	m *Method
}

// VirtualTokens implements nn.PromptHook.
func (h *hook) VirtualTokens(p *nn.Pass, _ *nn.Embedding) *autograd.Var {
	if h.m.Table != nil {
		return h.m.Table
	}
	return h.m.Encode(p.Tape)
}

func (e *encoder) forward(tp *autograd.Tape) *autograd.Var {
	x := e.emb
	for i := range 3 {
		x = tp.Add(tp.Linear(x, e.w[i]), e.b[i])
		if i < 2 {
			x = relu(tp, x)
		}
	}
	return x
}

func relu(tp *autograd.Tape, x *autograd.Var) *autograd.Var {
	out := tensor.New(x.Value.Shape...)
	for i, v := range x.Value.F32() {
		out.Data[i] = max(v, 0)
	}
	return tp.Result(out, func(o *autograd.Var) {
		g := x.GradBuf().Data
		for i, y := range out.Data {
			if y > 0 {
				g[i] += o.Grad.Data[i]
			}
		}
	}, x)
}
