// Package hybrid is the methods that combine others: the MAM adapter (He
// et al. 2022, "Towards a Unified View of Parameter-Efficient Transfer
// Learning": prefix tuning on attention plus a scaled parallel adapter
// beside the FFN) and UniPELT (Mao et al. 2022: gated prefix tuning, gated
// LoRA on q and v, and a gated Pfeiffer adapter). Both are composed from
// the pieces' own packages: each piece's Attach hangs its hooks on the
// model's sites under the hybrid's adapter name, exactly as it would
// alone, and UniPELT then wraps those hooks in gates. Nothing of prefix
// tuning, LoRA or the bottleneck adapters is re-implemented here.
//
// Defaults follow the Adapters library's configs (adapter-hub/adapters
// 88f18ebd, configuration/adapter_config.py): MAMConfig is
// PrefixTuningConfig(bottleneck_size=800) (prefix length 30, the MLP
// reparameterisation, here PEFT's prefix_projection with
// encoder_hidden_size 800) plus ParBnConfig() (reduction 2, scaling 4,
// ReLU, "mam_adapter" init); UniPELTConfig is PrefixTuningConfig
// (prefix_length=10; MLP hidden 512), SeqBnConfig(reduction_factor=16) and
// LoRAConfig(r=8, alpha=2) on q and v, all with use_gating.
//
// Gates. In the Adapters library (methods/lora.py, methods/modeling.py,
// methods/prefix_tuning.py) each gate is G = mean over the sequence's
// tokens of σ(W_G·x_t + b), with W_G ~ N(0, 0.02): LoRA's update is
// multiplied by G instead of alpha/r (x: the layer's input, W_G [1, in]),
// the bottleneck's output by G (x: the adapter's input, W_G [1, d], bias
// 0), and the prefix keys and values by the two outputs of a gate on the
// attention input. A mean over the whole sequence is right for the
// encoders UniPELT was designed on, but in a decoder it lets every position
// read the tokens after it (the training loss then sees the future, and a
// cached generation cannot reproduce it). Here the gates are causal:
//   - LoRA and the adapter: the token's own gate σ(W_G·x_t + b), per row;
//   - the prefix: the prefix is fixed before the sequence's first token
//     (it sits in the KV cache from the first call on), so its gate can
//     only read what every position sees, the first token — BOS, whose
//     attention input is the same in every sequence. The gate is therefore
//     a learned pair of numbers per layer, σ(g_k) and σ(g_v), starting at
//     0.5 (σ of AH's near-zero gate output). Cached decoding then equals
//     recomputation and padded batches equal unpadded ones.
//
// Saved layout (peft_type MAM or UNIPELT, gopeft's own): adapter_config.json
// holds the base keys and each piece's configuration under its key —
// "prefix_tuning" (PrefixTuningConfig's keys), "adapter" (the bottleneck
// keys), "lora" (LoraConfig's keys; UniPELT only) — and use_gating. The
// safetensors file holds each piece's tensors under the names the piece
// alone gives them (prompt_embeddings; base_model.model.….lora_A.weight;
// model.layers.{i}.output_adapters.adapters.{adapter}.…) and the gates:
// model.layers.{i}.self_attn.prefix_gate [2] (key, value), ….lora_gate.weight
// [1, in] and .lora_gate.bias [1] beside LoRA's, and ….gate.weight [1, d]
// and .gate.bias [1] beside the bottleneck's (the Adapters library's name).
// Neither hybrid is mergeable (the adapter is nonlinear).
package hybrid

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/bottleneck"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/peft/prefixtuning"
	"github.com/gopeft/gopeft/tensor"
)

// The hybrids' peft_types (gopeft's own: PEFT has neither).
const (
	MAM     = "MAM"
	UniPELT = "UNIPELT"
)

// Config is a hybrid's adapter_config.json: the base keys and its pieces'
// configurations.
type Config struct {
	peft.BaseConfig
	PrefixTuning *prefixtuning.Config `json:"prefix_tuning"`
	Adapter      *bottleneck.Config   `json:"adapter"`
	LoRA         *lora.Config         `json:"lora,omitempty"`
	UseGating    bool                 `json:"use_gating"`
}

// NewMAMConfig returns the Adapters library's MAMConfig.
func NewMAMConfig() *Config {
	pt := prefixtuning.NewConfig()
	pt.NumVirtualTokens, pt.PrefixProjection, pt.EncoderHiddenSize = 30, true, 800
	bn := bottleneck.NewConfig()
	bn.Architecture = bottleneck.Par
	return &Config{BaseConfig: peft.BaseConfig{PeftType: MAM, TaskType: "CAUSAL_LM"}, PrefixTuning: pt, Adapter: bn}
}

// NewUniPELTConfig returns the Adapters library's UniPELTConfig.
func NewUniPELTConfig() *Config {
	pt := prefixtuning.NewConfig()
	pt.NumVirtualTokens, pt.PrefixProjection, pt.EncoderHiddenSize = 10, true, 512
	bn := bottleneck.NewConfig()
	bn.Architecture, bn.ReductionFactor = bottleneck.Seq, 16
	lc := lora.NewConfig()
	lc.R, lc.LoraAlpha = 8, 2
	return &Config{BaseConfig: peft.BaseConfig{PeftType: UniPELT, TaskType: "CAUSAL_LM"}, PrefixTuning: pt, Adapter: bn, LoRA: lc, UseGating: true}
}

// pieces are the piece configurations by key, those the hybrid has.
func (c *Config) pieces() []struct {
	key string
	cfg peft.Config
} {
	out := []struct {
		key string
		cfg peft.Config
	}{{"prefix_tuning", c.PrefixTuning}, {"adapter", c.Adapter}}
	if c.LoRA != nil {
		out = append(out, struct {
			key string
			cfg peft.Config
		}{"lora", c.LoRA})
	}
	return out
}

// UnmarshalJSON reads each piece's block into its configuration (keeping
// its defaults for keys the block leaves out; a key the piece does not
// know is an error naming it), then the base keys.
func (c *Config) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for _, p := range c.pieces() {
		v, ok := raw[p.key]
		if !ok {
			continue
		}
		delete(raw, p.key)
		want := p.cfg.Base().PeftType
		if err := peft.DecodeConfig(v, p.cfg, c.PeftType+" "+p.key, true); err != nil {
			return err
		}
		if got := p.cfg.Base().PeftType; !strings.EqualFold(got, want) {
			return fmt.Errorf("%s %s: peft_type is %q, but this piece is %s", c.PeftType, p.key, got, want)
		}
	}
	if _, ok := raw["lora"]; ok && c.LoRA == nil {
		return fmt.Errorf("%s has no lora piece", c.PeftType)
	}
	rest, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	type plain Config
	return json.Unmarshal(rest, (*plain)(c))
}

// MarshalJSON leaves out the target keys: the pieces hold their own.
func (c *Config) MarshalJSON() ([]byte, error) {
	type plain Config
	b, err := json.Marshal((*plain)(c))
	if err != nil {
		return nil, err
	}
	return peft.DropKeys(b, "target_modules", "exclude_modules", "layers_to_transform", "layers_pattern")
}

// Validate checks the pieces.
func (c *Config) Validate() error {
	if c.PrefixTuning == nil || c.Adapter == nil {
		return fmt.Errorf("%s needs prefix_tuning and adapter pieces", strings.ToLower(c.PeftType))
	}
	for _, p := range c.pieces() {
		if err := p.cfg.Validate(); err != nil {
			return fmt.Errorf("%s: %w", p.key, err)
		}
	}
	return nil
}

func init() {
	peft.Register(peft.Registration{Type: MAM, New: func() peft.Method { return New(NewMAMConfig()) }})
	peft.Register(peft.Registration{Type: UniPELT, New: func() peft.Method { return New(NewUniPELTConfig()) }})
}

// Method is a hybrid adapter: its pieces' methods, attached in turn under
// one adapter name, and the gates around their hooks.
type Method struct {
	Cfg    *Config
	pieces []piece
	gates  nn.Params
}

type piece struct {
	m  peft.Method
	ps nn.Params
}

// New returns a hybrid method for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// Attach implements peft.Method: the prefix, the LoRA (UniPELT) and the
// bottleneck pieces attach in turn; with use_gating each new hook is then
// wrapped in its gate.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	c := m.Cfg
	g := tensor.NewRNG(c.Seed ^ 0x9e3779b97f4a7c15)
	own := nn.OwnedBy{Adapter: a.Name}
	sites := pm.Sites()
	var all nn.Params
	add := func(key string, pm2 peft.Method, seed uint64) error {
		pm2.Config().Base().Seed = c.Seed + seed
		ps, err := pm2.Attach(pm, a)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		m.pieces = append(m.pieces, piece{pm2, ps})
		all = append(all, ps...)
		return nil
	}

	if err := add("prefix_tuning", prefixtuning.New(c.PrefixTuning), 1); err != nil {
		return nil, err
	}
	if c.UseGating {
		for _, at := range sites.Attentions {
			for i, h := range at.Hooks {
				if _, done := h.(*gatedPrefix); h.Owner() == a.Name && !done {
					gp := &gatedPrefix{OwnedBy: own, inner: h,
						g: autograd.Param(at.Name+".prefix_gate", tensor.New(2), true)}
					at.Hooks[i] = gp
					m.gates = append(m.gates, nn.Param{Name: gp.g.Name, Var: gp.g})
				}
			}
		}
	}

	if c.LoRA != nil {
		// The gate takes alpha/r's place: LoRA's own scale is 1.
		lc := *c.LoRA
		if c.UseGating {
			lc.LoraAlpha, lc.UseRSLoRA, lc.AlphaPattern = float64(lc.R), false, nil
			lc.RankPattern = nil
			if len(c.LoRA.RankPattern) > 0 || len(c.LoRA.AlphaPattern) > 0 {
				return nil, fmt.Errorf("lora: rank_pattern and alpha_pattern are not supported with use_gating")
			}
		}
		if err := add("lora", lora.New(&lc), 2); err != nil {
			return nil, err
		}
		if c.UseGating {
			for _, l := range sites.Linears {
				for i, d := range l.Deltas {
					if _, done := d.(*gatedDelta); d.Owner() == a.Name && !done {
						name := peft.SavePrefix + l.Name + ".lora_gate."
						gd := &gatedDelta{OwnedBy: own, inner: d,
							w: autograd.Param(name+"weight", tensor.New(1, l.In()).Normal(g, 0, 0.02), true),
							b: autograd.Param(name+"bias", torchBias(g, 1, l.In()), true)}
						l.Deltas[i] = gd
						m.gates = append(m.gates, nn.Param{Name: gd.w.Name, Var: gd.w}, nn.Param{Name: gd.b.Name, Var: gd.b})
					}
				}
			}
		}
	}

	if err := add("adapter", bottleneck.New(c.Adapter), 3); err != nil {
		return nil, err
	}
	if c.UseGating {
		d := pm.Base.Config.HiddenSize
		for _, s := range sites.Sublayers {
			for i, h := range s.Hooks {
				mod, ok := h.(*bottleneck.Module)
				if !ok || h.Owner() != a.Name {
					continue
				}
				name := strings.TrimSuffix(mod.Down.Name, "adapter_down.0.weight") + "gate."
				gs := &gatedSublayer{OwnedBy: own, inner: mod,
					w: autograd.Param(name+"weight", tensor.New(1, d).Normal(g, 0, 0.02), true),
					b: autograd.Param(name+"bias", tensor.New(1), true)}
				s.Hooks[i] = gs
				m.gates = append(m.gates, nn.Param{Name: gs.w.Name, Var: gs.w}, nn.Param{Name: gs.b.Name, Var: gs.b})
			}
		}
	}
	all = append(all, m.gates...)
	seen := map[string]bool{}
	for _, p := range all {
		if seen[p.Name] {
			return nil, fmt.Errorf("%s: two pieces name a tensor %s", strings.ToLower(c.PeftType), p.Name)
		}
		seen[p.Name] = true
	}
	return all, nil
}

// SavedParams implements peft.Saver: each piece's saved tensors (a
// prefix_projection MLP's output table, say), then the gates.
func (m *Method) SavedParams() (nn.Params, error) {
	var out nn.Params
	for _, p := range m.pieces {
		if s, ok := p.m.(peft.Saver); ok {
			ps, err := s.SavedParams()
			if err != nil {
				return nil, err
			}
			out = append(out, ps...)
		} else {
			out = append(out, p.ps...)
		}
	}
	return append(out, m.gates...), nil
}

// Loaded implements peft.Saver.
func (m *Method) Loaded() error {
	for _, p := range m.pieces {
		if s, ok := p.m.(peft.Saver); ok {
			if err := s.Loaded(); err != nil {
				return err
			}
		}
	}
	return nil
}

// gatedPrefix scales a prefix hook's keys by σ(g[0]) and values by σ(g[1]).
type gatedPrefix struct {
	nn.OwnedBy
	inner nn.PrefixHook
	g     *autograd.Var // [2]
}

// PrefixKV implements nn.PrefixHook.
func (h *gatedPrefix) PrefixKV(p *nn.Pass, a *nn.Attention) (k, v *autograd.Var) {
	k, v = h.inner.PrefixKV(p, a)
	tp := p.Tape
	s := Sigmoid(tp, tp.Reshape(h.g, 2, 1))
	gk := tp.Reshape(tp.GatherRows(s, []int{0}), 1)
	gv := tp.Reshape(tp.GatherRows(s, []int{1}), 1)
	return bottleneck.ScaleBy(tp, k, gk), bottleneck.ScaleBy(tp, v, gv)
}

// String names the hook in errors.
func (h *gatedPrefix) String() string { return "gated prefix" }

// gate is σ(x·wᵀ + b) per row of x: [rows, 1].
func gate(tp *autograd.Tape, x, w, b *autograd.Var) *autograd.Var {
	return Sigmoid(tp, tp.Add(tp.Linear(x, w), b))
}

// gatedDelta is y + G(x)⊙(inner(y) − y): the inner delta's change (LoRA's
// B·A·x at scale 1), gated per row by the layer's input.
type gatedDelta struct {
	nn.OwnedBy
	inner nn.Delta
	w, b  *autograd.Var
}

// Apply implements nn.Delta.
func (h *gatedDelta) Apply(p *nn.Pass, l *nn.Linear, x, y *autograd.Var) *autograd.Var {
	tp := p.Tape
	change := tp.Add(h.inner.Apply(p, l, x, y), tp.Scale(y, -1))
	return tp.Add(y, RowScale(tp, change, gate(tp, x, h.w, h.b)))
}

// String names the hook in errors.
func (h *gatedDelta) String() string { return "gated LoRA" }

// gatedSublayer is out + G(z)⊙(A's contribution), z the bottleneck's input.
type gatedSublayer struct {
	nn.OwnedBy
	inner *bottleneck.Module
	w, b  *autograd.Var
}

// ApplySublayer implements nn.SublayerHook.
func (h *gatedSublayer) ApplySublayer(p *nn.Pass, s *nn.Sublayer, residual, normed, out *autograd.Var) *autograd.Var {
	tp := p.Tape
	var z *autograd.Var
	switch h.inner.Arch {
	case bottleneck.Seq:
		z = tp.Add(residual, out)
	case bottleneck.Par:
		z = residual
	default:
		z = out
	}
	change := tp.Add(h.inner.ApplySublayer(p, s, residual, normed, out), tp.Scale(out, -1))
	return tp.Add(out, RowScale(tp, change, gate(tp, z, h.w, h.b)))
}

// String names the hook in errors.
func (h *gatedSublayer) String() string { return "gated bottleneck adapter" }

// torchBias is torch.nn.Linear's default bias: U(−1/√in, 1/√in).
func torchBias(g *tensor.RNG, n, in int) *tensor.Tensor {
	b := 1 / float32(math.Sqrt(float64(in)))
	return tensor.New(n).Uniform(g, -b, b)
}

// Sigmoid is σ elementwise.
func Sigmoid(tp *autograd.Tape, x *autograd.Var) *autograd.Var {
	out := tensor.New(x.Value.Shape...)
	for i, v := range x.Value.F32() {
		out.Data[i] = float32(1 / (1 + math.Exp(-float64(v))))
	}
	return tp.Result(out, func(o *autograd.Var) {
		if !x.RequiresGrad() {
			return
		}
		g := x.GradBuf().Data
		for i, y := range out.Data {
			g[i] += o.Grad.Data[i] * y * (1 - y)
		}
	}, x)
}

// RowScale is x [rows, cols] with row r multiplied by s[r] (s [rows, 1]).
func RowScale(tp *autograd.Tape, x, s *autograd.Var) *autograd.Var {
	rows, cols := x.Value.Rows(), x.Value.Cols()
	if s.Value.Numel() != rows {
		panic(fmt.Sprintf("hybrid: RowScale of %v by %v", x.Value.Shape, s.Value.Shape))
	}
	out := tensor.New(x.Value.Shape...)
	xs, ss := x.Value.F32(), s.Value.F32()
	for r := range rows {
		for c := range cols {
			out.Data[r*cols+c] = xs[r*cols+c] * ss[r]
		}
	}
	return tp.Result(out, func(o *autograd.Var) {
		if x.RequiresGrad() {
			g := x.GradBuf().Data
			for r := range rows {
				for c := range cols {
					g[r*cols+c] += o.Grad.Data[r*cols+c] * ss[r]
				}
			}
		}
		if s.RequiresGrad() {
			g := s.GradBuf().Data
			for r := range rows {
				var sum float64
				for c := range cols {
					sum += float64(o.Grad.Data[r*cols+c] * xs[r*cols+c])
				}
				g[r] += float32(sum)
			}
		}
	}, x, s)
}
