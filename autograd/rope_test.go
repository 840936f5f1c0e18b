package autograd

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

func TestGradRoPE(t *testing.T) {
	g := tensor.NewRNG(30)
	for _, style := range []RoPEStyle{RoPEInterleaved, RoPEHalf} {
		r := &RoPE{InvFreq: RoPEInvFreq(6, 10000), Style: style}
		x := randVar(g, true, 4, 2*6)
		pos := []int{0, 3, 7, 1}
		checkGrad(t, fmt.Sprint("style", style), []*Var{x}, func(tp *Tape) *Var { return tp.RoPE(x, 2, pos, r) })
		x1 := randVar(g, true, 1, 6)
		checkGrad(t, fmt.Sprint("T1style", style), []*Var{x1}, func(tp *Tape) *Var { return tp.RoPE(x1, 1, []int{5}, r) })
	}
}

func TestRoPEValues(t *testing.T) {
	const hd, heads, theta = 8, 3, 500000.0
	f := RoPEInvFreq(hd, theta)
	for i, v := range f {
		if want := math.Pow(theta, -float64(2*i)/hd); math.Abs(v-want) > 1e-15 {
			t.Errorf("InvFreq[%d] = %v, want %v", i, v, want)
		}
	}
	g := tensor.NewRNG(31)
	x := randVar(g, false, 5, heads*hd)
	pos := []int{0, 1, 2, 100, 4095}
	inter := (*Tape)(nil).RoPE(x, heads, pos, &RoPE{InvFreq: f, Style: RoPEInterleaved}).Value
	// Reference in float64 from the definition (pairs 2i, 2i+1).
	for r, p := range pos {
		for h := 0; h < heads; h++ {
			for i := 0; i < hd/2; i++ {
				o := r*heads*hd + h*hd + 2*i
				c, s := math.Cos(float64(p)*f[i]), math.Sin(float64(p)*f[i])
				x0, x1 := float64(x.Value.Data[o]), float64(x.Value.Data[o+1])
				w0, w1 := x0*c-x1*s, x0*s+x1*c
				if math.Abs(float64(inter.Data[o])-w0) > 1e-6 || math.Abs(float64(inter.Data[o+1])-w1) > 1e-6 {
					t.Fatalf("row %d head %d pair %d: got (%v,%v) want (%v,%v)", r, h, i, inter.Data[o], inter.Data[o+1], w0, w1)
				}
			}
		}
	}
	// Hugging Face's converter permutes each head so that element 2i moves
	// to i and 2i+1 to i+hd/2; rotate-half on the permuted input must give
	// the permuted interleaved result exactly.
	perm := func(src *tensor.Tensor) *tensor.Tensor {
		dst := tensor.New(src.Shape...)
		for r := 0; r < src.Rows(); r++ {
			for h := 0; h < heads; h++ {
				base := r*heads*hd + h*hd
				for i := 0; i < hd/2; i++ {
					dst.Data[base+i] = src.Data[base+2*i]
					dst.Data[base+i+hd/2] = src.Data[base+2*i+1]
				}
			}
		}
		return dst
	}
	half := (*Tape)(nil).RoPE(Const(perm(x.Value)), heads, pos, &RoPE{InvFreq: f, Style: RoPEHalf}).Value
	want := perm(inter)
	for i := range want.Data {
		if half.Data[i] != want.Data[i] {
			t.Fatalf("rotate-half element %d = %v, permuted interleaved %v", i, half.Data[i], want.Data[i])
		}
	}
}
