package autograd

import (
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

// An intermediate's gradient goes back to the tape once its backward has run
// and is handed, zeroed, to the next gradient of the same size; the leaf
// keeps its own buffer and the right value.
func TestTapeRecyclesIntermediateGradients(t *testing.T) {
	g := tensor.NewRNG(4)
	x := randVar(g, true, 3, 5)
	tp := NewTape()
	a := tp.Scale(x, 2)
	b := tp.Scale(a, 3)
	loss := tp.Sum(tp.Mul(b, b))
	var seen []*float32
	tp.backward = append(tp.backward, nil) // replaced below: observe a's backward
	copy(tp.backward[1:], tp.backward[:len(tp.backward)-1])
	tp.backward[0] = func() {
		if a.Grad != nil {
			t.Error("a's gradient was not released after its backward")
		}
		// mul's gradient buffer went to a, then came back with b's.
		if n := len(tp.free[15]); n != 2 {
			t.Errorf("%d released 15-element buffers, want 2", n)
		}
		r := tp.zeros([]int{5, 3})
		seen = append(seen, &r.Data[0])
		for _, v := range r.Data {
			if v != 0 {
				t.Fatal("a recycled buffer was not zeroed")
			}
		}
	}
	tp.Backward(loss)
	if len(seen) != 1 {
		t.Fatal("the probe did not run")
	}
	if x.Grad == nil {
		t.Fatal("the leaf lost its gradient")
	}
	if &x.Grad.Data[0] == seen[0] {
		t.Error("the leaf's gradient buffer was handed out again")
	}
	for i, v := range x.Value.Data {
		if want := 2 * 36 * v; !near(x.Grad.Data[i], want) {
			t.Fatalf("dx[%d] = %v, want %v", i, x.Grad.Data[i], want)
		}
	}
}

func near(a, b float32) bool {
	d := a - b
	return d < 1e-4*(1+abs32(b)) && -d < 1e-4*(1+abs32(b))
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// DropUnsaved lets go of exactly the values no backward reads (a frozen
// product's input, a sum's operands, a rotation's input, SwiGLU's output)
// and keeps the rest, and the gradients are those of a tape that kept
// everything.
func TestDropUnsaved(t *testing.T) {
	g := tensor.NewRNG(8)
	x := randVar(g, true, 6, 8)
	norm := randVar(g, true, 8)
	wg, wu, wd := randVar(g, false, 10, 8), randVar(g, false, 10, 8), randVar(g, false, 8, 10)
	a := randVar(g, true, 4, 8) // a trainable product reading its input
	run := func(drop bool) (map[string]*Var, []float32, []float32) {
		x.ZeroGrad()
		a.ZeroGrad()
		tp := NewTape()
		mark := tp.Mark()
		h := tp.RMSNorm(x, norm, 1e-5)
		gate, up := tp.Linear(h, wg), tp.Linear(h, wu)
		s := tp.SwiGLU(gate, up)
		down := tp.Linear(s, wd)
		r := tp.Add(x, down)
		la := tp.Linear(r, a)
		out := tp.Add(r, tp.Reshape(tp.Linear(la, randVar(g, false, 8, 4)), 6, 8))
		vars := map[string]*Var{"h": h, "gate": gate, "up": up, "swiglu": s, "down": down, "residual": r, "la": la}
		if drop {
			tp.DropUnsaved(mark, out)
		}
		tp.Backward(tp.Sum(tp.Mul(out, out)))
		return vars, append([]float32(nil), x.Grad.Data...), append([]float32(nil), a.Grad.Data...)
	}
	g = tensor.NewRNG(9)
	_, wantX, wantA := run(false)
	g = tensor.NewRNG(9)
	vars, gotX, gotA := run(true)
	dropped := map[string]bool{"h": true, "swiglu": true, "down": true, "la": true}
	for name, v := range vars {
		if got := v.Value.Data == nil; got != dropped[name] {
			t.Errorf("%s: dropped %v, want %v", name, got, dropped[name])
		}
	}
	for i := range wantX {
		if gotX[i] != wantX[i] {
			t.Fatalf("dx[%d] = %v after dropping, %v keeping everything", i, gotX[i], wantX[i])
		}
	}
	for i := range wantA {
		if gotA[i] != wantA[i] {
			t.Fatalf("da[%d] = %v after dropping, %v keeping everything", i, gotA[i], wantA[i])
		}
	}
}
