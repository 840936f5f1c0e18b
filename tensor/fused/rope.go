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
	parallel.For(rows, rowGrain(rows, width), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			cr, sr := cos[r*half:(r+1)*half], sin[r*half:(r+1)*half]
			for h := 0; h < heads; h++ {
				base := r*width + h*hd
				xs, os := x[base:base+hd], out[base:base+hd]
				if halfRotate {
					ropeHalf(os, xs, cr, sr, sign, acc)
				} else {
					ropeInterleaved(os, xs, cr, sr, sign, acc)
				}
			}
		}
	})
}

// ropeHalfGo rotates one head's pairs (i, i+half), half = len(cos), with
// the angle's sine times sign, into out (or adds into it with acc).
func ropeHalfGo(out, x, cos, sin []float32, sign float32, acc bool) {
	ropePairs(out, x, cos, sin, sign, acc, len(cos), 1)
}

// ropeInterleaved is ropeHalfGo for pairs (2i, 2i+1).
func ropeInterleaved(out, x, cos, sin []float32, sign float32, acc bool) {
	ropePairs(out, x, cos, sin, sign, acc, 1, 2)
}

// ropePairs rotates pair i of a head, (i·stride, i·stride+step). The
// conversions round each product, so no compiler fuses them into an FMA
// and the AVX-512 kernel's bits stay the same.
func ropePairs(out, x, cos, sin []float32, sign float32, acc bool, step, stride int) {
	for i, c := range cos {
		j := i * stride
		s := sign * sin[i]
		x0, x1 := x[j], x[j+step]
		y0, y1 := float32(x0*c)-float32(x1*s), float32(x0*s)+float32(x1*c)
		if acc {
			out[j] += y0
			out[j+step] += y1
		} else {
			out[j], out[j+step] = y0, y1
		}
	}
}
