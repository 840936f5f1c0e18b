package autograd

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
)

// RMSNorm normalises x over its last dimension: x / √(mean(x²)+eps) ⊙ g,
// with g a vector of that dimension.
func (tp *Tape) RMSNorm(x, g *Var, eps float32) *Var {
	dim := x.Value.Cols()
	if len(g.Value.Shape) != 1 || g.Value.Shape[0] != dim {
		panicShapes("RMSNorm", x.Value.Shape, g.Value.Shape)
	}
	rows := x.Value.Rows()
	out := tensor.New(x.Value.Shape...)
	rstd := make([]float32, rows)
	fused.RMSNormForward(out.Data, rstd, x.Value.F32(), g.Value.F32(), rows, dim, eps)
	return tp.resultSaving(out, func(o *Var) {
		fused.RMSNormBackward(gradOrNil(x), gradOrNil(g), o.Grad.Data, x.Value.Data, g.Value.Data, rstd, rows, dim)
	}, []*Var{x, g}, x, g)
}

// RoPEStyle says which elements of a head rotary embeddings rotate together.
type RoPEStyle int

const (
	// RoPEInterleaved rotates pairs (2i, 2i+1), as llama2.c and Meta's
	// checkpoints do.
	RoPEInterleaved RoPEStyle = iota
	// RoPEHalf rotates pairs (i, i+hd/2), as Hugging Face's rotate_half does
	// (its converter permutes q/k rows to match).
	RoPEHalf
)

// RoPE holds rotary-embedding frequencies: InvFreq[i] (len headDim/2) is the
// angle per position of pair i, θ^(−2i/hd) unless the caller rescales it
// (llama3's long-context scaling).
type RoPE struct {
	InvFreq []float64
	Style   RoPEStyle
}

// RoPEInvFreq returns θ^(−2i/headDim) for i < headDim/2, in float64.
func RoPEInvFreq(headDim int, theta float64) []float64 {
	f := make([]float64, headDim/2)
	for i := range f {
		f[i] = 1 / math.Pow(theta, float64(2*i)/float64(headDim))
	}
	return f
}

// RoPEAngles are the cos/sin tables of one set of positions under one RoPE:
// made once per forward pass and shared by every layer's rotations.
type RoPEAngles struct {
	rope     *RoPE
	cos, sin []float32 // [rows, hd/2]
	rows     int
}

// Angles tabulates cos and sin of pos[row]·InvFreq[i]: the angle is formed in
// float64 and cos/sin rounded to float32.
func (r *RoPE) Angles(pos []int) *RoPEAngles {
	half := len(r.InvFreq)
	a := &RoPEAngles{rope: r, rows: len(pos), cos: make([]float32, len(pos)*half), sin: make([]float32, len(pos)*half)}
	fused.RoPETables(a.cos, a.sin, pos, r.InvFreq)
	return a
}

// RoPE rotates each of the heads heads of x [rows, heads·hd] (hd =
// 2·len(r.InvFreq)) by the angles pos[row]·InvFreq[i]. See [RoPE.Angles].
func (tp *Tape) RoPE(x *Var, heads int, pos []int, r *RoPE) *Var {
	if len(pos) != x.Value.Rows() {
		panic(fmt.Sprintf("autograd.RoPE: %d positions for x of shape %v", len(pos), x.Value.Shape))
	}
	return tp.RoPEAt(x, heads, r.Angles(pos))
}

// RoPEAt is RoPE with the angles tabulated beforehand (one row per row of
// x), so that layers sharing positions share the tables.
func (tp *Tape) RoPEAt(x *Var, heads int, a *RoPEAngles) *Var {
	r := a.rope
	hd := 2 * len(r.InvFreq)
	rows, cols := x.Value.Rows(), x.Value.Cols()
	if heads <= 0 || hd == 0 || cols != heads*hd {
		panicShapes("RoPE", x.Value.Shape, []int{heads, hd})
	}
	if a.rows != rows {
		panic(fmt.Sprintf("autograd.RoPE: angles for %d positions, x has shape %v", a.rows, x.Value.Shape))
	}
	half := r.Style == RoPEHalf
	cos, sin := a.cos, a.sin
	out := tensor.New(x.Value.Shape...)
	fused.RoPEForward(out.Data, x.Value.F32(), cos, sin, rows, heads, hd, half)
	return tp.resultSaving(out, func(o *Var) { // a rotation: no value read
		fused.RoPEBackward(x.GradBuf().Data, o.Grad.Data, cos, sin, rows, heads, hd, half)
	}, nil, x)
}
