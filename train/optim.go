package train

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// Optimizer updates trainable parameters from their accumulated gradients.
type Optimizer interface {
	// Step applies one update with learning rate lr. Parameters whose
	// gradient is nil (no Backward reached them) are skipped, as PyTorch
	// skips parameters whose .grad is None.
	Step(lr float64)
	// ZeroGrad clears every parameter's gradient (keeping the buffers).
	ZeroGrad()
	// State returns the optimizer's state. Its tensors are the live buffers,
	// not copies: save them before the next Step.
	State() *OptimizerState
	// LoadState copies st into the optimizer. It fails, naming the
	// parameter or buffer, when st belongs to another kind of optimizer or
	// does not match the parameters' names and shapes.
	LoadState(st *OptimizerState) error
	// SetGroups gives the parameters of each group their own learning-rate
	// scale and weight decay.
	SetGroups(gs []peft.ParamGroup) error
	// MoveEntries rearranges a parameter's state (peft.EntryMover): entry i
	// takes entry from[i]'s buffers, or zeros for −1.
	MoveEntries(param string, from []int32) error
}

// OptimizerState is an optimizer's resumable state, keyed by parameter name.
type OptimizerState struct {
	Kind   string             // "adamw", "adamw_8bit" or "sgd"
	Hyper  map[string]float64 // hyperparameters when saved (informational; LoadState keeps the optimizer's own)
	Params map[string]*ParamState
}

// ParamState is one parameter's optimizer state: how many updates it has
// had and its buffers (AdamW: exp_avg, exp_avg_sq; SGD with momentum:
// momentum_buffer, PyTorch's names; AdamW8bit: state1, state2 in Codes
// with absmax1, absmax2 in Buffers, bitsandbytes' names). Buffers and
// Codes are empty before the first update.
type ParamState struct {
	Step    int64
	Buffers map[string]*tensor.Tensor
	// Codes holds 8-bit buffers (nil for optimizers without any).
	Codes map[string]*Codes
}

// Codes is an 8-bit optimizer buffer: one byte per element of Shape.
type Codes struct {
	Shape []int
	Data  []uint8
}

// stateful is what AdamW and SGD share: the trainable parameters, their
// segmentation for parallel loops, per-parameter step counts and named
// buffers allocated on the first update.
type stateful struct {
	kind     string
	params   nn.Params
	segs     []segment
	steps    []int64
	bufNames []string
	bufs     [][]*tensor.Tensor // bufs[param][buffer]; nil until the first update
	active   []bool             // scratch: which parameters this Step updates
	lrScale  []float64          // per parameter: its learning rate over the schedule's
	decayOf  []float64          // per parameter: its weight decay, NaN for the optimizer's
	// own, when set, marks the parameters whose state the optimizer keeps
	// itself (AdamW8bit's 8-bit ones): begin allocates no buffers for them,
	// and loadState hands their entries to owner.
	own   []bool
	owner stateOwner
}

// stateOwner checks and loads the saved state of the parameters an
// optimizer keeps itself (stateful.own).
type stateOwner interface {
	checkOwn(i int, ps *ParamState) error // validates, changing nothing
	loadOwn(i int, ps *ParamState)        // copies ps in (after every check passed)
}

func (o *stateful) owns(i int) bool { return o.own != nil && o.own[i] }

func newStateful(kind string, ps nn.Params, bufNames ...string) stateful {
	ps = Trainable(ps)
	sizes := make([]int, len(ps))
	for i, p := range ps {
		sizes[i] = p.Var.Value.Numel()
	}
	return stateful{
		kind:     kind,
		params:   ps,
		segs:     segments(sizes),
		steps:    make([]int64, len(ps)),
		bufNames: bufNames,
		bufs:     make([][]*tensor.Tensor, len(ps)),
		active:   make([]bool, len(ps)),
		lrScale:  filled(len(ps), 1),
		decayOf:  filled(len(ps), math.NaN()),
	}
}

func filled(n int, v float64) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// SetGroups implements Optimizer. Every name must be a parameter the
// optimizer trains, in one group at most.
func (o *stateful) SetGroups(gs []peft.ParamGroup) error {
	index := map[string]int{}
	for i, p := range o.params {
		index[p.Name] = i
	}
	lr, wd := filled(len(o.params), 1), filled(len(o.params), math.NaN())
	in := map[string]string{}
	for _, g := range gs {
		if !(g.LRScale >= 0) || math.IsInf(g.LRScale, 0) || (g.WeightDecay != nil && !(*g.WeightDecay >= 0)) {
			return fmt.Errorf("train: parameter group %q: learning-rate scale %v and weight decay must be finite and ≥ 0", g.Name, g.LRScale)
		}
		for _, name := range g.Params {
			i, ok := index[name]
			if !ok {
				return fmt.Errorf("train: parameter group %q names %q, which is not trained", g.Name, name)
			}
			if other, dup := in[name]; dup {
				return fmt.Errorf("train: parameter %q is in groups %q and %q", name, other, g.Name)
			}
			in[name] = g.Name
			lr[i] = g.LRScale
			if g.WeightDecay != nil {
				wd[i] = *g.WeightDecay
			}
		}
	}
	o.lrScale, o.decayOf = lr, wd
	return nil
}

// MoveEntries implements Optimizer.
func (o *stateful) MoveEntries(param string, from []int32) error {
	for i, p := range o.params {
		if p.Name != param {
			continue
		}
		if len(from) != p.Var.Value.Numel() {
			return fmt.Errorf("train: moving %d entries of %q, which has %d", len(from), param, p.Var.Value.Numel())
		}
		for _, b := range o.bufs[i] {
			old := slices.Clone(b.Data)
			for e, f := range from {
				switch {
				case f < 0:
					b.Data[e] = 0
				case int(f) < len(old):
					b.Data[e] = old[f]
				default:
					return fmt.Errorf("train: entry %d of %q moves from %d, outside its %d", e, param, f, len(old))
				}
			}
		}
		return nil
	}
	return fmt.Errorf("train: moving the entries of %q, which is not trained", param)
}

// decay is parameter i's weight decay: its group's, or def.
func (o *stateful) decay(i int, def float64) float64 {
	if math.IsNaN(o.decayOf[i]) {
		return def
	}
	return o.decayOf[i]
}

// Params returns the parameters the optimizer updates.
func (o *stateful) Params() nn.Params { return o.params }

// ZeroGrad clears every parameter's gradient.
func (o *stateful) ZeroGrad() {
	for _, p := range o.params {
		p.Var.ZeroGrad()
	}
}

// begin marks the parameters that have a gradient, advances their step
// counts and allocates their buffers on first use.
func (o *stateful) begin() {
	for i, p := range o.params {
		o.active[i] = p.Var.Grad != nil
		if !o.active[i] {
			continue
		}
		o.steps[i]++
		if o.bufs[i] == nil && len(o.bufNames) > 0 && !o.owns(i) {
			o.bufs[i] = make([]*tensor.Tensor, len(o.bufNames))
			for b := range o.bufNames {
				o.bufs[i][b] = tensor.New(p.Var.Value.Shape...)
			}
		}
	}
}

func (o *stateful) state(hyper map[string]float64) *OptimizerState {
	st := &OptimizerState{Kind: o.kind, Hyper: hyper, Params: make(map[string]*ParamState, len(o.params))}
	for i, p := range o.params {
		ps := &ParamState{Step: o.steps[i], Buffers: map[string]*tensor.Tensor{}}
		for b, t := range o.bufs[i] {
			ps.Buffers[o.bufNames[b]] = t
		}
		st.Params[p.Name] = ps
	}
	return st
}

func (o *stateful) loadState(st *OptimizerState) error {
	if st == nil {
		return fmt.Errorf("train: load %s optimizer state: no state", o.kind)
	}
	if st.Kind != o.kind {
		return kindError(st, o.kind, o.params)
	}
	// Validate everything before changing anything.
	known := map[string]bool{}
	for i, p := range o.params {
		known[p.Name] = true
		ps, ok := st.Params[p.Name]
		if !ok || ps == nil {
			return fmt.Errorf("train: %s optimizer state has no entry for parameter %q", o.kind, p.Name)
		}
		if ps.Step < 0 {
			return fmt.Errorf("train: %s optimizer state for %q: negative step %d", o.kind, p.Name, ps.Step)
		}
		if ps.Step > 0 && len(ps.Buffers) == 0 && len(o.bufNames) > 0 {
			return fmt.Errorf("train: %s optimizer state for %q: %d steps taken but no buffers", o.kind, p.Name, ps.Step)
		}
		if o.owns(i) {
			if err := o.owner.checkOwn(i, ps); err != nil {
				return err
			}
			continue
		}
		if len(ps.Codes) > 0 {
			return fmt.Errorf("train: %s optimizer state for %q: unknown 8-bit buffers %v (want float32 %v)", o.kind, p.Name, slices.Sorted(maps.Keys(ps.Codes)), o.bufNames)
		}
		for _, name := range slices.Sorted(maps.Keys(ps.Buffers)) {
			t := ps.Buffers[name]
			if !slices.Contains(o.bufNames, name) {
				return fmt.Errorf("train: %s optimizer state for %q: unknown buffer %q (want %v)", o.kind, p.Name, name, o.bufNames)
			}
			if t == nil || t.DType() != tensor.F32 || !tensor.SameShape(t.Shape, p.Var.Value.Shape) || len(t.Data) != p.Var.Value.Numel() {
				return fmt.Errorf("train: %s optimizer state %q.%s: want float32 %v, got %s", o.kind, p.Name, name, p.Var.Value.Shape, describe(t))
			}
		}
		if len(ps.Buffers) > 0 {
			for _, name := range o.bufNames {
				if ps.Buffers[name] == nil {
					return fmt.Errorf("train: %s optimizer state for %q: missing buffer %q", o.kind, p.Name, name)
				}
			}
		}
	}
	var extra []string
	for name := range st.Params {
		if !known[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("train: %s optimizer state has entries for parameters the optimizer does not train: %q", o.kind, extra)
	}
	for i, p := range o.params {
		ps := st.Params[p.Name]
		o.steps[i] = ps.Step
		if o.owns(i) {
			o.bufs[i] = nil
			o.owner.loadOwn(i, ps)
			continue
		}
		if len(ps.Buffers) == 0 {
			o.bufs[i] = nil
			continue
		}
		o.bufs[i] = make([]*tensor.Tensor, len(o.bufNames))
		for b, name := range o.bufNames {
			o.bufs[i][b] = ps.Buffers[name].Clone()
		}
	}
	return nil
}

// kindError refuses state saved by another kind of optimizer, naming the
// first parameter (in training order) whose saved buffers show it.
func kindError(st *OptimizerState, kind string, params nn.Params) error {
	for _, p := range params {
		if ps := st.Params[p.Name]; ps != nil && len(ps.Buffers)+len(ps.Codes) > 0 {
			names := append(slices.Sorted(maps.Keys(ps.Buffers)), slices.Sorted(maps.Keys(ps.Codes))...)
			return fmt.Errorf("train: cannot load %q optimizer state into a %s optimizer: parameter %q has %s's buffers %v (train with the optimizer that saved it)",
				st.Kind, kind, p.Name, st.Kind, names)
		}
	}
	return fmt.Errorf("train: cannot load %q optimizer state into a %s optimizer", st.Kind, kind)
}

// describe names a tensor's type and shape for error messages.
func describe(t *tensor.Tensor) string {
	if t == nil {
		return "nothing"
	}
	return fmt.Sprintf("%s %v", t.DType(), t.Shape)
}
