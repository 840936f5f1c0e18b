// Package prefixtuning is prefix tuning (Li & Liang 2021): n trainable
// keys and values before every layer's own, the model frozen. Files follow
// Hugging Face PEFT's PREFIX_TUNING layout exactly: one tensor,
// prompt_embeddings [num_virtual_tokens, 2·num_layers·token_dim], and
// PrefixTuningConfig's keys.
//
// The table, from PEFT's peft_model.py get_prompt (5d602fdb): row j is
// viewed as [2·num_layers, num_attention_heads, token_dim/num_attention_heads]
// and permuted so that segment 2l of every row is layer l's keys and
// segment 2l+1 its values ([batch, heads, n, head_dim] each, heads major
// within a segment, as the k_proj/v_proj output is laid out). For
// grouped-query models PEFT's _prepare_prompt_learning_config
// (utils/other.py) sets token_dim = head_dim·num_key_value_heads and
// num_attention_heads = num_key_value_heads, so the prefix is the width of
// the layer's keys.
//
// Positions and masks: PEFT passes the prefix as past_key_values of
// length n and extends the attention mask by n ones; transformers' LLaMA
// then numbers the real tokens from the cache's length (cache_position),
// so real token t takes RoPE position n+t, and the prefix keys, never
// rotated, are seen by every query. llama.Model's nn.PrefixHook does the
// same, with or without a KV cache and in padded batches.
//
// prefix_projection, from tuners/prefix_tuning/model.py: the trained
// parameters are an embedding [n, token_dim] and an MLP Linear(token_dim,
// encoder_hidden_size) → tanh → Linear(encoder_hidden_size,
// 2·num_layers·token_dim); only the MLP's output is saved (and, with
// inference_mode, which every saved config has, loaded as a plain table).
// init_weights "zero" zeroes the table, or the MLP's last layer.
//
// P-tuning v2 (Liu et al. 2022) is this method with prefix_projection
// false: per-layer prefixes trained directly (see README's recipe).
package prefixtuning

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

// PeftType is prefix tuning's peft_type.
const PeftType = "PREFIX_TUNING"

// SaveName is the tensor PEFT saves.
const SaveName = "prompt_embeddings"

// Config is PrefixTuningConfig's adapter_config.json.
type Config struct {
	promptlearn.Config
	EncoderHiddenSize int     `json:"encoder_hidden_size"`
	PrefixProjection  bool    `json:"prefix_projection"`
	InitWeights       *string `json:"init_weights"`
}

// NewConfig returns PEFT's defaults with 20 virtual tokens (PEFT has no
// default for the count).
func NewConfig() *Config {
	return &Config{Config: promptlearn.Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM"}, NumVirtualTokens: 20}}
}

// MarshalJSON writes PrefixTuningConfig's keys exactly.
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
	if c.InitWeights != nil && *c.InitWeights != "zero" {
		return &peft.KeyError{Method: PeftType, Key: "init_weights", Value: fmt.Sprintf("%q", *c.InitWeights), Allowed: `must be null or "zero"`}
	}
	if c.EncoderHiddenSize < 0 {
		return &peft.KeyError{Method: PeftType, Key: "encoder_hidden_size", Value: c.EncoderHiddenSize, Allowed: "must be at least 1"}
	}
	return nil
}

func (c *Config) zero() bool { return c.InitWeights != nil && *c.InitWeights == "zero" }

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "virtual-tokens", Key: "num_virtual_tokens", Kind: peft.IntFlag, Default: "20", Usage: "num_virtual_tokens (the prefix length)"},
			{Name: "prefix-projection", Key: "prefix_projection", Kind: peft.BoolFlag, Usage: "prefix_projection: train the prefix through an MLP"},
			{Name: "encoder-hidden", Key: "encoder_hidden_size", Kind: peft.IntFlag, Usage: "encoder_hidden_size of the projection MLP (default token_dim)"},
		},
	})
}

// Method is a prefix-tuning adapter.
type Method struct {
	Cfg *Config
	// Encoded holds the prefix [n, 2·L·token_dim] when it is trained (or
	// loaded) directly, else the MLP's output, and saves it.
	promptlearn.Encoded
	mlp *mlp // prefix_projection's MLP until a loaded table replaces it
}

// New returns a prefix-tuning method for a config.
func New(c *Config) *Method { return &Method{Cfg: c, Encoded: promptlearn.Encoded{Name: SaveName}} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// mlp is prefix_projection's reparameterisation.
type mlp struct {
	emb, w1, b1, w2, b2 *autograd.Var
}

// Attach implements peft.Method: one hook per layer reading its segment.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	c := m.Cfg
	if err := c.Fill(pm.Base.Config, promptlearn.PrefixShape(pm.Base.Config)); err != nil {
		return nil, err
	}
	if c.EncoderHiddenSize == 0 {
		c.EncoderHiddenSize = c.TokenDim
	}
	n, td, L := c.NumVirtualTokens, c.TokenDim, c.NumLayers
	g := tensor.NewRNG(c.Seed)
	var ps nn.Params
	if c.PrefixProjection && !c.InferenceMode && !pm.LoadingFile() {
		hid := c.EncoderHiddenSize
		name := func(s string) string { return "prompt_encoder." + s }
		f := &mlp{
			emb: autograd.Param(name("embedding.weight"), tensor.New(n, td).Normal(g, 0, 1), true),
			w1:  autograd.Param(name("transform.0.weight"), torchLinear(g, hid, td), true),
			b1:  autograd.Param(name("transform.0.bias"), torchBias(g, hid, td), true),
			w2:  autograd.Param(name("transform.2.weight"), torchLinear(g, 2*L*td, hid), true),
			b2:  autograd.Param(name("transform.2.bias"), torchBias(g, 2*L*td, hid), true),
		}
		if c.zero() {
			f.w2.Value.Zero()
			f.b2.Value.Zero()
		}
		m.mlp = f
		m.Encode = f.forward
		for _, v := range []*autograd.Var{f.emb, f.w1, f.b1, f.w2, f.b2} {
			ps = append(ps, nn.Param{Name: v.Name, Var: v})
		}
	} else {
		t := tensor.New(n, 2*L*td)
		if !c.zero() {
			t.Normal(g, 0, 1) // torch.nn.Embedding's N(0, 1)
		}
		m.Table = autograd.Param(SaveName, t, true)
		ps = nn.Params{{Name: SaveName, Var: m.Table}}
	}
	for _, at := range pm.Sites().Attentions {
		at.Hooks = append(at.Hooks, &hook{OwnedBy: nn.OwnedBy{Adapter: a.Name}, m: m})
	}
	return ps, nil
}

// torchLinear is torch.nn.Linear's default weight: U(−1/√in, 1/√in).
func torchLinear(g *tensor.RNG, out, in int) *tensor.Tensor {
	return torchBias(g, out*in, in).Reshape(out, in)
}

// torchBias is torch.nn.Linear's default bias: U(−1/√in, 1/√in).
func torchBias(g *tensor.RNG, n, in int) *tensor.Tensor {
	b := 1 / float32(math.Sqrt(float64(in)))
	return tensor.New(n).Uniform(g, -b, b)
}

// hook gives one layer its keys and values.
type hook struct {
	nn.OwnedBy
	m *Method
}

// PrefixKV implements nn.PrefixHook: layer l's segments 2l (keys) and 2l+1
// (values) of the table, or of the MLP's output.
func (h *hook) PrefixKV(p *nn.Pass, a *nn.Attention) (k, v *autograd.Var) {
	c := h.m.Cfg
	n, td, L, l := c.NumVirtualTokens, c.TokenDim, c.NumLayers, a.Layer
	tp := p.Tape
	if t := h.m.Table; t != nil {
		segs := tp.Reshape(t, n*2*L, td) // row j·2L+s is segment s of row j
		ki, vi := make([]int, n), make([]int, n)
		for j := range n {
			ki[j], vi[j] = j*2*L+2*l, j*2*L+2*l+1
		}
		return tp.GatherRows(segs, ki), tp.GatherRows(segs, vi)
	}
	f := h.m.mlp
	hid := Tanh(tp, tp.Add(tp.Linear(f.emb, f.w1), f.b1))
	out := func(seg int) *autograd.Var {
		rows := make([]int, td)
		for i := range rows {
			rows[i] = seg*td + i
		}
		w := tp.GatherRows(f.w2, rows)
		b := tp.Reshape(tp.GatherRows(tp.Reshape(f.b2, 2*L*td, 1), rows), td)
		return tp.Add(tp.Linear(hid, w), b)
	}
	return out(2 * l), out(2*l + 1)
}

// Tanh is tanh elementwise.
func Tanh(tp *autograd.Tape, x *autograd.Var) *autograd.Var {
	out := tensor.New(x.Value.Shape...)
	xs := x.Value.F32()
	for i, v := range xs {
		out.Data[i] = float32(math.Tanh(float64(v)))
	}
	return tp.Result(out, func(o *autograd.Var) {
		g := x.GradBuf().Data
		for i, y := range out.Data {
			g[i] += o.Grad.Data[i] * (1 - y*y)
		}
	}, x)
}

// forward is the MLP's whole output: the table prefix tuning saves.
func (f *mlp) forward(tp *autograd.Tape) *autograd.Var {
	hid := Tanh(tp, tp.Add(tp.Linear(f.emb, f.w1), f.b1))
	return tp.Add(tp.Linear(hid, f.w2), f.b2)
}
