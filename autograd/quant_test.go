package autograd

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// quantCases: every quantized storage, with a shape whose element count is
// odd (a partial last 4-bit block, blocks across rows).
var quantCases = []struct {
	kind   quant.Kind
	double bool
}{{quant.KindNF4, false}, {quant.KindNF4, true}, {quant.KindFP4, false}, {quant.KindInt8, false}}

// A Linear over a quantized frozen weight computes, forward and backward to
// its input, what it computes over the dequantized float32 weight: bit for
// bit above the kernels' GEMV rows (kernels.RowInvariantRows), within
// float32 rounding of the same sums below; and it never computes a weight gradient.
func TestLinearQuantizedMatchesDequantized(t *testing.T) {
	g := tensor.NewRNG(11)
	for _, c := range quantCases {
		for _, rows := range []int{1, 3, 9, kernels.RowInvariantRows + 6} {
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
				exact := rows > kernels.RowInvariantRows // below, the GEMV paths group the sums differently
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

// Checkpoint gives the gradients of the graph it wraps, to parameters
// inside and to the input outside, and keeps none of its intermediates.
func TestCheckpointMatchesPlainBackward(t *testing.T) {
	g := tensor.NewRNG(13)
	x := Param("x", tensor.New(5, 8).Normal(g, 0, 1), true)
	w := Param("w", tensor.New(8, 8).Normal(g, 0, 0.5), true)
	wq, err := quant.QuantizeTensor(tensor.New(8, 8).Normal(g, 0, 0.5), quant.KindNF4, false)
	if err != nil {
		t.Fatal(err)
	}
	frozen := Param("q", wq, false)
	block := func(tp *Tape, in *Var) *Var {
		return tp.Add(in, tp.SiLU(tp.Linear(tp.Linear(in, frozen), w)))
	}
	run := func(ckpt bool) (y, dx, dw []float32, temps int) {
		x.Grad, w.Grad = nil, nil
		tp := NewTape()
		h := tp.Scale(x, 1.5)
		var out *Var
		if ckpt {
			out = tp.Checkpoint(func(tp *Tape) *Var { return block(tp, h) })
		} else {
			out = block(tp, h)
		}
		out = tp.Mul(out, out)
		temps = len(tp.temps)
		r := tensor.New(5, 8).Normal(tensor.NewRNG(1), 0, 1)
		tp.BackwardFrom(out, r)
		return out.Value.Data, x.Grad.Data, w.Grad.Data, temps
	}
	y1, dx1, dw1, n1 := run(false)
	y2, dx2, dw2, n2 := run(true)
	if n2 >= n1 {
		t.Errorf("checkpointed graph keeps %d intermediates, the plain one %d", n2, n1)
	}
	for _, c := range []struct {
		name string
		a, b []float32
	}{{"y", y1, y2}, {"dx", dx1, dx2}, {"dw", dw1, dw2}} {
		for i := range c.a {
			if c.a[i] != c.b[i] {
				t.Fatalf("%s[%d]: %g plain, %g checkpointed", c.name, i, c.a[i], c.b[i])
			}
		}
	}
	worst, err := GradCheck([]*Var{x, w}, func(tp *Tape) *Var {
		h := tp.Scale(x, 1.5)
		return tp.Checkpoint(func(tp *Tape) *Var { return block(tp, h) })
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worst %.3f of tolerance", worst)
}
