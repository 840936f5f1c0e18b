package autograd

// Checkpoint runs f, a deterministic piece of the model (a decoder block),
// without keeping its intermediates for the backward, and runs it again
// when the backward reaches it: gradient checkpointing, which trades one
// more forward of f for the memory of its activations (transformers'
// gradient_checkpointing_enable, torch.utils.checkpoint). f builds its
// graph on the tape it is given and may read any Var from outside (the
// block's input, trainable parameters, prefixes): their gradients
// accumulate directly from the re-run's backward. f must compute the same
// values both times (dropout masks here are functions of the pass's seed
// and the site, so they are).
//
// The first run records on a scratch tape, only to learn whether the
// output needs a gradient; the tape is dropped at once, so at most one
// block's intermediates are alive at a time. On a nil tape f simply runs.
func (tp *Tape) Checkpoint(f func(tp *Tape) *Var) *Var {
	if tp == nil {
		return f(nil)
	}
	probe := NewTape()
	y := f(probe)
	probe.Reset()
	if !y.requiresGrad {
		return &Var{Value: y.Value}
	}
	out := &Var{Value: y.Value, requiresGrad: true, tape: tp}
	tp.temps = append(tp.temps, out)
	tp.backward = append(tp.backward, func() {
		if out.Grad == nil {
			return
		}
		sub := NewTape()
		sub.BackwardFrom(f(sub), out.Grad)
		tp.release(out)
	})
	return out
}
