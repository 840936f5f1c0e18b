package adalora

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "alpha", Key: "lora_alpha", Kind: peft.FloatFlag, Default: "8", Usage: "lora_alpha (the scale is alpha/init_r)"},
			{Name: "dropout", Key: "lora_dropout", Kind: peft.FloatFlag, Default: "0", Usage: "lora_dropout"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Default: "q_proj,v_proj", Usage: "target modules: a comma list, a regex or all-linear"},
			{Name: "init-r", Key: "init_r", Kind: peft.IntFlag, Usage: "initial rank of every matrix (default 12)"},
			{Name: "target-r", Key: "target_r", Kind: peft.IntFlag, Usage: "average rank the budget ends at (default 8)"},
			{Name: "tinit", Key: "tinit", Kind: peft.IntFlag, Usage: "updates before the budget starts to fall (default 0)"},
			{Name: "tfinal", Key: "tfinal", Kind: peft.IntFlag, Usage: "updates at the final budget, the ranks fixed (default 0)"},
			{Name: "delta-t", Key: "deltaT", Kind: peft.IntFlag, Usage: "updates between reallocations (default 1)"},
			{Name: "beta1", Key: "beta1", Kind: peft.FloatFlag, Usage: "EMA factor of the sensitivity (default 0.85)"},
			{Name: "beta2", Key: "beta2", Kind: peft.FloatFlag, Usage: "EMA factor of the uncertainty (default 0.85)"},
			{Name: "orth-reg-weight", Key: "orth_reg_weight", Kind: peft.FloatFlag, Usage: "weight of the orthogonality regulariser (default 0.5)"},
			{Name: "total-step", Key: "total_step", Kind: peft.IntFlag, Usage: "optimizer updates the schedule spans (required)"},
		},
	})
}

// Method is an AdaLoRA adapter's recipe; New attaches it.
type Method struct {
	Cfg    *Config
	layers []*layer
	alloc  *allocator
}

// New returns an AdaLoRA method for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// layer is AdaLoRA on one Linear: y + s·(drop(x)·(Q⊙λ)ᵀ)·Pᵀ with
// s = lora_alpha / (ranknum + 1e-5).
type layer struct {
	nn.OwnedBy
	linear  *nn.Linear
	module  string        // model.layers.0.self_attn.o_proj
	A, E, B *autograd.Var // Q [r, in], λ [r, 1], P [out, r]
	scale   float32
	dropout float32
}

// patternKey is the module's rank_pattern key.
func (ly *layer) patternKey() string { return ly.module + ".lora_E" }

// rank is the number of triplets the layer holds.
func (ly *layer) rank() int { return ly.A.Value.Shape[0] }

func (ly *layer) params() nn.Params {
	return nn.Params{{Name: ly.A.Name, Var: ly.A}, {Name: ly.B.Name, Var: ly.B}, {Name: ly.E.Name, Var: ly.E}}
}

// Attach implements peft.Method: Q, λ and P per targeted Linear, at
// init_r, or at the ranks rank_pattern keeps (a saved adapter, whose
// tensors are sliced to them). As PEFT restores it, the divisor ranknum
// stays init_r whatever rank a module keeps.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	targets, err := pm.Targets(&m.Cfg.BaseConfig)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, l := range targets {
		known[l.Name+".lora_E"] = true
	}
	for _, k := range slices.Sorted(maps.Keys(m.Cfg.RankPattern)) {
		if !known[k] {
			return nil, fmt.Errorf("adalora: rank_pattern key %q names no targeted module's lora_E (keys look like %q)", k, targets[0].Name+".lora_E")
		}
	}
	g := tensor.NewRNG(m.Cfg.Seed)
	var ps nn.Params
	for _, l := range targets {
		r := m.Cfg.InitR
		if keep, ok := m.Cfg.RankPattern[l.Name+".lora_E"]; ok {
			r = count(keep)
		}
		name := peft.SavePrefix + l.Name
		if err := lowrank.Expect(pm, name+".lora_A", name+".lora_B", r, l.In(), l.Out()); err != nil {
			return nil, err
		}
		if err := pm.ExpectTensor(name+".lora_E", r, 1); err != nil {
			return nil, err
		}
		A, E, B := tensor.New(r, l.In()), tensor.New(r, 1), tensor.New(l.Out(), r)
		if m.Cfg.InitLoraWeights == "false" {
			A.Normal(g, 0, 1)
			E.Normal(g, 0, 1)
			B.Normal(g, 0, 1)
		} else {
			A.Normal(g, 0, 0.02)
			B.Normal(g, 0, 0.02)
		}
		// PEFT: scaling = lora_alpha, or the module's rank when alpha ≤ 0;
		// ranknum = init_r (restored to it after a resize).
		scaling := float32(m.Cfg.LoraAlpha)
		if m.Cfg.LoraAlpha <= 0 {
			scaling = float32(r)
		}
		ly := &layer{
			OwnedBy: nn.OwnedBy{Adapter: a.Name}, linear: l, module: l.Name,
			A:       autograd.Param(name+".lora_A", A, true),
			E:       autograd.Param(name+".lora_E", E, true),
			B:       autograd.Param(name+".lora_B", B, true),
			scale:   scaling / (float32(m.Cfg.InitR) + 1e-5),
			dropout: float32(m.Cfg.LoraDropout),
		}
		l.Deltas = append(l.Deltas, ly)
		m.layers = append(m.layers, ly)
		ps = append(ps, ly.params()...)
	}
	m.alloc = newAllocator(m.Cfg, m.layers)
	return ps, nil
}

func count(keep []bool) int {
	n := 0
	for _, k := range keep {
		if k {
			n++
		}
	}
	return n
}

// Apply implements nn.Delta.
func (ly *layer) Apply(p *nn.Pass, l *nn.Linear, x, y *autograd.Var) *autograd.Var {
	r := ly.rank()
	if r == 0 {
		return y
	}
	x = p.Dropout(x, ly.dropout, l.Name+"/"+ly.Adapter)
	h := p.Tape.Mul(p.Tape.Linear(x, ly.A), p.Tape.Reshape(ly.E, r)) // (x·Qᵀ)⊙λ = x·(Q⊙λ)ᵀ
	return p.Tape.AddLinear(y, h, ly.B, ly.scale)
}

// delta is s·P·(Q⊙λ) as a dense [out, in] matrix.
func (ly *layer) delta() []float32 {
	r, in, out := ly.rank(), ly.linear.In(), ly.linear.Out()
	qe := make([]float32, r*in)
	for q := 0; q < r; q++ {
		e := ly.E.Value.Data[q] * ly.scale
		for j := 0; j < in; j++ {
			qe[q*in+j] = ly.A.Value.Data[q*in+j] * e
		}
	}
	d := make([]float32, out*in)
	kernels.Gemm(false, false, out, in, r, ly.B.Value.Data, r, qe, in, d, in, false)
	return d
}

// Merge implements peft.Merger: W ← W + s·P·(Q⊙λ).
func (m *Method) Merge(*peft.Adapter) error { return m.fold(+1) }

// Unmerge implements peft.Merger: W ← W − s·P·(Q⊙λ).
func (m *Method) Unmerge(*peft.Adapter) error { return m.fold(-1) }

func (m *Method) fold(sign float32) error {
	for _, ly := range m.layers {
		if err := nn.MergeInto(ly.linear.Weight.Value, ly.delta(), sign); err != nil {
			return err
		}
	}
	return nil
}

// SavedParams implements peft.Saver: each module's tensors sliced to the
// triplets rank_pattern keeps, as PEFT's resize_state_dict_by_rank_pattern
// (a module already at its kept rank, one loaded from a file, is saved as
// it is).
func (m *Method) SavedParams() (nn.Params, error) {
	var ps nn.Params
	for _, ly := range m.layers {
		keep, ok := m.Cfg.RankPattern[ly.patternKey()]
		if !ok || count(keep) == ly.rank() {
			ps = append(ps, ly.params()...)
			continue
		}
		if len(keep) != ly.rank() {
			return nil, fmt.Errorf("adalora: rank_pattern[%q] has %d entries, the module holds %d triplets", ly.patternKey(), len(keep), ly.rank())
		}
		var idx []int
		for i, k := range keep {
			if k {
				idx = append(idx, i)
			}
		}
		in, out, r := ly.linear.In(), ly.linear.Out(), ly.rank()
		A, E, B := tensor.New(len(idx), in), tensor.New(len(idx), 1), tensor.New(out, len(idx))
		for n, i := range idx {
			copy(A.Data[n*in:(n+1)*in], ly.A.Value.Data[i*in:(i+1)*in])
			E.Data[n] = ly.E.Value.Data[i]
			for o := 0; o < out; o++ {
				B.Data[o*len(idx)+n] = ly.B.Value.Data[o*r+i]
			}
		}
		ps = append(ps,
			nn.Param{Name: ly.A.Name, Var: autograd.Const(A)},
			nn.Param{Name: ly.B.Name, Var: autograd.Const(B)},
			nn.Param{Name: ly.E.Name, Var: autograd.Const(E)})
	}
	return ps, nil
}

// Loaded implements peft.Saver: the tensors were read into the modules
// Attach sized by rank_pattern, and ranknum is init_r by construction.
func (m *Method) Loaded() error { return nil }

// ExplainShape implements peft.ShapeExplainer: a module's rank comes from
// rank_pattern, or is init_r, so a file whose tensor differs from that in
// the rank's dimension alone disagrees with its own rank_pattern.
func (m *Method) ExplainShape(name string, got, want []int) string {
	if len(got) != 2 || len(want) != 2 {
		return ""
	}
	// By name, not by layer: Attach asks (through ExpectTensor) before the
	// module's layer exists.
	module, ok := strings.CutPrefix(name, peft.SavePrefix)
	if !ok {
		return ""
	}
	rankDim := 0 // lora_A [r, in], lora_E [r, 1]
	switch {
	case strings.HasSuffix(module, ".lora_B"):
		rankDim = 1 // lora_B [out, r]
	case strings.HasSuffix(module, ".lora_A"), strings.HasSuffix(module, ".lora_E"):
	default:
		return ""
	}
	module = module[:len(module)-len(".lora_A")]
	if got[1-rankDim] != want[1-rankDim] {
		return ""
	}
	key := module + ".lora_E"
	if keep, ok := m.Cfg.RankPattern[key]; ok {
		return fmt.Sprintf("the config's rank_pattern[%q] keeps %d of init_r = %d triplets", key, count(keep), m.Cfg.InitR)
	}
	return fmt.Sprintf("the config's rank_pattern has no entry %q, so the module holds init_r = %d triplets", key, m.Cfg.InitR)
}
