package fused

import (
	"math"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// RMSNormForward normalises each of rows rows of x [rows, dim]:
// out = x · rstd ⊙ g with rstd = 1/√(mean(x²)+eps), stored per row for the
// backward. The sum of squares is accumulated in float64. out may alias x.
func RMSNormForward(out, rstd, x, g []float32, rows, dim int, eps float32) {
	n := rows * dim
	need("RMSNormForward", "out", out, n)
	need("RMSNormForward", "x", x, n)
	need("RMSNormForward", "rstd", rstd, rows)
	need("RMSNormForward", "g", g, dim)
	g = g[:dim]
	parallel.For(rows, rowGrain(rows, dim), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr := x[r*dim : (r+1)*dim]
			var ss float64
			for _, v := range xr {
				ss += float64(v) * float64(v)
			}
			rs := float32(1 / math.Sqrt(ss/float64(dim)+float64(eps)))
			rstd[r] = rs
			or := out[r*dim : (r+1)*dim]
			for j, v := range xr {
				or[j] = v * rs * g[j]
			}
		}
	})
}

// RMSNormBackward accumulates the gradients of RMSNormForward:
// dx += rstd·g⊙dout − rstd³/dim·(Σ dout⊙g⊙x)·x per row, and
// dg += Σ_rows dout⊙x·rstd (summed in a fixed order). dx or dg may be nil.
func RMSNormBackward(dx, dg, dout, x, g, rstd []float32, rows, dim int) {
	n := rows * dim
	need("RMSNormBackward", "dout", dout, n)
	need("RMSNormBackward", "x", x, n)
	need("RMSNormBackward", "rstd", rstd, rows)
	need("RMSNormBackward", "g", g, dim)
	g = g[:dim]
	if dx != nil {
		need("RMSNormBackward", "dx", dx, n)
		parallel.For(rows, rowGrain(rows, dim), func(lo, hi int) {
			for r := lo; r < hi; r++ {
				xr, dr := x[r*dim:(r+1)*dim], dout[r*dim:(r+1)*dim]
				var c float64
				for j, v := range xr {
					c += float64(dr[j]) * float64(g[j]) * float64(v)
				}
				rs := rstd[r]
				k := float32(float64(rs) * float64(rs) * float64(rs) * c / float64(dim))
				dxr := dx[r*dim : (r+1)*dim]
				for j, v := range xr {
					dxr[j] += rs*g[j]*dr[j] - k*v
				}
			}
		})
	}
	if dg != nil {
		ReduceRows(dg, rows, dim, func(r int, acc []float32) {
			xr, dr, rs := x[r*dim:(r+1)*dim], dout[r*dim:(r+1)*dim], rstd[r]
			for j, v := range xr {
				acc[j] += dr[j] * v * rs
			}
		})
	}
}
