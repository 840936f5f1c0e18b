package autograd

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// A few-row Linear is split over the threads (linearForward); the split must
// give exactly the bits of one whole product, on any number of threads.
func TestLinearSplitMatchesWholeProduct(t *testing.T) {
	g := tensor.NewRNG(5)
	for _, bf16 := range []bool{false, true} {
		for _, c := range []struct{ rows, out, in int }{{1, 1000, 288}, {3, 777, 64}, {16, 300, 130}, {1, 4096, 8}, {17, 500, 96}} {
			t.Run(fmt.Sprintf("bf16=%v/%dx%dx%d", bf16, c.rows, c.out, c.in), func(t *testing.T) {
				x := tensor.New(c.rows, c.in).Normal(g, 0, 1)
				w := tensor.New(c.out, c.in).Normal(g, 0, 1)
				if bf16 {
					w = w.ToBF16()
				}
				want := make([]float32, c.rows*c.out)
				if bf16 {
					kernels.GemmBF16(true, c.rows, c.out, c.in, x.Data, c.in, w.Half, c.in, want, c.out, false)
				} else {
					kernels.Gemm(false, true, c.rows, c.out, c.in, x.Data, c.in, w.Data, c.in, want, c.out, false)
				}
				for _, th := range []int{1, 2, 3, 8} {
					old := parallel.SetThreads(th)
					y := (*Tape)(nil).Linear(Const(x), Const(w)).Value.Data
					parallel.SetThreads(old)
					for i := range want {
						if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%d threads: output %d is %v, the whole product gives %v", th, i, y[i], want[i])
						}
					}
				}
			})
		}
	}
}

// AddLinear: gradients to y, x and w (each trainable or not), and the value
// of the unfused y + s·(x·wᵀ).
func TestAddLinear(t *testing.T) {
	g := tensor.NewRNG(12)
	for _, train := range [][3]bool{{true, true, true}, {false, true, true}, {true, false, true}, {true, true, false}} {
		y, x, w := randVar(g, train[0], 5, 7), randVar(g, train[1], 5, 3), randVar(g, train[2], 7, 3)
		checkGrad(t, fmt.Sprint("trainable", train), []*Var{y, x, w}, func(tp *Tape) *Var {
			yi := tp.Scale(y, 1.5) // an intermediate: the first backward takes the buffer
			return tp.Sum(tp.Mul(tp.AddLinear(yi, x, w, 0.7), tp.AddLinear(yi, x, w, -1.3)))
		})
		got := (*Tape)(nil).AddLinear(y, x, w, 0.7).Value.Data
		var nilTape *Tape
		want := nilTape.Add(y, nilTape.Scale(nilTape.Linear(x, w), 0.7)).Value.Data
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-5 {
				t.Fatalf("value %d: %v, unfused %v", i, got[i], want[i])
			}
		}
	}
}

// Linears gives exactly each weight's Linear, bitwise, on any number of
// threads (its few-row products split over the weights' rows end to end,
// chunks crossing from one weight into the next), in f32 and bf16; with a
// tape, gradients reach x and every trainable weight as Linear's do.
func TestLinearsMatchesLinear(t *testing.T) {
	g := tensor.NewRNG(13)
	for _, bf16 := range []bool{false, true} {
		for _, c := range []struct {
			rows, in int
			outs     []int
		}{{1, 288, []int{288, 96, 96}}, {1, 288, []int{768, 768}}, {3, 100, []int{500, 17, 333}}, {16, 64, []int{1200, 40}}, {20, 64, []int{300, 300}}, {1, 8, []int{5, 3}}} {
			t.Run(fmt.Sprintf("bf16=%v/%dx%d%v", bf16, c.rows, c.in, c.outs), func(t *testing.T) {
				x := Const(tensor.New(c.rows, c.in).Normal(g, 0, 1))
				var ws []*Var
				for _, o := range c.outs {
					w := tensor.New(o, c.in).Normal(g, 0, 1)
					if bf16 {
						w = w.ToBF16()
					}
					ws = append(ws, Const(w))
				}
				var want [][]float32
				old := parallel.SetThreads(1)
				for _, w := range ws {
					want = append(want, (*Tape)(nil).Linear(x, w).Value.Data)
				}
				parallel.SetThreads(old)
				for _, th := range []int{1, 2, 3, 8} {
					old := parallel.SetThreads(th)
					ys := (*Tape)(nil).Linears(x, ws...)
					parallel.SetThreads(old)
					for i, y := range ys {
						if !tensor.SameShape(y.Value.Shape, []int{c.rows, c.outs[i]}) {
							t.Fatalf("output %d has shape %v", i, y.Value.Shape)
						}
						for j := range want[i] {
							if math.Float32bits(y.Value.Data[j]) != math.Float32bits(want[i][j]) {
								t.Fatalf("%d threads: output %d element %d is %v, Linear gives %v", th, i, j, y.Value.Data[j], want[i][j])
							}
						}
					}
				}
			})
		}
	}
	x, w1, w2 := randVar(g, true, 3, 5), randVar(g, true, 4, 5), randVar(g, false, 6, 5)
	checkGrad(t, "Linears", []*Var{x, w1, w2}, func(tp *Tape) *Var {
		ys := tp.Linears(x, w1, w2)
		return tp.Add(tp.Sum(tp.Mul(ys[0], ys[0])), tp.Sum(ys[1]))
	})
}
