// Package lntuning is PEFT's LN_TUNING (Zhao et al. 2023): only the
// chosen RMSNorm weights train (for LLaMA PEFT targets input_layernorm,
// post_attention_layernorm and norm). PEFT keeps a trainable copy per
// adapter in "ln_tuning_layers" and saves it as
// "<module>.ln_tuning_layers.weight" (src/peft/tuners/ln_tuning/layer.py),
// the layout read and written here. gopeft trains the norm's own weight
// in place (nn.RMSNorm's weight is a base parameter) under that name, so
// the adapter is always in the base: merging is a no-op, and a loaded
// adapter writes its weights into the norms.
package lntuning

import (
	"fmt"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// PeftType is PEFT's name.
const PeftType = "LN_TUNING"

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Usage: "norm modules: a comma list or a regex"},
		},
	})
}

// Config is LN_TUNING's adapter_config.json.
type Config struct{ peft.BaseConfig }

// NewConfig returns PEFT's LLaMA targets.
func NewConfig() *Config {
	return &Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM",
		TargetModules: peft.ModuleList("input_layernorm", "post_attention_layernorm", "norm")}}
}

// Validate implements peft.Config.
func (c *Config) Validate() error { return nil }

// Method is an LN tuning adapter.
type Method struct{ Cfg *Config }

// New returns LN tuning for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// Attach implements peft.Method: the targeted norms' weights, under
// PEFT's names.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	norms, err := peft.Match(&m.Cfg.BaseConfig, "RMSNorm", pm.Sites().Norms, func(n *nn.RMSNorm) (string, bool) { return n.Name, false })
	if err != nil {
		return nil, err
	}
	var ps nn.Params
	for _, n := range norms {
		if n.Weight.RequiresGrad() {
			return nil, fmt.Errorf("%s is already trained by another adapter", n.Name)
		}
		if n.Weight.Value.DType() != tensor.F32 {
			return nil, fmt.Errorf("%s: LN tuning needs a float32 norm weight, it is %v", n.Name, n.Weight.Value.DType())
		}
		ps = append(ps, nn.Param{Name: peft.SavePrefix + n.Name + ".ln_tuning_layers.weight", Var: n.Weight})
	}
	return ps, nil
}

// Merge implements peft.Merger: the weights already are the norms'.
func (m *Method) Merge(*peft.Adapter) error { return nil }

// Unmerge implements peft.Merger.
func (m *Method) Unmerge(*peft.Adapter) error {
	return fmt.Errorf("LN tuning trains the norms in place: there is no base copy to go back to")
}
