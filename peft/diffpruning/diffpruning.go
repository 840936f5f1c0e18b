// Package diffpruning is diff pruning (Guo et al. 2021, "Parameter-
// Efficient Transfer Learning with Diff Pruning"): θ = θ₀ + z⊙w, where w
// (initialised 0) and the gates' log-alphas α (initialised alpha_init)
// have each target weight's shape, and z is a hard-concrete gate:
//
//	u ~ U(0,1) clamped to [1e-4, 1−1e-4]
//	s = σ(log u − log(1−u) + α),  s̄ = s(r−l)+l,  z = clip(s̄, 0, 1),  (l, r) = (−1.5, 1.5)
//
// The loss adds the expected L0 norm λ·Σ σ(α − log(−l/r)). w and α train in
// two parameter groups (α at alpha_lr_scale times the run's rate, neither
// decayed). Three stages run from one command: l0_steps updates of the
// relaxation; then magnitude pruning, which keeps the ⌊density ·
// parameters⌋ entries of largest |δ| (δ = z̄⊙w with the deterministic gate
// z̄ = clip(σ(α)(r−l)+l, 0, 1), as the reference's θ−θ₀) and zeroes the rest;
// then fixed-mask training of δ on those entries. The result is saved as a
// sparse delta (package sparse). The gradients are the reference's manual
// ones: ∂w = g·z, ∂α = g·w·1[0<s̄<1]·(r−l)·s(1−s).
//
// The gates of a training pass are drawn from the pass's seed
// (nn.Pass.SeedFor, one stream per weight), so a resumed run draws the
// same ones; the stage and the mask are checkpointed (peft.Stateful).
package diffpruning

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/sparse"
	"github.com/gopeft/gopeft/tensor"
)

// PeftType names diff pruning.
const PeftType = "DIFF_PRUNING"

// The hard-concrete stretch interval.
const (
	limitL = -1.5
	limitR = 1.5
)

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "density", Key: "density", Kind: peft.FloatFlag, Usage: "fraction of the base's parameters that may change"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Usage: "target modules: a comma list, a regex or all-linear"},
			{Name: "l0-steps", Key: "l0_steps", Kind: peft.IntFlag, Usage: "updates of the L0 relaxation before magnitude pruning (then fixed-mask training)"},
			{Name: "l0-lambda", Key: "l0_lambda", Kind: peft.FloatFlag, Usage: "weight λ of the expected-L0 penalty"},
			{Name: "alpha-lr-scale", Key: "alpha_lr_scale", Kind: peft.FloatFlag, Usage: "the gates' log-alphas train at this times the run's learning rate"},
		},
	})
}

// Config is diff pruning's adapter_config.json.
type Config struct {
	sparse.Config
	L0Steps      int     `json:"l0_steps"`
	L0Lambda     float64 `json:"l0_lambda"`
	AlphaInit    float64 `json:"alpha_init"`
	AlphaLRScale float64 `json:"alpha_lr_scale"`
}

// NewConfig returns the reference's defaults: density 0.005, λ 1.25e-7,
// α₀ 5; 100 relaxation updates; α at 30× the rate (the reference's 0.1
// against a run at 3e-3).
func NewConfig() *Config {
	return &Config{Config: sparse.NewConfig(PeftType, 0.005), L0Steps: 100, L0Lambda: 1.25e-7, AlphaInit: 5, AlphaLRScale: 30}
}

// Validate checks the keys.
func (c *Config) Validate() error {
	if err := c.Config.Validate(); err != nil {
		return err
	}
	switch {
	case c.L0Steps < 0:
		return &peft.KeyError{Method: PeftType, Key: "l0_steps", Value: c.L0Steps, Allowed: "must be ≥ 0"}
	case !(c.L0Lambda >= 0) || math.IsInf(c.L0Lambda, 0):
		return &peft.KeyError{Method: PeftType, Key: "l0_lambda", Value: c.L0Lambda, Allowed: "must be a finite number ≥ 0"}
	case !(c.AlphaLRScale > 0) || math.IsInf(c.AlphaLRScale, 0):
		return &peft.KeyError{Method: PeftType, Key: "alpha_lr_scale", Value: c.AlphaLRScale, Allowed: "must be a finite number > 0"}
	case math.IsNaN(c.AlphaInit) || math.IsInf(c.AlphaInit, 0):
		return &peft.KeyError{Method: PeftType, Key: "alpha_init", Value: c.AlphaInit, Allowed: "must be finite"}
	}
	return nil
}

// Method is a diff pruning adapter: trained, the dense w and α of each
// target; loaded from a file, the sparse delta.
type Method struct {
	Cfg      *Config
	pm       *peft.Model
	targets  []*nn.Linear
	W, Alpha []*autograd.Var
	gates    []*gate
	// Mask holds, once pruned, the kept entries of each target (1 or 0).
	Mask  [][]float32
	moved bool
	sp    *sparse.Method // the loaded delta
}

// New returns diff pruning for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

func wName(l *nn.Linear) string     { return peft.SavePrefix + l.Name + ".diff_w" }
func alphaName(l *nn.Linear) string { return peft.SavePrefix + l.Name + ".diff_log_alpha" }

// Attach implements peft.Method: w and α for each target weight, and the
// gate hook.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	m.sp = sparse.NewMethod(m.Cfg, &m.Cfg.Config, nil)
	if _, err := m.sp.Attach(pm, a); err != nil {
		return nil, err
	}
	m.pm, m.targets = pm, m.sp.Targets()
	var ps nn.Params
	for t, l := range m.targets {
		w := autograd.Param(wName(l), tensor.New(l.Out(), l.In()), true)
		al := tensor.New(l.Out(), l.In())
		for i := range al.Data {
			al.Data[i] = float32(m.Cfg.AlphaInit)
		}
		alpha := autograd.Param(alphaName(l), al, true)
		m.W, m.Alpha = append(m.W, w), append(m.Alpha, alpha)
		g := &gate{OwnedBy: nn.OwnedBy{Adapter: a.Name}, m: m, t: t}
		m.gates = append(m.gates, g)
		l.Deltas = append(l.Deltas, g)
		ps = append(ps, nn.Param{Name: w.Name, Var: w}, nn.Param{Name: alpha.Name, Var: alpha})
	}
	return ps, nil
}

// gate is the hook on one target: y + x·(z⊙w)ᵀ.
type gate struct {
	nn.OwnedBy
	m *Method
	t int
}

// Apply implements nn.Delta.
func (g *gate) Apply(p *nn.Pass, l *nn.Linear, x, y *autograd.Var) *autograd.Var {
	m := g.m
	var d *autograd.Var
	switch {
	case m.Mask != nil:
		d = Masked(p.Tape, m.W[g.t], m.Mask[g.t])
	case p.Training:
		d = Gated(p.Tape, m.W[g.t], m.Alpha[g.t], Uniform(p.SeedFor("diff_pruning."+l.Name), len(m.W[g.t].Value.Data)))
	default:
		d = Gated(p.Tape, m.W[g.t], m.Alpha[g.t], nil)
	}
	return p.Tape.AddLinear(y, x, d, 1)
}

// Uniform draws n gate noises u ~ U(0,1), clamped to [1e-4, 1−1e-4].
func Uniform(seed uint64, n int) []float32 {
	g := tensor.NewRNG(seed)
	u := make([]float32, n)
	for i := range u {
		u[i] = float32(min(max(g.Float64(), 1e-4), 1-1e-4))
	}
	return u
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// Gated is z⊙w for gate noise u (nil: the deterministic gate
// clip(σ(α)(r−l)+l, 0, 1)), with the reference's gradients ∂w = g·z and
// ∂α = g·w·1[0<s̄<1]·(r−l)·s(1−s).
func Gated(tp *autograd.Tape, w, alpha *autograd.Var, u []float32) *autograd.Var {
	n := len(w.Value.Data)
	out := tensor.New(w.Value.Shape...)
	z := make([]float32, n)
	ds := make([]float32, n) // ∂z/∂α
	ws, as := w.Value.Data, alpha.Value.Data
	for i := 0; i < n; i++ {
		pre := float64(as[i])
		if u != nil {
			pre += math.Log(float64(u[i])) - math.Log(1-float64(u[i]))
		}
		s := sigmoid(pre)
		sb := s*(limitR-limitL) + limitL
		switch {
		case sb <= 0:
			z[i] = 0
		case sb >= 1:
			z[i] = 1
		default:
			z[i] = float32(sb)
			ds[i] = float32((limitR - limitL) * s * (1 - s))
		}
		out.Data[i] = z[i] * ws[i]
	}
	return tp.Result(out, func(o *autograd.Var) {
		g := o.Grad.Data
		if w.RequiresGrad() {
			dw := w.GradBuf().Data
			for i, v := range g {
				dw[i] += v * z[i]
			}
		}
		if alpha.RequiresGrad() {
			da := alpha.GradBuf().Data
			for i, v := range g {
				da[i] += v * ws[i] * ds[i]
			}
		}
	}, w, alpha)
}

// Masked is mask⊙w, the fixed-mask stage's delta.
func Masked(tp *autograd.Tape, w *autograd.Var, mask []float32) *autograd.Var {
	out := tensor.New(w.Value.Shape...)
	for i, v := range w.Value.Data {
		out.Data[i] = v * mask[i]
	}
	return tp.Result(out, func(o *autograd.Var) {
		if w.RequiresGrad() {
			dw := w.GradBuf().Data
			for i, v := range o.Grad.Data {
				dw[i] += v * mask[i]
			}
		}
	}, w)
}

// L0 is λ·Σ σ(α − log(−l/r)) over the tensors, the expected number of
// nonzero gates times λ.
func L0(tp *autograd.Tape, lambda float64, alphas []*autograd.Var) *autograd.Var {
	shift := math.Log(-limitL / limitR)
	var sum float64
	for _, a := range alphas {
		for _, v := range a.Value.Data {
			sum += sigmoid(float64(v) - shift)
		}
	}
	out := tensor.FromData([]float32{float32(lambda * sum)}, 1)
	return tp.Result(out, func(o *autograd.Var) {
		g := float64(o.Grad.Data[0]) * lambda
		for _, a := range alphas {
			if !a.RequiresGrad() {
				continue
			}
			da := a.GradBuf().Data
			for i, v := range a.Value.Data {
				s := sigmoid(float64(v) - shift)
				da[i] += float32(g * s * (1 - s))
			}
		}
	}, alphas...)
}

// ExtraLoss implements peft.LossTerm: the L0 penalty while the gates train,
// zero after pruning.
func (m *Method) ExtraLoss(p *nn.Pass) (*autograd.Var, error) {
	if m.Mask != nil || m.sp.Changed() > 0 {
		return autograd.Const(tensor.FromData([]float32{0}, 1)), nil
	}
	return L0(p.Tape, m.Cfg.L0Lambda, m.Alpha), nil
}

// ParamGroups implements peft.ParamGrouper: w at the run's rate, α at
// alpha_lr_scale times it; neither decays (decay would pull δ and the
// gates toward 0, not θ).
func (m *Method) ParamGroups() []peft.ParamGroup {
	zero := 0.0
	gw := peft.ParamGroup{Name: "diff w", LRScale: 1, WeightDecay: &zero}
	ga := peft.ParamGroup{Name: "diff log alpha", LRScale: m.Cfg.AlphaLRScale, WeightDecay: &zero}
	for t := range m.W {
		gw.Params = append(gw.Params, m.W[t].Name)
		ga.Params = append(ga.Params, m.Alpha[t].Name)
	}
	return []peft.ParamGroup{gw, ga}
}

// AfterUpdate implements peft.StepHook: after update l0_steps−1 the
// magnitude pruning stage runs.
func (m *Method) AfterUpdate(step int) error {
	if m.Mask == nil && step+1 >= m.Cfg.L0Steps {
		m.Prune()
		m.moved = true
	}
	return nil
}

// MovedEntries implements peft.EntryMover: at pruning, w and α start the
// fixed-mask stage with fresh optimizer state, so an entry with no
// gradient (pruned, or α) does not move on its old momentum.
func (m *Method) MovedEntries() map[string][]int32 {
	if !m.moved {
		return nil
	}
	m.moved = false
	out := map[string][]int32{}
	for t := range m.W {
		fresh := make([]int32, len(m.W[t].Value.Data))
		for i := range fresh {
			fresh[i] = -1
		}
		out[m.W[t].Name], out[m.Alpha[t].Name] = fresh, fresh
	}
	return out
}

// deltas are δ = z̄⊙w, or mask⊙w once pruned.
func (m *Method) deltas() [][]float32 {
	out := make([][]float32, len(m.W))
	for t := range m.W {
		if m.Mask != nil {
			out[t] = Masked(nil, m.W[t], m.Mask[t]).Value.Data
		} else {
			out[t] = Gated(nil, m.W[t], m.Alpha[t], nil).Value.Data
		}
	}
	return out
}

// keep selects the ⌊density·parameters⌋ entries of largest |δ| (nonzero).
func (m *Method) keep(ds [][]float32) [][]int32 {
	scores := make([][]float32, len(ds))
	for t, d := range ds {
		s := make([]float32, len(d))
		for i, v := range d {
			s[i] = float32(math.Abs(float64(v)))
		}
		scores[t] = s
	}
	idx := sparse.TopK(scores, sparse.Budget(m.pm, m.Cfg.Density))
	for t, ix := range idx { // a zero δ changes nothing: not kept
		kept := ix[:0]
		for _, i := range ix {
			if ds[t][i] != 0 {
				kept = append(kept, i)
			}
		}
		idx[t] = kept
	}
	return idx
}

// Prune is the magnitude-pruning stage: w becomes δ on the kept entries
// and 0 elsewhere, and the mask is fixed.
func (m *Method) Prune() {
	ds := m.deltas()
	idx := m.keep(ds)
	m.Mask = make([][]float32, len(m.W))
	for t, w := range m.W {
		mask := make([]float32, len(ds[t]))
		for _, i := range idx[t] {
			mask[i] = 1
		}
		for i := range w.Value.Data {
			w.Value.Data[i] = ds[t][i] * mask[i]
		}
		m.Mask[t] = mask
	}
}

type savedState struct {
	Pruned bool `json:"pruned"`
}

// TrainState implements peft.Stateful: the stage and the mask.
func (m *Method) TrainState() peft.State {
	js, _ := json.Marshal(savedState{Pruned: m.Mask != nil})
	st := peft.State{JSON: js, Tensors: map[string]*tensor.Tensor{}}
	for t, mask := range m.Mask {
		st.Tensors[m.targets[t].Name] = tensor.FromData(mask, len(mask))
	}
	return st
}

// RestoreTrainState implements peft.Stateful.
func (m *Method) RestoreTrainState(s peft.State) error {
	var st savedState
	if err := json.Unmarshal(s.JSON, &st); err != nil {
		return fmt.Errorf("diff pruning state: %w", err)
	}
	if !st.Pruned {
		m.Mask = nil
		return nil
	}
	m.Mask = make([][]float32, len(m.targets))
	for t, l := range m.targets {
		mt := s.Tensors[l.Name]
		if mt == nil || len(mt.Data) != l.Out()*l.In() {
			return fmt.Errorf("diff pruning state: no mask of %d entries for %s", l.Out()*l.In(), l.Name)
		}
		m.Mask[t] = append([]float32(nil), mt.Data...)
	}
	return nil
}

// Merge implements peft.Merger: θ ← θ + δ.
func (m *Method) Merge(a *peft.Adapter) error { return m.fold(a, +1) }

// Unmerge implements peft.Merger.
func (m *Method) Unmerge(a *peft.Adapter) error { return m.fold(a, -1) }

func (m *Method) fold(a *peft.Adapter, sign float32) error {
	if m.sp.Changed() > 0 {
		if sign > 0 {
			return m.sp.Merge(a)
		}
		return m.sp.Unmerge(a)
	}
	for t, d := range m.deltas() {
		if err := nn.MergeInto(m.targets[t].Weight.Value, d, sign); err != nil {
			return fmt.Errorf("%s: %w", m.targets[t].Name, err)
		}
	}
	return nil
}

// SaveTensors implements peft.TensorFile: the sparse delta of the kept
// entries (pruned now, on a copy, when the run ended before pruning).
func (m *Method) SaveTensors() ([]*format.Tensor, error) {
	if m.sp.Changed() > 0 {
		return m.sp.SaveTensors()
	}
	ds := m.deltas()
	idx := m.keep(ds)
	var ts []*format.Tensor
	for t, ix := range idx {
		if len(ix) == 0 {
			continue
		}
		vals := make([]float32, len(ix))
		for e, i := range ix {
			vals[e] = ds[t][i]
		}
		ts = append(ts, sparse.DeltaTensors(m.targets[t], ix, vals)...)
	}
	return ts, nil
}

// LoadTensors implements peft.TensorFile: the delta applies as a fixed
// sparse delta; the dense w, α and gates are dropped.
func (m *Method) LoadTensors(pm *peft.Model, a *peft.Adapter, stored map[string]*format.Tensor, path string) error {
	for t, l := range m.targets {
		kept := l.Deltas[:0]
		for _, d := range l.Deltas {
			if d != nn.Delta(m.gates[t]) {
				kept = append(kept, d)
			}
		}
		l.Deltas = kept
	}
	m.W, m.Alpha, m.gates = nil, nil, nil
	return m.sp.LoadTensors(pm, a, stored, path)
}
