package fused

import "github.com/gopeft/gopeft/tensor/parallel"

// Elementwise loops for the tape's arithmetic ops. "Row" variants broadcast
// a vector v of cols values over every row of a [rows, cols] matrix.

// Axpy does y += alpha·x over n elements.
func Axpy(y []float32, alpha float32, x []float32, n int) {
	need("Axpy", "y", y, n)
	need("Axpy", "x", x, n)
	elementwise(n, func(lo, hi int) { axpy(y[lo:hi], alpha, x[lo:hi]) })
}

// Scale sets out = alpha·x over n elements; out may alias x.
func Scale(out []float32, alpha float32, x []float32, n int) {
	need("Scale", "out", out, n)
	need("Scale", "x", x, n)
	elementwise(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = alpha * x[i]
		}
	})
}

// Add sets out = a + b over n elements.
func Add(out, a, b []float32, n int) {
	need("Add", "out", out, n)
	need("Add", "a", a, n)
	need("Add", "b", b, n)
	elementwise(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = a[i] + b[i]
		}
	})
}

// Mul sets out = a ⊙ b over n elements.
func Mul(out, a, b []float32, n int) {
	need("Mul", "out", out, n)
	need("Mul", "a", a, n)
	need("Mul", "b", b, n)
	elementwise(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = a[i] * b[i]
		}
	})
}

// MulAcc does dst += a ⊙ b over n elements.
func MulAcc(dst, a, b []float32, n int) {
	need("MulAcc", "dst", dst, n)
	need("MulAcc", "a", a, n)
	need("MulAcc", "b", b, n)
	elementwise(n, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dst[i] += a[i] * b[i]
		}
	})
}

// rowwise runs fn(r, slice of row r of each matrix) for every row in
// parallel, after checking a [rows, cols] matrix and the vector v.
func rowwise(op string, rows, cols int, v []float32, mats [][]float32, fn func(r, lo, hi int)) {
	need(op, "row vector", v, cols)
	for _, m := range mats {
		need(op, "matrix", m, rows*cols)
	}
	parallel.For(rows, rowGrain(rows, cols), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			fn(r, r*cols, (r+1)*cols)
		}
	})
}

// AddRow sets out = a + v, v broadcast over the rows.
func AddRow(out, a, v []float32, rows, cols int) {
	rowwise("AddRow", rows, cols, v, [][]float32{out, a}, func(_, lo, hi int) {
		o, x := out[lo:hi], a[lo:hi]
		for j, vj := range v[:cols] {
			o[j] = x[j] + vj
		}
	})
}

// MulRow sets out = a ⊙ v, v broadcast over the rows.
func MulRow(out, a, v []float32, rows, cols int) {
	rowwise("MulRow", rows, cols, v, [][]float32{out, a}, func(_, lo, hi int) {
		o, x := out[lo:hi], a[lo:hi]
		for j, vj := range v[:cols] {
			o[j] = x[j] * vj
		}
	})
}

// MulRowAcc does dst += a ⊙ v, v broadcast over the rows.
func MulRowAcc(dst, a, v []float32, rows, cols int) {
	rowwise("MulRowAcc", rows, cols, v, [][]float32{dst, a}, func(_, lo, hi int) {
		d, x := dst[lo:hi], a[lo:hi]
		for j, vj := range v[:cols] {
			d[j] += x[j] * vj
		}
	})
}

// SumRows does dst[:cols] += Σ_rows a (the gradient of a broadcast vector),
// in the fixed order of ReduceRows.
func SumRows(dst, a []float32, rows, cols int) {
	need("SumRows", "a", a, rows*cols)
	ReduceRows(dst, rows, cols, func(r int, acc []float32) { axpy(acc, 1, a[r*cols:(r+1)*cols]) })
}

// SumRowsMul does dst[:cols] += Σ_rows a ⊙ b, in the fixed order of
// ReduceRows.
func SumRowsMul(dst, a, b []float32, rows, cols int) {
	need("SumRowsMul", "a", a, rows*cols)
	need("SumRowsMul", "b", b, rows*cols)
	ReduceRows(dst, rows, cols, func(r int, acc []float32) {
		ar, br := a[r*cols:(r+1)*cols], b[r*cols:(r+1)*cols]
		for j := range acc {
			acc[j] += ar[j] * br[j]
		}
	})
}

// Sum returns Σ x over n elements, accumulated in float64 per fixed block
// and then block by block, so it does not depend on the thread count.
func Sum(x []float32, n int) float64 {
	need("Sum", "x", x, n)
	const block = elemGrain
	nb := (n + block - 1) / block
	part := make([]float64, nb)
	parallel.For(nb, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			var s float64
			for _, v := range x[b*block : min((b+1)*block, n)] {
				s += float64(v)
			}
			part[b] = s
		}
	})
	var s float64
	for _, p := range part {
		s += p
	}
	return s
}
