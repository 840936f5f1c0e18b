package train

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/nn"
)

// AdamWConfig holds AdamW's hyperparameters. Start from DefaultAdamW: a
// zero value means beta1 = beta2 = 0, not PyTorch's defaults.
type AdamWConfig struct {
	Beta1, Beta2 float64
	Eps          float64
	WeightDecay  float64
	// NoDecay, when set, exempts the parameters it returns true for from
	// weight decay (Hugging Face's Trainer exempts biases and norm weights).
	NoDecay func(name string) bool
}

// DefaultAdamW is torch.optim.AdamW's defaults: betas (0.9, 0.999),
// eps 1e-8, weight decay 0.01.
func DefaultAdamW() AdamWConfig {
	return AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
}

func (c AdamWConfig) validate() error {
	switch {
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return fmt.Errorf("adamw: beta1 %v is outside [0, 1)", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("adamw: beta2 %v is outside [0, 1)", c.Beta2)
	case !(c.Eps >= 0) || math.IsInf(c.Eps, 0):
		return fmt.Errorf("adamw: eps %v must be a finite value ≥ 0", c.Eps)
	case !(c.WeightDecay >= 0) || math.IsInf(c.WeightDecay, 0):
		return fmt.Errorf("adamw: weight decay %v must be a finite value ≥ 0", c.WeightDecay)
	}
	return nil
}

// AdamW is torch.optim.AdamW (amsgrad off): for each parameter with a
// gradient g, at its step t,
//
//	p ← p·(1 − lr·wd)                      decoupled weight decay
//	m ← β1·m + (1−β1)·g,  v ← β2·v + (1−β2)·g²
//	p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
//
// computed in float32 in PyTorch's operation order, with the scalar factors
// formed in float64 first as PyTorch's Python code does.
type AdamW struct {
	stateful
	cfg     AdamWConfig
	decayOn []bool // per parameter: whether weight decay applies
}

// NewAdamW returns an AdamW optimizer over the trainable parameters of ps
// (frozen ones are skipped, tied ones counted once).
func NewAdamW(ps nn.Params, cfg AdamWConfig) (*AdamW, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	o := &AdamW{stateful: newStateful("adamw", ps, "exp_avg", "exp_avg_sq"), cfg: cfg}
	o.decayOn = make([]bool, len(o.params))
	for i, p := range o.params {
		o.decayOn[i] = cfg.NoDecay == nil || !cfg.NoDecay(p.Name)
	}
	return o, nil
}

// adamScalars are one parameter's float32 factors for one step.
type adamScalars struct {
	decay, w1, b2, w2, stepSize, bc2Sqrt, eps float32
}

// Step applies one AdamW update with learning rate lr.
func (o *AdamW) Step(lr float64) {
	o.begin()
	sc := adamStep(&o.stateful, o.cfg, o.decayOn, lr)
	forSegments(o.segs, func(_ int, s segment) {
		if !o.active[s.p] {
			return
		}
		v := o.params[s.p].Var
		adamwKernel(sc[s.p], v.Value.F32()[s.lo:s.hi], v.Grad.F32()[s.lo:s.hi],
			o.bufs[s.p][0].Data[s.lo:s.hi], o.bufs[s.p][1].Data[s.lo:s.hi])
	})
}

// adamStep returns each active parameter's factors for this step (after
// o.begin has counted it): its group's learning-rate scale and weight
// decay, and the bias corrections of its own step count.
func adamStep(o *stateful, cfg AdamWConfig, decayOn []bool, lr float64) []adamScalars {
	sc := make([]adamScalars, len(o.params))
	for i := range o.params {
		if !o.active[i] {
			continue
		}
		t := float64(o.steps[i])
		wd := cfg.WeightDecay
		if !decayOn[i] {
			wd = 0
		}
		wd = o.decay(i, wd)
		lr := lr * o.lrScale[i]
		bc1 := 1 - math.Pow(cfg.Beta1, t)
		bc2 := 1 - math.Pow(cfg.Beta2, t)
		sc[i] = adamScalars{
			decay:    float32(1 - lr*wd),
			w1:       float32(1 - cfg.Beta1),
			b2:       float32(cfg.Beta2),
			w2:       float32(1 - cfg.Beta2),
			stepSize: float32(lr / bc1),
			bc2Sqrt:  float32(math.Sqrt(bc2)),
			eps:      float32(cfg.Eps),
		}
	}
	return sc
}

// adamwKernel updates one contiguous range. The explicit float32
// conversions keep each operation rounded separately (no fused
// multiply-add), as PyTorch's separate tensor operations are.
func adamwKernel(c adamScalars, p, g, m, v []float32) {
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	for i := range p {
		pi := float32(p[i] * c.decay)
		gi := g[i]
		// torch.lerp(m, g, w): m + w·(g − m) for w < ½, else g − (g − m)·(1 − w).
		mi := m[i]
		if c.w1 < 0.5 {
			mi = mi + float32(c.w1*float32(gi-mi))
		} else {
			mi = gi - float32(float32(gi-mi)*(1-c.w1))
		}
		vi := float32(v[i]*c.b2) + float32(float32(c.w2*gi)*gi)
		denom := float32(float32(math.Sqrt(float64(vi)))/c.bc2Sqrt) + c.eps
		pi = pi + float32(-c.stepSize*float32(mi/denom))
		p[i], m[i], v[i] = pi, mi, vi
	}
}

// State returns the per-parameter step counts and exp_avg / exp_avg_sq
// buffers (live, not copied).
func (o *AdamW) State() *OptimizerState {
	return o.state(map[string]float64{
		"beta1": o.cfg.Beta1, "beta2": o.cfg.Beta2, "eps": o.cfg.Eps, "weight_decay": o.cfg.WeightDecay,
	})
}

// LoadState restores state saved by State.
func (o *AdamW) LoadState(st *OptimizerState) error { return o.loadState(st) }
