package nn

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
)

// Hook is what every hook at a site has: the adapter it belongs to. The
// pass decides, sequence by sequence, whether it runs (see Pass.Uses); a
// hook owned by "" always runs. Embed OwnedBy to implement it.
type Hook interface {
	Owner() string
}

// OwnedBy implements Hook for the adapter it names.
type OwnedBy struct{ Adapter string }

// Owner implements Hook.
func (o OwnedBy) Owner() string { return o.Adapter }

// Delta changes what a Linear computes, on top of its frozen base. LoRA adds
// s·B·A·x, IA³ scales, SSF scales and shifts, BitFit adds a bias. Apply
// receives the layer, its input x and the output y computed so far (the
// base's, then each earlier delta's), and returns the new output: two
// deltas on one layer compose as PEFT composes two adapters.
type Delta interface {
	Hook
	Apply(p *Pass, l *Linear, x, y *autograd.Var) *autograd.Var
}

// GroupDelta is a Delta whose hooks of different adapters at one Linear can
// run as one grouped operation over a mixed-adapter batch: each adapter's
// product on its own rows, written into one shared output, instead of a
// gather, a product and a scatter (a full copy of the output) per adapter.
// It is the SGMV idea of Punica and S-LoRA. Linear.Forward groups
// consecutive hooks with equal GroupKey in inference passes (no tape) whose
// sequences name different adapters; ApplyGroup must give every row, bit for
// bit, what Route and Apply give it.
type GroupDelta interface {
	Delta
	// GroupKey says which hooks can share an ApplyGroup (equal keys).
	GroupKey() any
	// ApplyGroup returns y with hooks[i] applied to rows[i] (indices of
	// rows of x and y; a row in at most one list, except for hooks of the
	// same owner, applied in order).
	ApplyGroup(p *Pass, l *Linear, hooks []GroupDelta, rows [][]int, x, y *autograd.Var) *autograd.Var
}

// GroupDeltas turns Linear.Forward's grouping of GroupDelta hooks on (the
// default) or off: benchmarks and tests compare the two.
var GroupDeltas = true

// InputDelta changes a Linear's input before the base weight sees it (IA³
// on feed-forward layers scales the input). The output deltas still
// receive the layer's original input.
type InputDelta interface {
	Hook
	ApplyInput(p *Pass, l *Linear, x *autograd.Var) *autograd.Var
}

// Replacer is a Delta that stands for the whole layer (modules_to_save's
// trained copy): when every sequence of a pass uses it, the layer
// multiplies by Replacement() instead of its own weight, and Apply is not
// called; when only some do, Apply computes those rows.
type Replacer interface {
	Delta
	Replacement() *autograd.Var
}

// Exclusive is a hook that must be its adapter's only hook at its site: a
// Replacer computes the layer from its own weight, so another hook of the
// same adapter beside it would be lost or applied to the wrong weight.
// Exclusive names it in the error that refuses such a pair.
type Exclusive interface {
	Hook
	Exclusive() string
}

// Linear is y = x·Wᵀ (+ b) for W [out, in], with input deltas before the
// product and output deltas after it: the hook site of every projection.
// Name is the module's full Hugging Face name
// (model.layers.0.self_attn.q_proj).
type Linear struct {
	Name   string
	Weight *autograd.Var
	Bias   *autograd.Var // nil: LLaMA has no biases
	Inputs []InputDelta
	Deltas []Delta
}

// NewLinear wraps a weight (and optional bias) as a named layer.
func NewLinear(name string, w, b *autograd.Var) *Linear {
	return &Linear{Name: name, Weight: w, Bias: b}
}

// In is the input width, Out the output width.
func (l *Linear) In() int  { return l.Weight.Value.Shape[1] }
func (l *Linear) Out() int { return l.Weight.Value.Shape[0] }

// Forward computes the layer on x [..., in].
func (l *Linear) Forward(p *Pass, x *autograd.Var) *autograd.Var {
	in := x
	for _, d := range l.Inputs {
		in = p.Route(d.Owner(), func(xs ...*autograd.Var) *autograd.Var { return d.ApplyInput(p, l, xs[0]) }, in)
	}
	w, deltas := l.weight(p)
	y := p.Tape.Linear(in, w)
	if l.Bias != nil {
		y = p.Tape.Add(y, l.Bias)
	}
	for i := 0; i < len(deltas); {
		if n := l.group(p, deltas[i:]); n > 0 {
			y = l.applyGroup(p, deltas[i:i+n], x, y)
			i += n
			continue
		}
		d := deltas[i]
		y = p.Route(d.Owner(), func(xs ...*autograd.Var) *autograd.Var { return d.Apply(p, l, xs[1], xs[0]) }, y, x)
		i++
	}
	return y
}

// group returns how many of deltas, from the first, run as one group (0:
// the first runs alone): consecutive GroupDelta hooks with its key, owned by
// adapters, in an inference pass over sequences of different adapters.
func (l *Linear) group(p *Pass, deltas []Delta) int {
	g, ok := deltas[0].(GroupDelta)
	if !GroupDeltas || !ok || p.Tape != nil || len(p.Adapters) < 2 || g.Owner() == "" {
		return 0
	}
	key := g.GroupKey()
	n := 1
	for ; n < len(deltas); n++ {
		h, ok := deltas[n].(GroupDelta)
		if !ok || h.Owner() == "" || h.GroupKey() != key {
			break
		}
	}
	return n
}

// applyGroup runs a group on the rows each of its hooks owns.
func (l *Linear) applyGroup(p *Pass, deltas []Delta, x, y *autograd.Var) *autograd.Var {
	var hooks []GroupDelta
	var rows [][]int
	for _, d := range deltas {
		_, idx := p.scope(d.Owner(), y.Value.Rows()) // lists every row it owns: the pass names several adapters
		if len(idx) > 0 {
			hooks = append(hooks, d.(GroupDelta))
			rows = append(rows, idx)
		}
	}
	if len(hooks) == 0 {
		return y
	}
	return hooks[0].ApplyGroup(p, l, hooks, rows, x, y)
}

// weight is the weight the pass multiplies by and the deltas left to run:
// a Replacer that every sequence uses takes the base weight's place.
func (l *Linear) weight(p *Pass) (*autograd.Var, []Delta) {
	for i, d := range l.Deltas {
		if r, ok := d.(Replacer); ok {
			if all, _ := p.scope(r.Owner(), p.batch); all {
				return r.Replacement(), append(l.Deltas[:i:i], l.Deltas[i+1:]...)
			}
		}
	}
	return l.Weight, l.Deltas
}

// Plain returns the weight the layer multiplies by in this pass when the
// layer is nothing more than that product (no bias, no hook that runs): the
// model then may fuse it with others (q, k and v in one split; the LM head
// with the loss).
func (l *Linear) Plain(p *Pass) (*autograd.Var, bool) {
	if l.Bias != nil {
		return nil, false
	}
	for _, d := range l.Inputs {
		if p.Applies(d.Owner()) {
			return nil, false
		}
	}
	w, deltas := l.weight(p)
	for _, d := range deltas {
		if p.Applies(d.Owner()) {
			return nil, false
		}
	}
	return w, true
}

// Param is a named parameter.
type Param struct {
	Name string
	Var  *autograd.Var
}

// Params is an ordered set of named parameters.
type Params []Param

// Get returns the parameter called name.
func (ps Params) Get(name string) (*autograd.Var, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p.Var, true
		}
	}
	return nil, false
}

// Count returns the number of elements in all parameters and in the
// trainable ones.
func (ps Params) Count() (all, trainable int) {
	seen := map[*autograd.Var]bool{}
	for _, p := range ps {
		if seen[p.Var] {
			continue // tied weights count once
		}
		seen[p.Var] = true
		n := p.Var.Value.Numel()
		all += n
		if p.Var.RequiresGrad() {
			trainable += n
		}
	}
	return all, trainable
}

// TrainableLine is the parameter summary in Hugging Face PEFT's words.
func TrainableLine(all, trainable int) string {
	pct := 0.0
	if all > 0 {
		pct = 100 * float64(trainable) / float64(all)
	}
	return fmt.Sprintf("trainable params: %s || all params: %s || trainable%%: %.4f", commas(trainable), commas(all), pct)
}

func commas(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
