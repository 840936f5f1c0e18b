package sparse_test

import (
	"math"
	"slices"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft/sparse"
	"github.com/gopeft/gopeft/tensor"
)

func TestTopKHandCase(t *testing.T) {
	scores := [][]float32{{0.5, 3, -1, 2}, {2, 7, 0}, {}}
	got := sparse.TopK(scores, 3)
	want := [][]int32{{1}, {1}, nil}
	// 7 and 3, then the tie at 2 goes to the earlier tensor.
	want[0] = []int32{1, 3}
	if !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) || len(got[2]) != 0 {
		t.Fatalf("TopK 3 = %v, want %v", got, want)
	}
	if got := sparse.TopK(scores, 4); !slices.Equal(got[1], []int32{0, 1}) {
		t.Fatalf("TopK 4 = %v", got)
	}
	if got := sparse.TopK(scores, 100); len(got[0])+len(got[1]) != 7 {
		t.Fatalf("TopK all = %v", got)
	}
	// Negative scores (PaFi's −|θ|) order as numbers.
	if got := sparse.TopK([][]float32{{-3, -0.5, -2, 0}}, 2); !slices.Equal(got[0], []int32{1, 3}) {
		t.Fatalf("TopK of negatives = %v", got)
	}
}

// TopK agrees with a full sort on random scores with many ties.
func TestTopKMatchesSort(t *testing.T) {
	g := tensor.NewRNG(4)
	scores := [][]float32{make([]float32, 300), make([]float32, 57), make([]float32, 1000)}
	type e struct {
		s    float32
		t, i int
	}
	var all []e
	for ti, s := range scores {
		for i := range s {
			s[i] = float32(g.IntN(40)) / 8
			all = append(all, e{s[i], ti, i})
		}
	}
	slices.SortStableFunc(all, func(a, b e) int {
		if a.s != b.s {
			if a.s > b.s {
				return -1
			}
			return 1
		}
		return 0
	})
	for _, k := range []int{1, 17, 500, 1356} {
		got := sparse.TopK(scores, k)
		want := make([][]int32, 3)
		for _, x := range all[:k] {
			want[x.t] = append(want[x.t], int32(x.i))
		}
		for ti := range want {
			slices.Sort(want[ti])
			if !slices.Equal(got[ti], want[ti]) {
				t.Fatalf("k=%d tensor %d: %v, want %v", k, ti, got[ti], want[ti])
			}
		}
	}
}

// The sparse delta's output and gradients against finite differences.
func TestDeltaGradCheck(t *testing.T) {
	g := tensor.NewRNG(1)
	w := autograd.Param("w", tensor.New(5, 4).Normal(g, 0, 1), false)
	l := nn.NewLinear("l", w, nil)
	d := sparse.NewDelta("a", l, []int32{0, 3, 6, 7, 13, 19}, []float32{0.5, -1, 2, 0.3, 1, -0.7}, "v", true)
	x := autograd.Param("x", tensor.New(3, 4).Normal(g, 0, 1), true)
	p := &nn.Pass{}
	worst, err := autograd.GradCheck([]*autograd.Var{x, d.Values}, func(tp *autograd.Tape) *autograd.Var {
		q := *p
		q.Tape = tp
		pp, _ := q.Begin(1, "a")
		y := tp.Linear(x, w)
		return d.Apply(pp, l, x, y)
	})
	if err != nil {
		t.Fatalf("gradient check: %v (worst %g)", err, worst)
	}
	// Forward equals the dense W + δ.
	dense := w.Value.Clone()
	for e, ix := range d.Index {
		dense.Data[ix] += d.Values.Value.Data[e]
	}
	pp, _ := p.Begin(1, "a")
	got := d.Apply(pp, l, x, (*autograd.Tape)(nil).Linear(x, w)).Value.Data
	want := (*autograd.Tape)(nil).Linear(x, autograd.Const(dense)).Value.Data
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-5 {
			t.Fatalf("output %d: %v, dense W+δ gives %v", i, got[i], want[i])
		}
	}
}
