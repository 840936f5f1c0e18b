package autograd

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
)

// quantCases: every quantized storage, with a shape whose element count is
// odd (a partial last 4-bit block, blocks across rows).
var quantCases = []struct {
	kind   quant.Kind
	double bool
}{{quant.KindNF4, false}, {quant.KindNF4, true}, {quant.KindFP4, false}, {quant.KindInt8, false}}

// A Linear over a quantized frozen weight computes, forward and backward to
// its input, what it computes over the dequantized float32 weight: bit for
// bit above the kernels' GEMV rows, within float32 rounding of the same
// sums below; and it never computes a weight gradient.
func TestLinearQuantizedMatchesDequantized(t *testing.T) {
	g := tensor.NewRNG(11)
	for _, c := range quantCases {
		for _, rows := range []int{1, 3, 9} {
			t.Run(fmt.Sprintf("%s/dq=%v/rows=%d", c.kind, c.double, rows), func(t *testing.T) {
				const out, in = 37, 67
				wf := tensor.New(out, in).Normal(g, 0, 0.1)
				wq, err := quant.QuantizeTensor(wf, c.kind, c.double)
				if err != nil {
					t.Fatal(err)
				}
				deq := wq.ToF32()
				x0 := tensor.New(rows, in).Normal(g, 0, 1)
				dy := tensor.New(rows, out).Normal(g, 0, 1)
				run := func(w *tensor.Tensor) (y, dx []float32) {
					x := Param("x", x0.Clone(), true)
					wv := Param("w", w, false)
					tp := NewTape()
					ys := tp.Linears(x, wv, wv)
					tp.BackwardFrom(tp.Add(ys[0], ys[1]), dy)
					return tp.Linear(x, wv).Value.Data, x.Grad.Data
				}
				before := WeightGradGEMMs()
				yq, dxq := run(wq)
				if WeightGradGEMMs() != before {
					t.Fatal("a weight-gradient product ran for a quantized frozen weight")
				}
				yf, dxf := run(deq)
				exact := rows > 4
				for _, p := range []struct {
					name string
					a, b []float32
				}{{"y", yq, yf}, {"dx", dxq, dxf}} {
					for i := range p.a {
						d := math.Abs(float64(p.a[i] - p.b[i]))
						if (exact && d != 0) || d > 1e-5*(1+math.Abs(float64(p.b[i]))) {
							t.Fatalf("%s[%d] = %g over the quantized weight, %g over its dequantized copy", p.name, i, p.a[i], p.b[i])
						}
					}
				}
			})
		}
	}
}

// Gradients to the activations through the dequantization (QLoRA's path:
// a quantized base plus a low-rank update) against finite differences.
func TestGradCheckQuantizedLinear(t *testing.T) {
	g := tensor.NewRNG(12)
	for _, c := range quantCases {
		wq, err := quant.QuantizeTensor(tensor.New(21, 67).Normal(g, 0, 0.3), c.kind, c.double)
		if err != nil {
			t.Fatal(err)
		}
		w := Param("w", wq, false)
		x := Param("x", tensor.New(6, 67).Normal(g, 0, 1), true)
		a := Param("a", tensor.New(4, 67).Normal(g, 0, 0.3), true)
		b := Param("b", tensor.New(21, 4).Normal(g, 0, 0.3), true)
		worst, err := GradCheck([]*Var{x, a, b}, func(tp *Tape) *Var {
			y := tp.Linear(x, w)
			return tp.SiLU(tp.AddLinear(y, tp.Linear(x, a), b, 0.5))
		})
		if err != nil {
			t.Fatalf("%s dq=%v: %v", c.kind, c.double, err)
		}
		t.Logf("%s dq=%v: worst %.3f of tolerance", c.kind, c.double, worst)
	}
}
