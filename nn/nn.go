// Package nn holds the model building blocks that PEFT methods attach to:
// named Linear layers with a list of deltas, and a registry of named
// parameters in Hugging Face's naming.
package nn

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
)

// Delta changes what a Linear computes, on top of its frozen base. LoRA adds
// s·B·A·x, IA³ scales, SSF scales and shifts, BitFit adds a bias. Apply
// receives the layer, its input x and the output y computed so far, and
// returns the new output.
type Delta interface {
	Apply(tp *autograd.Tape, l *Linear, x, y *autograd.Var) *autograd.Var
}

// InputDelta changes a Linear's input before the base weight sees it (IA³
// on feed-forward layers scales the input).
type InputDelta interface {
	ApplyInput(tp *autograd.Tape, l *Linear, x *autograd.Var) *autograd.Var
}

// Linear is y = x·Wᵀ (+ b) for W [out, in], followed by its deltas. Name is
// the module's full Hugging Face name (model.layers.0.self_attn.q_proj).
type Linear struct {
	Name   string
	Weight *autograd.Var
	Bias   *autograd.Var // nil: LLaMA has no biases
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
func (l *Linear) Forward(tp *autograd.Tape, x *autograd.Var) *autograd.Var {
	in := x
	for _, d := range l.Deltas {
		if id, ok := d.(InputDelta); ok {
			in = id.ApplyInput(tp, l, in)
		}
	}
	y := tp.Linear(in, l.Weight)
	if l.Bias != nil {
		y = tp.Add(y, l.Bias)
	}
	for _, d := range l.Deltas {
		y = d.Apply(tp, l, x, y)
	}
	return y
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
