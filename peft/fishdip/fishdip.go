// Package fishdip is Fish-Dip (Das et al. 2023, "Unified Low-Resource
// Sequence Labeling by Sample-Aware Dynamic Sparse Finetuning"): FishMask
// whose mask is recomputed every reevaluate_after_steps updates from the
// training examples the model currently gets most wrong. After
// psunlpgroup/FISH-DIP fish_dip.py: each refresh takes every example's loss
// without gradients, keeps the n = min(max(⌊0.1·examples⌋, 3), 25) of
// highest loss (the reference counts batches, not examples), sums their
// squared gradients one at a time and keeps the global top
// ⌊density · parameters⌋ entries (density 0.01, the reference's
// percentage); gradients outside the mask are dropped every update.
//
// Here the mask is the set of trained slots: one trainable vector of k
// values, each slot the change of one selected entry. When the mask moves,
// an entry that stays keeps its slot (and its AdamW moments, through
// peft.EntryMover); an entry that leaves keeps the change it was trained
// to, frozen (the reference keeps it too, in its dense weights, though its
// AdamW goes on moving it with the decaying moments: here it stops); a new
// entry takes a freed slot from zero with fresh moments. The saved sparse
// delta holds every entry any mask changed, so it may change more than
// density · parameters entries; adapter_config.json records the fraction
// as changed_density. The masks, the frozen changes and the slots are the
// method's checkpointed state, so a resumed run continues bitwise.
package fishdip

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/sparse"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// PeftType names Fish-Dip.
const PeftType = "FISH_DIP"

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "density", Key: "density", Kind: peft.FloatFlag, Usage: "fraction of the base's parameters each mask trains"},
			{Name: "num-samples", Key: "num_samples", Kind: peft.IntFlag, Usage: "most highest-loss examples a mask's Fisher information sums"},
			{Name: "reevaluate-after-steps", Key: "reevaluate_after_steps", Kind: peft.IntFlag, Usage: "updates between mask refreshes"},
			{Name: "max-fisher-mib", Key: "max_fisher_mib", Kind: peft.IntFlag, Usage: "MiB the Fisher sums may hold at once (0: no bound)"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Usage: "target modules: a comma list, a regex or all-linear"},
		},
	})
}

// Config is Fish-Dip's adapter_config.json.
type Config struct {
	sparse.Config
	NumSamples           int `json:"num_samples"`
	ReevaluateAfterSteps int `json:"reevaluate_after_steps"`
	sparse.FisherBudget
}

// NewConfig returns the reference's defaults: 1% of the parameters, at most
// 25 samples, a refresh every 100 updates.
func NewConfig() *Config {
	return &Config{Config: sparse.NewConfig(PeftType, 0.01), NumSamples: 25, ReevaluateAfterSteps: 100, FisherBudget: sparse.DefaultFisherBudget()}
}

// Validate implements peft.Config.
func (c *Config) Validate() error {
	switch {
	case c.NumSamples < 1:
		return &peft.KeyError{Method: PeftType, Key: "num_samples", Value: c.NumSamples, Allowed: "must be at least 1"}
	case c.ReevaluateAfterSteps < 1:
		return &peft.KeyError{Method: PeftType, Key: "reevaluate_after_steps", Value: c.ReevaluateAfterSteps, Allowed: "must be at least 1"}
	}
	if err := c.FisherBudget.Check(PeftType); err != nil {
		return err
	}
	return c.Config.Validate()
}

// Method is a Fish-Dip adapter. A loaded one is a plain sparse delta (its
// sparse.Method part); a trained one holds a hook per target.
type Method struct {
	*sparse.Method
	Cfg    *Config
	pm     *peft.Model
	obj    peft.Objective
	values *autograd.Var // [k]: the slots
	hooks  []*hook       // one per target
	moved  []int32       // the last refresh's slot moves, until asked
}

// New returns Fish-Dip for a config.
func New(c *Config) *Method {
	return &Method{Method: sparse.NewMethod(c, &c.Config, nil), Cfg: c}
}

// hook is one target's change: frozen entries (what past masks trained)
// and the active ones, each the value of a slot.
type hook struct {
	nn.OwnedBy
	frozenIdx []int32
	frozenVal []float32
	idx       []int32 // active entries, increasing
	slot      []int32 // their slots
	values    *autograd.Var
}

// Apply implements nn.Delta: y + x·δᵀ with δ the frozen changes plus the
// active slots' values; the backward gives each slot Σ_rows dy[i]·x[j].
func (h *hook) Apply(p *nn.Pass, l *nn.Linear, x, y *autograd.Var) *autograd.Var {
	if len(h.frozenIdx) == 0 && len(h.idx) == 0 {
		return y
	}
	in, out := l.In(), l.Out()
	rows := y.Value.Rows()
	xs, vals := x.Value.F32(), h.values.Value.Data
	res := y.Value.Clone()
	rd := res.Data
	parallel.For(rows, 1, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			xr, yr := xs[t*in:(t+1)*in], rd[t*out:(t+1)*out]
			for e, ix := range h.frozenIdx {
				yr[int(ix)/in] += xr[int(ix)%in] * h.frozenVal[e]
			}
			for e, ix := range h.idx {
				yr[int(ix)/in] += xr[int(ix)%in] * vals[h.slot[e]]
			}
		}
	})
	return p.Tape.Result(res, func(o *autograd.Var) {
		g := o.Grad.Data
		if y.RequiresGrad() {
			dy := y.GradBuf().Data
			for i, v := range g {
				dy[i] += v
			}
		}
		if x.RequiresGrad() {
			dx := x.GradBuf().Data
			parallel.For(rows, 1, func(lo, hi int) {
				for t := lo; t < hi; t++ {
					gr, xr := g[t*out:(t+1)*out], dx[t*in:(t+1)*in]
					for e, ix := range h.frozenIdx {
						xr[int(ix)%in] += gr[int(ix)/in] * h.frozenVal[e]
					}
					for e, ix := range h.idx {
						xr[int(ix)%in] += gr[int(ix)/in] * vals[h.slot[e]]
					}
				}
			})
		}
		if h.values.RequiresGrad() {
			dv := h.values.GradBuf().Data
			parallel.For(len(h.idx), 256, func(lo, hi int) {
				for e := lo; e < hi; e++ {
					i, j := int(h.idx[e])/in, int(h.idx[e])%in
					var s float32
					for t := 0; t < rows; t++ {
						s += g[t*out+i] * xs[t*in+j]
					}
					dv[h.slot[e]] += s
				}
			})
		}
	}, y, x, h.values)
}

func (m *Method) valuesName() string { return peft.SavePrefix + "fish_dip.slots" }

// Prepare implements peft.Preparer: the first mask, from the base.
func (m *Method) Prepare(pm *peft.Model, a *peft.Adapter, obj peft.Objective) error {
	if len(m.Deltas) > 0 {
		return fmt.Errorf("%s adapter %q already holds its entries (loaded from a file?): train a new one", PeftType, a.Name)
	}
	k := sparse.Budget(pm, m.Cfg.Density)
	if k == 0 {
		return &peft.KeyError{Method: PeftType, Key: "density", Value: m.Cfg.Density, Allowed: "selects no entry of this base: raise it"}
	}
	m.pm, m.obj = pm, obj
	idx, err := m.mask(k)
	if err != nil {
		return fmt.Errorf("%s: %w", PeftType, err)
	}
	n := 0
	for _, ix := range idx {
		n += len(ix)
	}
	m.values = autograd.Param(m.valuesName(), tensor.New(n), true)
	m.hooks = make([]*hook, len(m.Targets()))
	s := int32(0)
	for t, l := range m.Targets() {
		h := &hook{OwnedBy: nn.OwnedBy{Adapter: a.Name}, values: m.values, idx: idx[t]}
		for range idx[t] {
			h.slot = append(h.slot, s)
			s++
		}
		m.hooks[t] = h
		l.Deltas = append(l.Deltas, h)
	}
	a.SetParams(pm, nn.Params{{Name: m.values.Name, Var: m.values}})
	m.record()
	return nil
}

// mask selects k entries by the Fisher information of the examples of
// highest loss under the model as it is now.
func (m *Method) mask(k int) ([][]int32, error) {
	type scored struct {
		i    int
		loss float32
	}
	var ls []scored
	for i := 0; i < m.obj.Len(); i++ {
		v, err := m.obj.Loss(&nn.Pass{}, []int{i})
		if err != nil {
			return nil, err
		}
		if v != nil {
			ls = append(ls, scored{i, v.Value.Data[0]})
		}
	}
	n := min(max(len(ls)/10, 3), m.Cfg.NumSamples, len(ls))
	sort.SliceStable(ls, func(a, b int) bool { return ls[a].loss > ls[b].loss })
	ex := make([]int, n)
	for j := range ex {
		ex[j] = ls[j].i
	}
	slices.Sort(ex)
	return sparse.FisherTopK(m.pm, m.Targets(), m.obj, sparse.FisherOptions{Examples: ex, MaxBytes: m.Cfg.Bytes()}, k)
}

// AfterUpdate implements peft.StepHook: every reevaluate_after_steps
// updates, a new mask.
func (m *Method) AfterUpdate(step int) error {
	if m.values == nil || (step+1)%m.Cfg.ReevaluateAfterSteps != 0 {
		return nil
	}
	idx, err := m.mask(m.values.Value.Numel())
	if err != nil {
		return fmt.Errorf("%s: refreshing the mask after update %d: %w", PeftType, step+1, err)
	}
	m.apply(idx)
	return nil
}

// apply moves the slots to a new mask: staying entries keep their slots,
// leaving ones freeze their values, new ones take freed slots from zero.
func (m *Method) apply(idx [][]int32) {
	vals := m.values.Value.Data
	from := make([]int32, len(vals))
	for i := range from {
		from[i] = -1
	}
	var freed []int32
	kept := make([]map[int32]int32, len(m.hooks))
	for t, h := range m.hooks {
		want := map[int32]bool{}
		for _, ix := range idx[t] {
			want[ix] = true
		}
		kept[t] = map[int32]int32{}
		frozen := map[int32]float32{}
		for e, ix := range h.frozenIdx {
			frozen[ix] = h.frozenVal[e]
		}
		for e, ix := range h.idx {
			s := h.slot[e]
			if want[ix] {
				kept[t][ix] = s
				from[s] = s
				continue
			}
			frozen[ix] += vals[s]
			freed = append(freed, s)
		}
		h.frozenIdx, h.frozenVal = sortedEntries(frozen)
	}
	used := make([]bool, len(vals))
	for _, s := range from {
		if s >= 0 {
			used[s] = true
		}
	}
	for s := range used { // slots no entry held (a mask smaller than k)
		if !used[s] && !slices.Contains(freed, int32(s)) {
			freed = append(freed, int32(s))
		}
	}
	slices.Sort(freed)
	moved := false
	for t, h := range m.hooks {
		h.idx, h.slot = idx[t], make([]int32, len(idx[t]))
		for e, ix := range idx[t] {
			if s, ok := kept[t][ix]; ok {
				h.slot[e] = s
				continue
			}
			s := freed[0]
			freed = freed[1:]
			h.slot[e] = s
			vals[s] = 0
			moved = true
		}
	}
	for _, s := range freed {
		vals[s] = 0
	}
	if moved || len(freed) > 0 {
		m.moved = from
	}
	m.record()
}

func sortedEntries(f map[int32]float32) ([]int32, []float32) {
	idx := make([]int32, 0, len(f))
	for ix := range f {
		idx = append(idx, ix)
	}
	slices.Sort(idx)
	vals := make([]float32, len(idx))
	for e, ix := range idx {
		vals[e] = f[ix]
	}
	return idx, vals
}

// record keeps changed_density current for the config the adapter is
// saved with.
func (m *Method) record() {
	all := sparse.Budget(m.pm, 1)
	if all > 0 {
		m.Cfg.ChangedDensity = float64(m.Changed()) / float64(all)
	}
}

// MovedEntries implements peft.EntryMover.
func (m *Method) MovedEntries() map[string][]int32 {
	if m.moved == nil {
		return nil
	}
	mv := map[string][]int32{m.values.Name: m.moved}
	m.moved = nil
	return mv
}

// union is each target's changed entries and δ there (frozen + active).
func (m *Method) union() ([][]int32, [][]float32) {
	idx := make([][]int32, len(m.hooks))
	val := make([][]float32, len(m.hooks))
	vals := m.values.Value.Data
	for t, h := range m.hooks {
		f := map[int32]float32{}
		for e, ix := range h.frozenIdx {
			f[ix] = h.frozenVal[e]
		}
		for e, ix := range h.idx {
			f[ix] += vals[h.slot[e]]
		}
		idx[t], val[t] = sortedEntries(f)
	}
	return idx, val
}

// Changed is the number of entries the adapter changes.
func (m *Method) Changed() int {
	if m.hooks == nil {
		return m.Method.Changed()
	}
	idx, _ := m.union()
	n := 0
	for _, ix := range idx {
		n += len(ix)
	}
	return n
}

// fixed is a sparse.Method of plain deltas holding the union, for saving
// and merging a trained adapter.
func (m *Method) fixed() *sparse.Method {
	f := sparse.NewMethod(m.Cfg, &m.Cfg.Config, nil)
	idx, val := m.union()
	for t, l := range m.Targets() {
		if len(idx[t]) > 0 {
			f.Deltas = append(f.Deltas, sparse.NewDelta("", l, idx[t], val[t], "", false))
		}
	}
	return f
}

// SaveTensors implements peft.TensorFile: the union as a sparse delta.
func (m *Method) SaveTensors() (ts []*format.Tensor, err error) {
	if m.hooks == nil {
		return m.Method.SaveTensors()
	}
	return m.fixed().SaveTensors()
}

// Merge implements peft.Merger.
func (m *Method) Merge(a *peft.Adapter) error {
	if m.hooks == nil {
		return m.Method.Merge(a)
	}
	return m.fixed().Merge(a)
}

// Unmerge implements peft.Merger.
func (m *Method) Unmerge(a *peft.Adapter) error {
	if m.hooks == nil {
		return m.Method.Unmerge(a)
	}
	return m.fixed().Unmerge(a)
}

// ParamGroups implements peft.ParamGrouper: no weight decay on the slots.
func (m *Method) ParamGroups() []peft.ParamGroup {
	zero := 0.0
	if m.values == nil {
		return nil
	}
	return []peft.ParamGroup{{Name: "fish-dip slots", Params: []string{m.values.Name}, LRScale: 1, WeightDecay: &zero}}
}

type targetState struct {
	Frozen []int32 `json:"frozen"`
	Idx    []int32 `json:"idx"`
	Slot   []int32 `json:"slot"`
}

// TrainState implements peft.Stateful: each target's frozen entries (their
// values as tensors) and active entries with their slots.
func (m *Method) TrainState() peft.State {
	st := make([]targetState, len(m.hooks))
	ts := map[string]*tensor.Tensor{}
	for t, h := range m.hooks {
		st[t] = targetState{Frozen: h.frozenIdx, Idx: h.idx, Slot: h.slot}
		ts[fmt.Sprintf("frozen.%d", t)] = tensor.FromData(slices.Clone(h.frozenVal), len(h.frozenVal))
	}
	js, _ := json.Marshal(st)
	return peft.State{Tensors: ts, JSON: js}
}

// RestoreTrainState implements peft.Stateful.
func (m *Method) RestoreTrainState(s peft.State) error {
	var st []targetState
	if err := json.Unmarshal(s.JSON, &st); err != nil {
		return fmt.Errorf("%s state: %w", PeftType, err)
	}
	if len(st) != len(m.hooks) {
		return fmt.Errorf("%s state has %d targets, the adapter %d", PeftType, len(st), len(m.hooks))
	}
	k := int32(m.values.Value.Numel())
	for t, ts := range st {
		l := m.Targets()[t]
		numel := int32(l.Weight.Value.Numel())
		fv := s.Tensors[fmt.Sprintf("frozen.%d", t)]
		if fv == nil || fv.Numel() != len(ts.Frozen) || len(ts.Idx) != len(ts.Slot) {
			return fmt.Errorf("%s state of %s: the frozen values or slots do not match their entries", PeftType, l.Name)
		}
		for _, ix := range append(slices.Clone(ts.Frozen), ts.Idx...) {
			if ix < 0 || ix >= numel {
				return fmt.Errorf("%s state of %s: entry %d outside the weight's %d", PeftType, l.Name, ix, numel)
			}
		}
		for _, sl := range ts.Slot {
			if sl < 0 || sl >= k {
				return fmt.Errorf("%s state of %s: slot %d outside the %d slots", PeftType, l.Name, sl, k)
			}
		}
		h := m.hooks[t]
		h.frozenIdx, h.frozenVal, h.idx, h.slot = ts.Frozen, slices.Clone(fv.Data), ts.Idx, ts.Slot
	}
	m.record()
	return nil
}
