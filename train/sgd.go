package train

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/nn"
)

// SGDConfig holds SGD's hyperparameters, torch.optim.SGD's meaning and
// defaults (all zero, nesterov off).
type SGDConfig struct {
	Momentum    float64
	Dampening   float64
	WeightDecay float64 // L2: added to the gradient as wd·p
	Nesterov    bool
}

func (c SGDConfig) validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"momentum", c.Momentum}, {"dampening", c.Dampening}, {"weight decay", c.WeightDecay}} {
		if !(f.v >= 0) || math.IsInf(f.v, 0) {
			return fmt.Errorf("sgd: %s %v must be a finite value ≥ 0", f.name, f.v)
		}
	}
	if c.Nesterov && (c.Momentum == 0 || c.Dampening != 0) {
		return fmt.Errorf("sgd: nesterov momentum requires momentum > 0 and zero dampening (have %v, %v)", c.Momentum, c.Dampening)
	}
	return nil
}

// SGD is torch.optim.SGD: for each parameter with a gradient,
//
//	g ← g + wd·p
//	b ← g on the first step, else μ·b + (1−τ)·g        (when μ ≠ 0)
//	g ← g + μ·b if nesterov, else b
//	p ← p − lr·g
type SGD struct {
	stateful
	cfg SGDConfig
}

// NewSGD returns an SGD optimizer over the trainable parameters of ps.
func NewSGD(ps nn.Params, cfg SGDConfig) (*SGD, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var bufs []string
	if cfg.Momentum != 0 {
		bufs = []string{"momentum_buffer"}
	}
	return &SGD{stateful: newStateful("sgd", ps, bufs...), cfg: cfg}, nil
}

// Step applies one SGD update with learning rate lr.
func (o *SGD) Step(lr float64) {
	o.begin()
	mu, damp := float32(o.cfg.Momentum), float32(1-o.cfg.Dampening)
	forSegments(o.segs, func(_ int, s segment) {
		if !o.active[s.p] {
			return
		}
		wd, nlr := float32(o.decay(s.p, o.cfg.WeightDecay)), float32(-lr*o.lrScale[s.p])
		v := o.params[s.p].Var
		p, g := v.Value.F32()[s.lo:s.hi], v.Grad.F32()[s.lo:s.hi]
		g = g[:len(p)]
		var b []float32
		if mu != 0 {
			b = o.bufs[s.p][0].Data[s.lo:s.hi]
			b = b[:len(p)]
		}
		first := o.steps[s.p] == 1
		for i := range p {
			gi := g[i]
			if wd != 0 {
				gi = gi + float32(wd*p[i])
			}
			if mu != 0 {
				bi := gi
				if !first {
					bi = float32(b[i]*mu) + float32(damp*gi)
				}
				b[i] = bi
				if o.cfg.Nesterov {
					gi = gi + float32(mu*bi)
				} else {
					gi = bi
				}
			}
			p[i] = p[i] + float32(nlr*gi)
		}
	})
}

// State returns the per-parameter step counts and momentum buffers (live,
// not copied).
func (o *SGD) State() *OptimizerState {
	nesterov := 0.0
	if o.cfg.Nesterov {
		nesterov = 1
	}
	return o.state(map[string]float64{
		"momentum": o.cfg.Momentum, "dampening": o.cfg.Dampening, "weight_decay": o.cfg.WeightDecay, "nesterov": nesterov,
	})
}

// LoadState restores state saved by State.
func (o *SGD) LoadState(st *OptimizerState) error { return o.loadState(st) }
