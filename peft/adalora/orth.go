package adalora

import (
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// orthDistance returns ‖M − I‖_F as a one-element tensor, where M = P·Pᵀ
// for P [r, n] (Q's rows) or, with cols, M = Pᵀ·P for P [n, r] (P's
// columns). With D = M − I (symmetric) and L = ‖D‖_F, the gradient is
// 2·D·P/L (rows) or 2·P·D/L (columns); at L = 0 it is 0.
func orthDistance(tp *autograd.Tape, p *autograd.Var, cols bool) *autograd.Var {
	rows, n := p.Value.Shape[0], p.Value.Shape[1]
	r, k := rows, n // M is r×r, summed over k
	if cols {
		r, k = n, rows
	}
	d := make([]float32, r*r)
	v := p.Value.Data
	if cols {
		kernels.Gemm(true, false, r, r, k, v, n, v, n, d, r, false)
	} else {
		kernels.Gemm(false, true, r, r, k, v, n, v, n, d, r, false)
	}
	var s float64
	for i := range d {
		if i%(r+1) == 0 {
			d[i]-- // − I
		}
		s += float64(d[i]) * float64(d[i])
	}
	l := float32(math.Sqrt(s))
	out := tensor.FromData([]float32{l}, 1)
	return tp.Result(out, func(o *autograd.Var) {
		if l == 0 {
			return
		}
		c := 2 * o.Grad.Data[0] / l
		sd := make([]float32, len(d))
		for i, x := range d {
			sd[i] = c * x
		}
		g := p.GradBuf().Data
		if cols { // dP += P·(c·D)
			kernels.Gemm(false, false, rows, n, n, v, n, sd, r, g, n, true)
		} else { // dP += (c·D)·P
			kernels.Gemm(false, false, rows, n, rows, sd, r, v, n, g, n, true)
		}
	}, p)
}
