package lora

import (
	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

func init() { peft.Register(PeftType, func() peft.Method { return &Method{Cfg: NewConfig()} }) }

// Method is a LoRA adapter's recipe; New attaches it.
type Method struct {
	Cfg    *Config
	layers []*layer
}

// New returns a LoRA method for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// layer is LoRA on one Linear: the delta s·B·A·dropout(x).
type layer struct {
	adapter *peft.Adapter
	model   *peft.Model
	linear  *nn.Linear
	index   uint64
	A, B    *autograd.Var
	scale   float32
	dropout float32
}

// Attach implements peft.Method: an A and B per targeted Linear.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	targets, err := pm.Targets(&m.Cfg.BaseConfig)
	if err != nil {
		return nil, err
	}
	g := tensor.NewRNG(m.Cfg.BaseConfig.Seed)
	var ps nn.Params
	for i, l := range targets {
		r, alpha := m.Cfg.rankAlpha(l.Name)
		A := tensor.New(r, l.In())
		B := tensor.New(l.Out(), r)
		switch m.Cfg.InitLoraWeights {
		case InitGaussian:
			A.Normal(g, 0, float32(1/float64(r)))
		case InitRandom:
			A.KaimingUniform(g)
			B.KaimingUniform(g)
		default:
			A.KaimingUniform(g)
		}
		name := peft.SavePrefix + l.Name
		ly := &layer{
			adapter: a, model: pm, linear: l, index: uint64(i),
			A:       autograd.Param(name+".lora_A.weight", A, true),
			B:       autograd.Param(name+".lora_B.weight", B, true),
			scale:   float32(m.Cfg.Scale(r, alpha)),
			dropout: float32(m.Cfg.LoraDropout),
		}
		l.Deltas = append(l.Deltas, ly)
		m.layers = append(m.layers, ly)
		ps = append(ps, nn.Param{Name: ly.A.Name, Var: ly.A}, nn.Param{Name: ly.B.Name, Var: ly.B})
	}
	return ps, nil
}

// Apply implements nn.Delta.
func (ly *layer) Apply(tp *autograd.Tape, _ *nn.Linear, x, y *autograd.Var) *autograd.Var {
	if !ly.adapter.Active() {
		return y
	}
	if ly.dropout > 0 {
		x = tp.Dropout(x, ly.dropout, ly.model.Step*0x9E3779B97F4A7C15+ly.index)
	}
	return tp.AddLinear(y, tp.Linear(x, ly.A), ly.B, ly.scale)
}

// delta returns s·B·A as a [out, in] matrix.
func (ly *layer) delta() []float32 {
	r := ly.A.Value.Shape[0]
	out, in := ly.linear.Out(), ly.linear.In()
	sb := make([]float32, len(ly.B.Value.Data))
	for i, v := range ly.B.Value.Data {
		sb[i] = v * ly.scale
	}
	d := make([]float32, out*in)
	kernels.Gemm(false, false, out, in, r, sb, r, ly.A.Value.Data, in, d, in, false)
	return d
}

// Merge implements peft.Merger: W ← W + s·B·A. A bf16 base is merged in
// float32 and rounded back.
func (m *Method) Merge(a *peft.Adapter) error { return m.fold(+1) }

// Unmerge implements peft.Merger: W ← W − s·B·A.
func (m *Method) Unmerge(a *peft.Adapter) error { return m.fold(-1) }

func (m *Method) fold(sign float32) error {
	for _, ly := range m.layers {
		w := ly.linear.Weight.Value
		d := ly.delta()
		if w.DType() == tensor.BF16 {
			for i, h := range w.Half {
				w.Half[i] = kernels.ToBF16(kernels.FromBF16(h) + sign*d[i])
			}
			continue
		}
		for i := range w.Data {
			w.Data[i] += sign * d[i]
		}
	}
	return nil
}

// Detach implements peft.Detacher.
func (m *Method) Detach(_ *peft.Model, _ *peft.Adapter) {
	for _, ly := range m.layers {
		ds := ly.linear.Deltas[:0]
		for _, d := range ly.linear.Deltas {
			if d != nn.Delta(ly) {
				ds = append(ds, d)
			}
		}
		ly.linear.Deltas = ds
	}
	m.layers = nil
}
