package fused

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// RoPETables fills cos and sin, each [len(pos), len(invFreq)], with
// cos(pos[r]·invFreq[i]) and sin(...): the angle is formed in float64 and
// only the results are rounded to float32, as PyTorch and llama2.c do.
func RoPETables(cos, sin []float32, pos []int, invFreq []float64) {
	half := len(invFreq)
	need("RoPETables", "cos", cos, len(pos)*half)
	need("RoPETables", "sin", sin, len(pos)*half)
	parallel.For(len(pos), rowGrain(len(pos), 16*half), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p := float64(pos[r])
			for i, f := range invFreq {
				s, c := math.Sincos(p * f)
				cos[r*half+i], sin[r*half+i] = float32(c), float32(s)
			}
		}
	})
}

// RoPEForward rotates every head of x [rows, heads·hd] into out (which may
// alias x): each pair (x0, x1) becomes (x0·c − x1·s, x0·s + x1·c) with c, s
// from row r of the tables made by RoPETables. Pairs are (2i, 2i+1)
// (llama2.c, interleaved) or, with halfRotate, (i, i+hd/2) (Hugging Face).
func RoPEForward(out, x, cos, sin []float32, rows, heads, hd int, halfRotate bool) {
	rope("RoPEForward", out, x, cos, sin, rows, heads, hd, halfRotate, 1, false)
}

// RoPEBackward accumulates dx += Rᵀ·dout: the rotation by the negated angle.
func RoPEBackward(dx, dout, cos, sin []float32, rows, heads, hd int, halfRotate bool) {
	rope("RoPEBackward", dx, dout, cos, sin, rows, heads, hd, halfRotate, -1, true)
}

func rope(op string, out, x, cos, sin []float32, rows, heads, hd int, halfRotate bool, sign float32, acc bool) {
	if hd%2 != 0 {
		panic(fmt.Sprintf("fused.%s: head dimension %d is odd", op, hd))
	}
	half, width := hd/2, heads*hd
	need(op, "out", out, rows*width)
	need(op, "x", x, rows*width)
	need(op, "cos", cos, rows*half)
	need(op, "sin", sin, rows*half)
	// Pair i of a head is (lo(i), lo(i)+step).
	step, stride := 1, 2
	if halfRotate {
		step, stride = half, 1
	}
	parallel.For(rows, rowGrain(rows, width), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			cr, sr := cos[r*half:(r+1)*half], sin[r*half:(r+1)*half]
			for h := 0; h < heads; h++ {
				base := r*width + h*hd
				xs, os := x[base:base+hd], out[base:base+hd]
				for i := 0; i < half; i++ {
					j := i * stride
					c, s := cr[i], sign*sr[i]
					x0, x1 := xs[j], xs[j+step]
					y0, y1 := x0*c-x1*s, x0*s+x1*c
					if acc {
						os[j] += y0
						os[j+step] += y1
					} else {
						os[j], os[j+step] = y0, y1
					}
				}
			}
		}
	})
}
