// Package bitfit is BitFit (Ben Zaken et al. 2022) for LLaMA, which has no
// biases: a zero-initialised bias b [out] added to each chosen Linear
// (default every projection of the blocks), y = W·x + b, and only the
// biases train. OpenDelta's BitFit adds new biases initialised
// U(±1/√fan_in), which changes the model before training; these start at
// zero. Merging gives the layers real biases, and the merged Hugging Face
// model says so with attention_bias / mlp_bias (which gopeft loads).
//
// It also reads and writes PEFT's BEFT layout (peft_type BEFT,
// src/peft/tuners/beft): the same computation with the bias saved as
// "<module>.beft_bias" of shape [1, out], init_weights true for zeros,
// default target v_proj.
package bitfit

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// The peft_types.
const (
	PeftType = "BITFIT"
	BeftType = "BEFT"
)

func init() {
	flags := []peft.Flag{{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Usage: "target modules: a comma list, a regex or all-linear"}}
	peft.Register(peft.Registration{Type: PeftType, New: func() peft.Method { return New(NewConfig()) }, Flags: flags})
	peft.Register(peft.Registration{Type: BeftType, New: func() peft.Method { return New(NewBeftConfig()) }, Flags: flags})
}

// Config is BitFit's (and BEFT's) adapter_config.json.
type Config struct {
	peft.BaseConfig
	// InitWeights is BEFT's init_weights: true starts the biases at zero,
	// false draws them from N(0, 1) as PEFT does.
	InitWeights bool `json:"init_weights"`
}

// NewConfig returns BitFit on every Linear but the output layers.
func NewConfig() *Config {
	return &Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM", TargetModules: peft.ModuleRegex("all-linear")}, InitWeights: true}
}

// NewBeftConfig returns PEFT's BEFT defaults for LLaMA: v_proj.
func NewBeftConfig() *Config {
	return &Config{BaseConfig: peft.BaseConfig{PeftType: BeftType, TaskType: "CAUSAL_LM", TargetModules: peft.ModuleList("v_proj")}, InitWeights: true}
}

// Validate implements peft.Config.
func (c *Config) Validate() error { return nil }

// Method is a BitFit or BEFT adapter.
type Method struct {
	Cfg    *Config
	layers []*bias
	pm     *peft.Model
}

// New returns the method for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// bias adds b to one Linear's output.
type bias struct {
	nn.OwnedBy
	linear *nn.Linear
	b      *autograd.Var // [out] (BITFIT) or [1, out] (BEFT)
}

func (b *bias) Apply(p *nn.Pass, _ *nn.Linear, _, y *autograd.Var) *autograd.Var {
	v := b.b
	if len(v.Value.Shape) == 2 {
		v = p.Tape.Reshape(v, v.Value.Shape[1])
	}
	return p.Tape.Add(y, v)
}

// Attach implements peft.Method: a bias per targeted Linear.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	ts, err := pm.Targets(&m.Cfg.BaseConfig)
	if err != nil {
		return nil, err
	}
	m.pm = pm
	g := tensor.NewRNG(m.Cfg.Seed)
	var ps nn.Params
	for _, l := range ts {
		shape, suffix := []int{l.Out()}, ".bias"
		if m.Cfg.PeftType == BeftType {
			shape, suffix = []int{1, l.Out()}, ".beft_bias"
		}
		t := tensor.New(shape...)
		if !m.Cfg.InitWeights {
			t.Normal(g, 0, 1)
		}
		b := &bias{OwnedBy: nn.OwnedBy{Adapter: a.Name}, linear: l, b: autograd.Param(peft.SavePrefix+l.Name+suffix, t, true)}
		l.Deltas = append(l.Deltas, b)
		m.layers = append(m.layers, b)
		ps = append(ps, nn.Param{Name: b.b.Name, Var: b.b})
	}
	return ps, nil
}

// Merge implements peft.Merger: each layer's bias becomes (or grows by) b.
// A layer without a bias gets one; the model's config then says
// attention_bias / mlp_bias for the Hugging Face directory merge writes.
func (m *Method) Merge(*peft.Adapter) error {
	for _, b := range m.layers {
		l := b.linear
		if l.Bias == nil {
			l.Bias = autograd.Param(l.Name+".bias", tensor.New(l.Out()), false)
		}
		for i, v := range b.b.Value.Data {
			l.Bias.Value.Data[i] += v
		}
	}
	completeBiases(m.pm)
	return nil
}

// completeBiases gives every attention projection a (zero) bias when one
// has a bias, and every MLP projection when one has, and says so in the
// config: Hugging Face's attention_bias and mlp_bias hold for all layers.
func completeBiases(pm *peft.Model) {
	cfg := &pm.Base.Config
	for _, group := range []struct {
		flag *bool
		pick func(ls []*nn.Linear) []*nn.Linear
	}{
		{&cfg.AttentionBias, func(ls []*nn.Linear) []*nn.Linear { return ls[:4] }},
		{&cfg.MLPBias, func(ls []*nn.Linear) []*nn.Linear { return ls[4:] }},
	} {
		var ls []*nn.Linear
		any := false
		for _, b := range pm.Base.Layers {
			for _, l := range group.pick(b.Linears()) {
				ls = append(ls, l)
				any = any || l.Bias != nil
			}
		}
		if !any {
			continue
		}
		*group.flag = true
		for _, l := range ls {
			if l.Bias == nil {
				l.Bias = autograd.Param(l.Name+".bias", tensor.New(l.Out()), false)
			}
		}
	}
}

// Unmerge implements peft.Merger.
func (m *Method) Unmerge(*peft.Adapter) error {
	for _, b := range m.layers {
		if b.linear.Bias == nil {
			return fmt.Errorf("%s has no bias to take the adapter back out of", b.linear.Name)
		}
		for i, v := range b.b.Value.Data {
			b.linear.Bias.Value.Data[i] -= v
		}
	}
	return nil
}
