package lora

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
	"github.com/gopeft/gopeft/tensor"
)

func init() {
	common := []peft.Flag{
		{Name: "rank", Key: "r", Kind: peft.IntFlag, Default: "8", Usage: "rank r"},
		{Name: "alpha", Key: "lora_alpha", Kind: peft.FloatFlag, Default: "16", Usage: "lora_alpha (the scale is alpha/r)"},
		{Name: "dropout", Key: "lora_dropout", Kind: peft.FloatFlag, Default: "0", Usage: "lora_dropout"},
		{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Default: "q_proj,v_proj", Usage: "target modules: a comma list, a regex or all-linear"},
		{Name: "use-rslora", Key: "use_rslora", Kind: peft.BoolFlag, Usage: "rsLoRA: scale alpha/√r"},
		{Name: "init-lora-weights", Key: "init_lora_weights", Kind: peft.StringFlag, Usage: "true, gaussian, pissa, pissa_niter_K, olora (false: random B, for tests)"},
	}
	peft.Register(peft.Registration{
		Type:  PeftType,
		New:   func() peft.Method { return New(NewConfig()) },
		Flags: append(common[:len(common):len(common)], peft.Flag{Name: "use-dora", Key: "use_dora", Kind: peft.BoolFlag, Usage: "DoRA: train each row's magnitude apart from its direction"}),
	})
	// DORA is LoRA with use_dora: adapters it writes say peft_type LORA.
	peft.Register(peft.Registration{
		Type:    "DORA",
		AliasOf: PeftType,
		New: func() peft.Method {
			c := NewConfig()
			c.UseDoRA, c.requireDoRA = true, true
			return New(c)
		},
		Flags: common,
	})
}

// Method is a LoRA adapter's recipe; New attaches it.
type Method struct {
	Cfg    *Config
	layers []*layer
	doras  []*doraLayer // use_dora: DoRA's layers instead (dora.go)
	inits  []initial    // PiSSA, OLoRA: what each layer started from (init.go)
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
	if m.Cfg.UseDoRA && !m.Cfg.TargetModules.AllLinear() { // all-linear never selects an embedding
		for _, e := range pm.Sites().Embeddings {
			if m.Cfg.Selects(e.Name, false) {
				return nil, fmt.Errorf("lora: use_dora: target_modules selects %s, an embedding; DoRA is built for Linear layers only", e.Name)
			}
		}
	}
	targets, err := pm.Targets(&m.Cfg.BaseConfig)
	if err != nil {
		return nil, err
	}
	if init := m.Cfg.InitLoraWeights; init.ChangesBase() {
		// Check every module before the first base weight is rewritten.
		for _, l := range targets {
			if err := checkRewritable(l, init); err != nil {
				return nil, err
			}
			r, alpha := m.Cfg.rankAlpha(l.Name)
			if r > min(l.In(), l.Out()) || m.Cfg.Scale(r, alpha) == 0 {
				return nil, fmt.Errorf("lora: init_lora_weights %q on %s: needs r ≤ %d and lora_alpha ≠ 0 (r is %d, lora_alpha %v)",
					string(init), l.Name, min(l.In(), l.Out()), r, alpha)
			}
		}
	}
	g := tensor.NewRNG(m.Cfg.BaseConfig.Seed)
	var ps nn.Params
	for _, l := range targets {
		r, alpha := m.Cfg.rankAlpha(l.Name)
		name := peft.SavePrefix + l.Name
		if err := lowrank.Expect(pm, name+".lora_A.weight", name+".lora_B.weight", r, l.In(), l.Out()); err != nil {
			return nil, err
		}
		f := lowrank.New(name+".lora_A.weight", name+".lora_B.weight", r, l.In(), l.Out(),
			m.Cfg.Scale(r, alpha), m.Cfg.InitLoraWeights, g)
		if m.Cfg.InitLoraWeights.ChangesBase() {
			if err := m.initFromWeight(l, f, g); err != nil {
				return nil, err
			}
		}
		if m.Cfg.UseDoRA {
			ly, err := m.attachDoRA(l, a.Name, f)
			if err != nil {
				return nil, err
			}
			l.Deltas = append(l.Deltas, ly)
			m.doras = append(m.doras, ly)
			ps = append(ps, ly.params()...)
			continue
		}
		ly := &layer{OwnedBy: nn.OwnedBy{Adapter: a.Name}, linear: l, f: f, dropout: float32(m.Cfg.LoraDropout), key: l.Name + "/" + a.Name}
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

// Merge implements peft.Merger: W ← W + s·B·A (DoRA: W ← m ⊙ (W + s·B·A)
// / ‖W + s·B·A‖_row).
func (m *Method) Merge(*peft.Adapter) error {
	for i, ly := range m.doras {
		if err := ly.merge(); err != nil {
			for _, done := range m.doras[:i] {
				_ = done.unmerge()
			}
			return err
		}
	}
	return m.fold(+1)
}

// Unmerge implements peft.Merger: W ← W − s·B·A (DoRA: W ← W ⊙ ‖·‖/m − s·B·A
// with the norm the merge used).
func (m *Method) Unmerge(*peft.Adapter) error {
	for _, ly := range m.doras {
		if err := ly.unmerge(); err != nil {
			return err
		}
	}
	return m.fold(-1)
}

func (m *Method) fold(sign float32) error {
	for _, ly := range m.layers {
		if err := nn.MergeInto(ly.linear.Weight.Value, ly.f.Delta(), sign); err != nil {
			return err
		}
	}
	return nil
}
