package ia3

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Default: "k_proj,v_proj,down_proj", Usage: "target modules: a comma list, a regex or all-linear"},
			{Name: "feedforward", Key: "feedforward_modules", Kind: peft.ModulesFlag, Default: "down_proj", Usage: "feedforward_modules: targets whose input is scaled (a subset of the targets)"},
		},
	})
}

// Method is an (IA)³ adapter.
type Method struct {
	Cfg    *Config
	layers []*layer
}

// New returns an (IA)³ method for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// layer is the vector l of one Linear: [1, in] scaling the input of a
// feed-forward module, [out, 1] scaling the output of any other.
type layer struct {
	nn.OwnedBy
	linear *nn.Linear
	l      *autograd.Var
	ff     bool
}

// Attach implements peft.Method: one ia3_l per targeted Linear.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	c := m.Cfg
	// PEFT's _prepare_adapter_config fills unset keys with LLaMA's defaults
	// and writes them into the config.
	if !c.TargetModules.IsSet() {
		c.TargetModules = peft.ModuleList("k_proj", "v_proj", "down_proj")
	}
	if !c.FeedforwardModules.IsSet() {
		c.FeedforwardModules = peft.ModuleList("down_proj")
	}
	targets, err := pm.Targets(&c.BaseConfig)
	if err != nil {
		return nil, err
	}
	g := tensor.NewRNG(c.Seed)
	var ps nn.Params
	for _, l := range targets {
		ly := &layer{OwnedBy: nn.OwnedBy{Adapter: a.Name}, linear: l, ff: c.feedforward(l.Name)}
		shape := []int{l.Out(), 1}
		if ly.ff {
			shape = []int{1, l.In()}
		}
		v := tensor.New(shape...)
		if c.InitIA3Weights {
			for i := range v.Data {
				v.Data[i] = 1
			}
		} else {
			v.Normal(g, 0, 1)
		}
		ly.l = autograd.Param(peft.SavePrefix+l.Name+".ia3_l", v, true)
		if ly.ff {
			l.Inputs = append(l.Inputs, ly)
		} else {
			l.Deltas = append(l.Deltas, ly)
		}
		m.layers = append(m.layers, ly)
		ps = append(ps, nn.Param{Name: ly.l.Name, Var: ly.l})
	}
	return ps, nil
}

// vec is l as a vector of the scaled dimension (a view: its gradient is l's).
func (ly *layer) vec(p *nn.Pass) *autograd.Var {
	return p.Tape.Reshape(ly.l, ly.l.Value.Numel())
}

// ApplyInput implements nn.InputDelta: x ⊙ l for a feed-forward module.
func (ly *layer) ApplyInput(p *nn.Pass, _ *nn.Linear, x *autograd.Var) *autograd.Var {
	return p.Tape.Mul(x, ly.vec(p))
}

// Apply implements nn.Delta: y ⊙ l for the other modules.
func (ly *layer) Apply(p *nn.Pass, _ *nn.Linear, _, y *autograd.Var) *autograd.Var {
	return p.Tape.Mul(y, ly.vec(p))
}

// Merge implements peft.Merger: W's rows (ordinary) or columns
// (feed-forward) times l.
func (m *Method) Merge(*peft.Adapter) error {
	return m.fold(func(l float32) float32 { return l })
}

// Unmerge implements peft.Merger: divide by l + 1e-8, as PEFT does.
func (m *Method) Unmerge(*peft.Adapter) error {
	return m.fold(func(l float32) float32 { return 1 / (l + 1e-8) })
}

// fold multiplies every target's weight by f(l) along l's dimension,
// through nn.MergeInto (W += W·(f(l)−1)) so any weight storage works.
func (m *Method) fold(f func(float32) float32) error {
	for _, ly := range m.layers {
		w := ly.linear.Weight.Value
		vals := w.ToF32().Data
		out, in := ly.linear.Out(), ly.linear.In()
		delta := make([]float32, len(vals))
		s := ly.l.Value.Data
		for i := 0; i < out; i++ {
			for j := 0; j < in; j++ {
				var k float32
				if ly.ff {
					k = s[j] // feed-forward: column j
				} else {
					k = s[i] // ordinary: row i
				}
				delta[i*in+j] = vals[i*in+j] * (f(k) - 1)
			}
		}
		if err := nn.MergeInto(w, delta, 1); err != nil {
			return fmt.Errorf("ia3: %s: %w", ly.linear.Name, err)
		}
		if b := ly.linear.Bias; b != nil && !ly.ff { // PEFT scales an output bias too
			bv := b.Value.ToF32().Data
			d := make([]float32, len(bv))
			for i := range bv {
				d[i] = bv[i] * (f(s[i]) - 1)
			}
			if err := nn.MergeInto(b.Value, d, 1); err != nil {
				return fmt.Errorf("ia3: %s bias: %w", ly.linear.Name, err)
			}
		}
	}
	return nil
}
