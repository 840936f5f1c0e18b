// Package ssf is SSF (Lian et al. 2022, "Scaling & Shifting Your Features:
// A New Baseline for Efficient Model Tuning"): after chosen Linear layers
// and RMSNorms, the output is scaled and shifted feature by feature,
// SSF(y) = γ⊙y + β, with γ ~ N(1, 0.02) and β ~ N(0, 0.02) at the start
// (so SSF is not an exact identity at step 0, as in the paper's code).
//
// Placement on LLaMA is by analogy with the paper's ViT placement (after
// the norms, qkv, the attention projection and the MLP's layers; no
// reference implementation for LLaMA exists): the default targets are the
// seven Linears of every block and its two RMSNorms. The final norm
// (model.norm) can be named too, but then the adapter cannot be merged
// (see Merge). target_modules selects Linears and RMSNorms alike by name;
// "all-linear" selects the Linears only.
//
// Files: gopeft's own peft_type SSF in PEFT's file layout (PEFT has no
// SSF): base_model.model.<module>.ssf_scale and .ssf_shift, each [width]
// (the reference's timm code names them ssf_scale_k / ssf_shift_k inside
// the model; there is no saved-adapter format to follow).
//
// Merge: a Linear's γ scales the rows of W and its β becomes (part of) a
// bias: W' = diag(γ)W, b' = γ⊙b + β. A norm's γ folds into the norm's
// weight; its β, which no RMSNorm can hold, moves into the biases of the
// Linears that read the norm (b += W·β: q, k and v after input_layernorm,
// gate and up after post_attention_layernorm). The merged model then has
// biases, which Hugging Face's LlamaConfig expresses as attention_bias
// (q, k, v, o) and mlp_bias (gate, up, down); llama.SaveHF writes them
// and llama.Load reads them. The LM head has no bias key in Hugging
// Face's LLaMA, so an SSF on model.norm or lm_head refuses to merge.
package ssf

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// PeftType is SSF's peft_type (gopeft's own: PEFT has none).
const PeftType = "SSF"

// Suffixes of the saved tensors.
const (
	ScaleSuffix = ".ssf_scale"
	ShiftSuffix = ".ssf_shift"
)

// DefaultTargets are the modules SSF follows by default: every block
// Linear and both block norms.
var DefaultTargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "input_layernorm", "post_attention_layernorm"}

// Config is SSF's adapter_config.json: the base keys, and init_ssf_weights
// (true: the paper's N(1, std), N(0, std) draws; false: γ = 1, β = 0
// exactly, an identity start) with init_std (0.02).
type Config struct {
	peft.BaseConfig
	InitSSFWeights bool    `json:"init_ssf_weights"`
	InitStd        float64 `json:"init_std"`
}

// NewConfig returns SSF's defaults.
func NewConfig() *Config {
	return &Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM",
		TargetModules: peft.ModuleList(DefaultTargets...)}, InitSSFWeights: true, InitStd: 0.02}
}

// MarshalJSON leaves out layers_pattern, which SSF does not use.
func (c *Config) MarshalJSON() ([]byte, error) {
	type plain Config
	b, err := json.Marshal((*plain)(c))
	if err != nil {
		return nil, err
	}
	return peft.DropKeys(b, "layers_pattern")
}

// Validate checks the keys.
func (c *Config) Validate() error {
	if !(c.InitStd >= 0) || c.InitStd > 1 {
		return &peft.KeyError{Method: PeftType, Key: "init_std", Value: c.InitStd, Allowed: "must be in [0, 1]"}
	}
	return nil
}

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Default: strings.Join(DefaultTargets, ","),
				Usage: "modules to scale and shift after: Linears and RMSNorms by name, a regex, or all-linear (Linears only)"},
		},
	})
}

// Method is an SSF adapter.
type Method struct {
	Cfg     *Config
	linears []*Hook
	norms   []*Hook
	// created are the biases Merge added (Unmerge removes them).
	created []*nn.Linear
	base    *llama.Model
}

// New returns an SSF method for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// Hook is one module's scale and shift; it is an nn.Delta on a Linear and
// an nn.NormHook on an RMSNorm.
type Hook struct {
	nn.OwnedBy
	Module       string
	Scale, Shift *autograd.Var
	linear       *nn.Linear
	norm         *nn.RMSNorm
}

// NewHook makes γ and β of width d for a module, named
// peft.SavePrefix + module + ".ssf_scale" / ".ssf_shift", drawn as the
// config says from g.
func NewHook(owner, module string, d int, random bool, std float64, g *tensor.RNG) *Hook {
	scale, shift := tensor.New(d), tensor.New(d)
	if random && std > 0 {
		scale.Normal(g, 1, float32(std))
		shift.Normal(g, 0, float32(std))
	} else {
		for i := range scale.Data {
			scale.Data[i] = 1
		}
	}
	name := peft.SavePrefix + module
	return &Hook{OwnedBy: nn.OwnedBy{Adapter: owner}, Module: module,
		Scale: autograd.Param(name+ScaleSuffix, scale, true), Shift: autograd.Param(name+ShiftSuffix, shift, true)}
}

// Params lists γ then β.
func (h *Hook) Params() nn.Params {
	return nn.Params{{Name: h.Scale.Name, Var: h.Scale}, {Name: h.Shift.Name, Var: h.Shift}}
}

// Forward is γ⊙y + β over y's last dimension.
func (h *Hook) Forward(p *nn.Pass, y *autograd.Var) *autograd.Var {
	return p.Tape.Add(p.Tape.Mul(y, h.Scale), h.Shift)
}

// Apply implements nn.Delta.
func (h *Hook) Apply(p *nn.Pass, _ *nn.Linear, _, y *autograd.Var) *autograd.Var {
	return h.Forward(p, y)
}

// ApplyNorm implements nn.NormHook.
func (h *Hook) ApplyNorm(p *nn.Pass, _ *nn.RMSNorm, y *autograd.Var) *autograd.Var {
	return h.Forward(p, y)
}

// String names the hook in errors.
func (h *Hook) String() string { return "SSF scale and shift" }

// Attach implements peft.Method: a scale and shift after every selected
// Linear and RMSNorm.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	c := m.Cfg
	if !c.TargetModules.IsSet() {
		c.TargetModules = peft.ModuleList(DefaultTargets...)
	}
	m.base = pm.Base
	sites := pm.Sites()
	g := tensor.NewRNG(c.Seed)
	var ps nn.Params
	if linears, _ := pm.Targets(&c.BaseConfig); len(linears) > 0 {
		for _, l := range linears {
			h := NewHook(a.Name, l.Name, l.Out(), c.InitSSFWeights, c.InitStd, g)
			h.linear = l
			l.Deltas = append(l.Deltas, h)
			m.linears = append(m.linears, h)
			ps = append(ps, h.Params()...)
		}
	}
	if !c.TargetModules.AllLinear() {
		for _, n := range sites.Norms {
			if !c.Selects(n.Name, false) {
				continue
			}
			h := NewHook(a.Name, n.Name, n.Weight.Value.Numel(), c.InitSSFWeights, c.InitStd, g)
			h.norm = n
			n.Hooks = append(n.Hooks, h)
			m.norms = append(m.norms, h)
			ps = append(ps, h.Params()...)
		}
	}
	if len(ps) == 0 {
		b, _ := c.TargetModules.MarshalJSON()
		return nil, &peft.KeyError{Method: PeftType, Key: "target_modules", Value: string(b),
			Allowed: "selects no Linear or RMSNorm; the model's are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head, input_layernorm, post_attention_layernorm, norm (e.g. model.layers.0.input_layernorm)"}
	}
	return ps, nil
}

// readers are the Linears that read a norm's output.
func readers(base *llama.Model, n *nn.RMSNorm) ([]*nn.Linear, error) {
	for _, b := range base.Layers {
		switch n {
		case b.InputNorm:
			return []*nn.Linear{b.Q, b.K, b.V}, nil
		case b.PostAttentionNorm:
			return []*nn.Linear{b.Gate, b.Up}, nil
		}
	}
	return nil, fmt.Errorf("ssf: %s's shift would need a bias on the LM head, which Hugging Face's LLaMA has no key for: leave it out of target_modules to merge", n.Name)
}

// Merge implements peft.Merger (see the package comment).
func (m *Method) Merge(*peft.Adapter) error {
	for _, h := range m.linears {
		if m.base.IsOutput(h.linear) {
			return fmt.Errorf("ssf: %s's shift would need a bias on an output layer, which Hugging Face's LLaMA has no key for: leave it out of target_modules to merge", h.Module)
		}
	}
	for _, h := range m.norms {
		if _, err := readers(m.base, h.norm); err != nil {
			return err
		}
	}
	m.created = nil
	// The norms' shifts first, through the readers' unscaled weights.
	for _, h := range m.norms {
		rs, _ := readers(m.base, h.norm)
		for _, l := range rs {
			if err := m.addBias(l, matVec(l.Weight.Value, h.Shift.Value.Data), 1); err != nil {
				return err
			}
		}
		if err := scaleVec(h.norm.Weight.Value, h.Scale.Value.Data, false); err != nil {
			return fmt.Errorf("ssf: %s: %w", h.Module, err)
		}
	}
	for _, h := range m.linears {
		l := h.linear
		if err := scaleRows(l.Weight.Value, h.Scale.Value.Data, false); err != nil {
			return fmt.Errorf("ssf: %s: %w", h.Module, err)
		}
		if l.Bias != nil {
			if err := scaleVec(l.Bias.Value, h.Scale.Value.Data, false); err != nil {
				return fmt.Errorf("ssf: %s bias: %w", h.Module, err)
			}
		}
		if err := m.addBias(l, h.Shift.Value.Data, 1); err != nil {
			return err
		}
	}
	return nil
}

// Unmerge implements peft.Merger: the steps of Merge undone in reverse.
func (m *Method) Unmerge(*peft.Adapter) error {
	for i := len(m.linears) - 1; i >= 0; i-- {
		h := m.linears[i]
		l := h.linear
		if err := m.addBias(l, h.Shift.Value.Data, -1); err != nil {
			return err
		}
		if err := scaleVec(l.Bias.Value, h.Scale.Value.Data, true); err != nil {
			return fmt.Errorf("ssf: %s bias: %w", h.Module, err)
		}
		if err := scaleRows(l.Weight.Value, h.Scale.Value.Data, true); err != nil {
			return fmt.Errorf("ssf: %s: %w", h.Module, err)
		}
	}
	for i := len(m.norms) - 1; i >= 0; i-- {
		h := m.norms[i]
		if err := scaleVec(h.norm.Weight.Value, h.Scale.Value.Data, true); err != nil {
			return fmt.Errorf("ssf: %s: %w", h.Module, err)
		}
		rs, _ := readers(m.base, h.norm)
		for _, l := range rs {
			if err := m.addBias(l, matVec(l.Weight.Value, h.Shift.Value.Data), -1); err != nil {
				return err
			}
		}
	}
	for _, l := range m.created {
		l.Bias = nil
	}
	m.created = nil
	return nil
}

// addBias adds sign·d to l's bias, giving l a (frozen) zero bias first when
// it has none.
func (m *Method) addBias(l *nn.Linear, d []float32, sign float32) error {
	if l.Bias == nil {
		l.Bias = autograd.Param(l.Name+".bias", tensor.New(l.Out()), false)
		m.created = append(m.created, l)
	}
	if err := nn.MergeInto(l.Bias.Value, d, sign); err != nil {
		return fmt.Errorf("ssf: %s bias: %w", l.Name, err)
	}
	return nil
}

// matVec is W·v for W [out, in] in any storage.
func matVec(w *tensor.Tensor, v []float32) []float32 {
	f := w.ToF32()
	out, in := f.Shape[0], f.Shape[1]
	r := make([]float32, out)
	for i := range out {
		var s float64
		for j, x := range f.Data[i*in : (i+1)*in] {
			s += float64(x) * float64(v[j])
		}
		r[i] = float32(s)
	}
	return r
}

// scaleRows multiplies row i of w by s[i] (or divides, inverse).
func scaleRows(w *tensor.Tensor, s []float32, inverse bool) error {
	f := w.ToF32()
	out, in := f.Shape[0], f.Shape[1]
	delta := make([]float32, len(f.Data))
	for i := range out {
		k := factor(s[i], inverse)
		for j := range in {
			delta[i*in+j] = f.Data[i*in+j] * (k - 1)
		}
	}
	return nn.MergeInto(w, delta, 1)
}

// scaleVec multiplies v elementwise by s (or divides, inverse).
func scaleVec(v *tensor.Tensor, s []float32, inverse bool) error {
	f := v.ToF32()
	delta := make([]float32, len(f.Data))
	for i, x := range f.Data {
		delta[i] = x * (factor(s[i], inverse) - 1)
	}
	return nn.MergeInto(v, delta, 1)
}

func factor(s float32, inverse bool) float32 {
	if inverse {
		return 1 / s
	}
	return s
}
