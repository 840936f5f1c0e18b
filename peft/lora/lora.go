package lora

import (
	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
	"github.com/gopeft/gopeft/tensor"
)

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "rank", Key: "r", Kind: peft.IntFlag, Default: "8", Usage: "rank r"},
			{Name: "alpha", Key: "lora_alpha", Kind: peft.FloatFlag, Default: "16", Usage: "lora_alpha (the scale is alpha/r)"},
			{Name: "dropout", Key: "lora_dropout", Kind: peft.FloatFlag, Default: "0", Usage: "lora_dropout"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Default: "q_proj,v_proj", Usage: "target modules: a comma list, a regex or all-linear"},
		},
	})
}

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
	nn.OwnedBy
	linear  *nn.Linear
	f       *lowrank.Factors
	dropout float32
	key     string // names the layer's dropout draws
}

// Attach implements peft.Method: an A and B per targeted Linear.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	targets, err := pm.Targets(&m.Cfg.BaseConfig)
	if err != nil {
		return nil, err
	}
	g := tensor.NewRNG(m.Cfg.BaseConfig.Seed)
	var ps nn.Params
	for _, l := range targets {
		r, alpha := m.Cfg.rankAlpha(l.Name)
		name := peft.SavePrefix + l.Name
		ly := &layer{
			OwnedBy: nn.OwnedBy{Adapter: a.Name}, linear: l,
			f: lowrank.New(name+".lora_A.weight", name+".lora_B.weight", r, l.In(), l.Out(),
				m.Cfg.Scale(r, alpha), m.Cfg.InitLoraWeights, g),
			dropout: float32(m.Cfg.LoraDropout), key: l.Name + "/" + a.Name,
		}
		l.Deltas = append(l.Deltas, ly)
		m.layers = append(m.layers, ly)
		ps = append(ps, ly.f.Params()...)
	}
	return ps, nil
}

// Apply implements nn.Delta.
func (ly *layer) Apply(p *nn.Pass, _ *nn.Linear, x, y *autograd.Var) *autograd.Var {
	return ly.f.Add(p, p.Dropout(x, ly.dropout, ly.key), y)
}

// loraGroup is the GroupKey of plain LoRA layers.
type loraGroup struct{}

// GroupKey implements nn.GroupDelta: every plain LoRA layer of one Linear,
// whatever its adapter and rank, runs in one group.
func (ly *layer) GroupKey() any { return loraGroup{} }

// ApplyGroup implements nn.GroupDelta (inference: no dropout).
func (ly *layer) ApplyGroup(p *nn.Pass, _ *nn.Linear, hooks []nn.GroupDelta, rows [][]int, x, y *autograd.Var) *autograd.Var {
	fs := make([]*lowrank.Factors, len(hooks))
	for i, h := range hooks {
		fs[i] = h.(*layer).f
	}
	return lowrank.AddGroup(p, fs, rows, x, y)
}

// Merge implements peft.Merger: W ← W + s·B·A.
func (m *Method) Merge(*peft.Adapter) error { return m.fold(+1) }

// Unmerge implements peft.Merger: W ← W − s·B·A.
func (m *Method) Unmerge(*peft.Adapter) error { return m.fold(-1) }

func (m *Method) fold(sign float32) error {
	for _, ly := range m.layers {
		if err := nn.MergeInto(ly.linear.Weight.Value, ly.f.Delta(), sign); err != nil {
			return err
		}
	}
	return nil
}
