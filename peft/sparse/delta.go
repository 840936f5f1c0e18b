// Package sparse is what every selective method shares (FishMask, PaFi,
// child-tuning D, and the others that train a chosen subset of a base's
// own entries): a sparse delta θ = θ₀ + δ whose δ is nonzero only at the
// selected entries of the base's Linear weights, the file that stores it,
// the global top-k selection and the empirical Fisher information.
//
// The trained tensor of each changed weight is a vector of its k selected
// values, not the weight: no dense gradient of the base is ever allocated
// while training, and the optimizer's state (AdamW's two moments) is 2·k
// floats per weight. That is the sparse AdamW the selective methods need:
// train.AdamW over these vectors keeps state for the selected entries only,
// and nothing else can move, so every unselected entry of the merged model
// is bitwise the base's.
package sparse

import (
	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor/kernels"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// Delta is one Linear weight's change: the sorted flat indices (row·in +
// column of the [out, in] weight) of its selected entries and their values
// δ. As a hook it computes y + x·δᵀ on the layer's output, in k·rows
// multiply-adds.
type Delta struct {
	nn.OwnedBy
	Module *nn.Linear
	Index  []int32
	Values *autograd.Var // [k], the trained tensor
	row    []int32       // row (output) of each entry
	col    []int32       // column (input) of each entry
}

// NewDelta makes the delta of a Linear for sorted indices, with values (k
// floats; nil: zeros) named name, trainable or not.
func NewDelta(adapter string, l *nn.Linear, index []int32, values []float32, name string, trainable bool) *Delta {
	v := make([]float32, len(index))
	copy(v, values)
	d := &Delta{OwnedBy: nn.OwnedBy{Adapter: adapter}, Module: l, Index: index,
		Values: autograd.Param(name, tensorOf(v), trainable)}
	in := int32(l.In())
	d.row, d.col = make([]int32, len(index)), make([]int32, len(index))
	for e, ix := range index {
		d.row[e], d.col[e] = ix/in, ix%in
	}
	return d
}

// Apply implements nn.Delta: y + x·δᵀ. The backward adds dy·δ into dx and
// Σ_rows dy[i]·x[j] into each entry's gradient, summing rows in order, so
// the result does not depend on the number of threads.
func (d *Delta) Apply(p *nn.Pass, l *nn.Linear, x, y *autograd.Var) *autograd.Var {
	in, out := l.In(), l.Out()
	rows := y.Value.Rows()
	xs, vals := x.Value.F32(), d.Values.Value.Data
	res := y.Value.Clone()
	rd := res.Data
	parallel.For(rows, 1, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			xr, yr := xs[t*in:(t+1)*in], rd[t*out:(t+1)*out]
			for e, v := range vals {
				yr[d.row[e]] += xr[d.col[e]] * v
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
					for e, v := range vals {
						xr[d.col[e]] += gr[d.row[e]] * v
					}
				}
			})
		}
		if d.Values.RequiresGrad() {
			dv := d.Values.GradBuf().Data
			parallel.For(len(vals), 256, func(lo, hi int) {
				for e := lo; e < hi; e++ {
					i, j := int(d.row[e]), int(d.col[e])
					var s float32
					for t := 0; t < rows; t++ {
						s += g[t*out+i] * xs[t*in+j]
					}
					dv[e] += s
				}
			})
		}
	}, y, x, d.Values)
}

// Fold adds sign·δ into the layer's weight at the selected entries, in
// float32 or (widened and rounded back) bfloat16.
func (d *Delta) Fold(sign float32) {
	w := d.Module.Weight.Value
	vals := d.Values.Value.Data
	if w.Half != nil {
		for e, ix := range d.Index {
			w.Half[ix] = kernels.ToBF16(kernels.FromBF16(w.Half[ix]) + sign*vals[e])
		}
		return
	}
	for e, ix := range d.Index {
		w.Data[ix] += sign * vals[e]
	}
}
