// Package childtuning is Child-Tuning (Xu et al. 2021, "Raise a Child in
// Large Language Model"), both variants, after alibaba/AliceMind's
// ChildTuning code:
//
//   - CHILD_TUNING_F: every base tensor trains, but at each update every
//     gradient entry is kept with probability reserve_p and rescaled,
//     g ← g⊙M/p with M ~ Bernoulli(p) (ChildTuningOptimizer.py), before
//     AdamW reads it; weight decay is not masked. The result is a whole
//     model, as full fine-tuning's.
//   - CHILD_TUNING_D: a child network fixed before training from the
//     Fisher information of per-tensor clipped gradients
//     (ChildTuningD.py: F = mean over batches of clip_norm(∇W)², here one
//     example a batch), its top entries over the blocks' Linear weights;
//     only they train, with no rescale, saved as a sparse delta file.
package childtuning

import (
	"fmt"
	"hash/fnv"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/full"
	"github.com/gopeft/gopeft/peft/sparse"
	"github.com/gopeft/gopeft/tensor"
)

// The peft_types.
const (
	TypeF = "CHILD_TUNING_F"
	TypeD = "CHILD_TUNING_D"
)

func init() {
	peft.Register(peft.Registration{
		Type: TypeF,
		New:  func() peft.Method { return NewF(NewConfigF()) },
		Flags: []peft.Flag{
			{Name: "reserve-p", Key: "reserve_p", Kind: peft.FloatFlag, Usage: "probability that a gradient entry is kept each update"},
		},
	})
	peft.Register(peft.Registration{
		Type: TypeD,
		New:  func() peft.Method { return NewD(NewConfigD()) },
		Flags: []peft.Flag{
			{Name: "density", Key: "density", Kind: peft.FloatFlag, Usage: "fraction of the base's parameters that may change"},
			{Name: "num-samples", Key: "num_samples", Kind: peft.IntFlag, Usage: "training examples the Fisher information averages (0: all)"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Usage: "target modules: a comma list, a regex or all-linear"},
		},
	})
}

// ConfigF is CHILD_TUNING_F's config.
type ConfigF struct {
	peft.BaseConfig
	ReserveP float64 `json:"reserve_p"`
}

// NewConfigF returns the reference's reserve_p 0.3.
func NewConfigF() *ConfigF {
	return &ConfigF{BaseConfig: peft.BaseConfig{PeftType: TypeF, TaskType: "CAUSAL_LM"}, ReserveP: 0.3}
}

// Validate implements peft.Config.
func (c *ConfigF) Validate() error {
	if !(c.ReserveP > 0 && c.ReserveP <= 1) {
		return &peft.KeyError{Method: TypeF, Key: "reserve_p", Value: c.ReserveP, Allowed: "must be in (0, 1]"}
	}
	return nil
}

// MethodF is CHILD_TUNING_F: full fine-tuning with a fresh Bernoulli
// gradient mask at every update.
type MethodF struct {
	*full.Method
	Cfg    *ConfigF
	params nn.Params
}

// NewF returns CHILD_TUNING_F for a config.
func NewF(c *ConfigF) *MethodF { return &MethodF{Method: full.New(), Cfg: c} }

// Config implements peft.Method.
func (m *MethodF) Config() peft.Config { return m.Cfg }

// Attach implements peft.Method: every base tensor, as full fine-tuning.
func (m *MethodF) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	ps, err := m.Method.Attach(pm, a)
	m.params = ps
	return ps, err
}

// BeforeUpdate implements peft.GradHook: g ← g⊙M/p. The mask of tensor i
// at update s is drawn from a generator seeded by (config seed, s, the
// tensor's name), so a resumed run draws the same masks.
func (m *MethodF) BeforeUpdate(step int) error {
	p := m.Cfg.ReserveP
	scale := float32(1 / p)
	for _, q := range m.params {
		if q.Var.Grad == nil {
			continue
		}
		Mask(q.Var.Grad.Data, p, scale, maskSeed(m.Cfg.Seed, step, q.Name))
	}
	return nil
}

// Mask keeps each entry of g with probability p, multiplied by scale, and
// zeroes the others, drawing from seed.
func Mask(g []float32, p float64, scale float32, seed uint64) {
	r := tensor.NewRNG(seed)
	for i := range g {
		if r.Float64() < p {
			g[i] *= scale
		} else {
			g[i] = 0
		}
	}
}

func maskSeed(seed uint64, step int, name string) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d/%s", seed, step, name)
	return h.Sum64()
}

// ConfigD is CHILD_TUNING_D's config.
type ConfigD struct {
	sparse.Config
	NumSamples  int     `json:"num_samples"`
	MaxGradNorm float64 `json:"max_grad_norm"`
}

// NewConfigD returns the reference's reserve_p 0.3 as the density, every
// example and a per-tensor clip of 1.
func NewConfigD() *ConfigD {
	return &ConfigD{Config: sparse.NewConfig(TypeD, 0.3), MaxGradNorm: 1}
}

// Validate implements peft.Config.
func (c *ConfigD) Validate() error {
	if c.NumSamples < 0 {
		return &peft.KeyError{Method: TypeD, Key: "num_samples", Value: c.NumSamples, Allowed: "must be ≥ 0 (0: all)"}
	}
	if !(c.MaxGradNorm >= 0) {
		return &peft.KeyError{Method: TypeD, Key: "max_grad_norm", Value: c.MaxGradNorm, Allowed: "must be ≥ 0 (0: no clipping)"}
	}
	return c.Config.Validate()
}

// MethodD is CHILD_TUNING_D.
type MethodD struct {
	*sparse.Method
	Cfg *ConfigD
}

// NewD returns CHILD_TUNING_D for a config.
func NewD(c *ConfigD) *MethodD {
	m := &MethodD{Cfg: c}
	m.Method = sparse.NewMethod(c, &c.Config, func(pm *peft.Model, ts []*nn.Linear, k int, obj peft.Objective) ([][]int32, error) {
		return sparse.FisherTopK(pm, ts, obj, sparse.FisherOptions{Samples: c.NumSamples, ClipNorm: c.MaxGradNorm, Mean: true}, k)
	})
	return m
}
