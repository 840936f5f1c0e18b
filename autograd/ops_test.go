package autograd

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

func TestGradArith(t *testing.T) {
	g := tensor.NewRNG(2)
	a, b := randVar(g, true, 4, 13), randVar(g, true, 4, 13)
	bias, bias2 := randVar(g, true, 13), randVar(g, true, 1, 13)
	c := Const(tensor.New(4, 13).Normal(g, 0, 1))
	in := []*Var{a, b, bias, bias2}
	checkGrad(t, "Add", in, func(tp *Tape) *Var { return tp.Add(a, b) })
	checkGrad(t, "AddConst", in, func(tp *Tape) *Var { return tp.Add(c, a) })
	checkGrad(t, "AddBroadcast", in, func(tp *Tape) *Var { return tp.Add(a, bias) })
	checkGrad(t, "AddBroadcast1xC", in, func(tp *Tape) *Var { return tp.Add(a, bias2) })
	checkGrad(t, "Mul", in, func(tp *Tape) *Var { return tp.Mul(a, b) })
	checkGrad(t, "MulSelf", in, func(tp *Tape) *Var { return tp.Mul(a, a) })
	checkGrad(t, "MulBroadcast", in, func(tp *Tape) *Var { return tp.Mul(a, bias) })
	checkGrad(t, "Scale", in, func(tp *Tape) *Var { return tp.Scale(a, -1.7) })
	checkGrad(t, "Sum", in, func(tp *Tape) *Var { return tp.Sum(tp.Mul(a, b)) })
	checkGrad(t, "Mean", in, func(tp *Tape) *Var { return tp.Mean(tp.Mul(a, a)) })
	checkGrad(t, "Reshape", in, func(tp *Tape) *Var {
		return tp.Mul(tp.Reshape(a, 13, -1), tp.Reshape(b, 13, 4))
	})
	// Many rows, so the broadcast gradient is summed over several blocks.
	big, vec := randVar(g, true, 70, 5), randVar(g, true, 5)
	checkGrad(t, "MulBroadcastManyRows", []*Var{big, vec}, func(tp *Tape) *Var { return tp.Mul(big, vec) })

	// Values against direct formulas.
	s := NewTape().Sum(a).Value.Data[0]
	var want float64
	for _, v := range a.Value.Data {
		want += float64(v)
	}
	if math.Abs(float64(s)-want) > 1e-5 {
		t.Errorf("Sum = %v, want %v", s, want)
	}
	out := (*Tape)(nil).Add(a, bias).Value
	for r := 0; r < 4; r++ {
		for j := 0; j < 13; j++ {
			if out.Data[r*13+j] != a.Value.Data[r*13+j]+bias.Value.Data[j] {
				t.Fatalf("Add broadcast [%d,%d] wrong", r, j)
			}
		}
	}
	if rv := (*Tape)(nil).Reshape(a, 2, 2, 13).Value; &rv.Data[0] != &a.Value.Data[0] || !tensor.SameShape(rv.Shape, []int{2, 2, 13}) {
		t.Errorf("Reshape is not a view with shape [2 2 13]: %v", rv.Shape)
	}
}

func TestGradMatMul(t *testing.T) {
	g := tensor.NewRNG(3)
	x, w := randVar(g, true, 5, 7), randVar(g, true, 6, 7)
	checkGrad(t, "Linear", []*Var{x, w}, func(tp *Tape) *Var { return tp.Linear(x, w) })
	x3 := randVar(g, true, 2, 3, 7)
	checkGrad(t, "Linear3D", []*Var{x3, w}, func(tp *Tape) *Var { return tp.Linear(x3, w) })
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			a, b := randVar(g, true, 4, 5), randVar(g, true, 5, 3)
			if ta {
				a = randVar(g, true, 5, 4)
			}
			if tb {
				b = randVar(g, true, 3, 5)
			}
			checkGrad(t, fmt.Sprintf("MatMul/ta=%v/tb=%v", ta, tb), []*Var{a, b}, func(tp *Tape) *Var { return tp.MatMul(a, b, ta, tb) })
		}
	}
}

func TestGradRMSNorm(t *testing.T) {
	g := tensor.NewRNG(4)
	for _, sh := range [][2]int{{1, 13}, {5, 12}, {70, 6}} {
		x, w := randVar(g, true, sh[0], sh[1]), randVar(g, true, sh[1])
		checkGrad(t, fmt.Sprint(sh), []*Var{x, w}, func(tp *Tape) *Var { return tp.RMSNorm(x, w, 1e-5) })
	}
	// Value against the formula in float64.
	x, w := randVar(g, false, 3, 13), randVar(g, false, 13)
	out := (*Tape)(nil).RMSNorm(x, w, 1e-6).Value
	for r := 0; r < 3; r++ {
		var ss float64
		for j := 0; j < 13; j++ {
			ss += float64(x.Value.Data[r*13+j]) * float64(x.Value.Data[r*13+j])
		}
		rs := 1 / math.Sqrt(ss/13+1e-6)
		for j := 0; j < 13; j++ {
			want := float64(x.Value.Data[r*13+j]) * rs * float64(w.Value.Data[j])
			if d := math.Abs(float64(out.Data[r*13+j]) - want); d > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("RMSNorm[%d,%d] = %v, want %v", r, j, out.Data[r*13+j], want)
			}
		}
	}
}

func TestGradActivations(t *testing.T) {
	g := tensor.NewRNG(5)
	x, u := randVar(g, true, 3, 13), randVar(g, true, 3, 13)
	in := []*Var{x, u}
	checkGrad(t, "SiLU", in, func(tp *Tape) *Var { return tp.SiLU(x) })
	checkGrad(t, "SwiGLU", in, func(tp *Tape) *Var { return tp.SwiGLU(x, u) })
	checkGrad(t, "Softmax", in, func(tp *Tape) *Var { return tp.Softmax(tp.Scale(x, 2)) })
	sm := (*Tape)(nil).Softmax(x).Value
	for r := 0; r < 3; r++ {
		var z float64
		for j := 0; j < 13; j++ {
			z += math.Exp(float64(x.Value.Data[r*13+j]))
		}
		for j := 0; j < 13; j++ {
			want := math.Exp(float64(x.Value.Data[r*13+j])) / z
			if math.Abs(float64(sm.Data[r*13+j])-want) > 1e-6 {
				t.Fatalf("Softmax[%d,%d] = %v, want %v", r, j, sm.Data[r*13+j], want)
			}
		}
	}
	sw := (*Tape)(nil).SwiGLU(x, u).Value
	for i, gv := range x.Value.Data {
		want := float64(gv) / (1 + math.Exp(-float64(gv))) * float64(u.Value.Data[i])
		if math.Abs(float64(sw.Data[i])-want) > 1e-6*math.Max(1, math.Abs(want)) {
			t.Fatalf("SwiGLU[%d] = %v, want %v", i, sw.Data[i], want)
		}
	}
}

func TestDropout(t *testing.T) {
	g := tensor.NewRNG(6)
	x := randVar(g, true, 4, 13)
	checkGrad(t, "grad", []*Var{x}, func(tp *Tape) *Var {
		if tp == nil { // the check's plain forward must use the same mask
			tp = NewTape()
		}
		return tp.Dropout(x, 0.3, 42)
	})
	if (*Tape)(nil).Dropout(x, 0.5, 1) != x || NewTape().Dropout(x, 0, 1) != x {
		t.Error("Dropout with nil tape or p=0 is not the identity")
	}
	big := Param("big", tensor.New(100, 100), true)
	for i := range big.Value.Data {
		big.Value.Data[i] = 1
	}
	out := NewTape().Dropout(big, 0.25, 7).Value
	zeros := 0
	for _, v := range out.Data {
		switch v {
		case 0:
			zeros++
		case 1 / 0.75:
		default:
			t.Fatalf("dropout output %v is neither 0 nor 1/(1-p)", v)
		}
	}
	if zeros < 2300 || zeros > 2700 { // 10000 draws of p=0.25: σ ≈ 43
		t.Errorf("dropped %d of 10000 at p=0.25", zeros)
	}
	other := NewTape().Dropout(big, 0.25, 8).Value
	same := true
	for i := range out.Data {
		same = same && out.Data[i] == other.Data[i]
	}
	if same {
		t.Error("different seeds gave the same mask")
	}
}

func TestGradRows(t *testing.T) {
	g := tensor.NewRNG(7)
	table := randVar(g, true, 9, 13)
	checkGrad(t, "Embedding", []*Var{table}, func(tp *Tape) *Var { return tp.Embedding(table, []int{3, 0, 3, 8, 3}) })
	checkGrad(t, "GatherRows", []*Var{table}, func(tp *Tape) *Var { return tp.GatherRows(table, []int{8, 1, 1}) })
	a, b := randVar(g, true, 2*3, 5), randVar(g, true, 2*2, 5)
	shared := randVar(g, true, 3, 5)
	in := []*Var{a, b, shared}
	checkGrad(t, "ConcatSeq", in, func(tp *Tape) *Var { return tp.ConcatSeq(a, b, 2, false) })
	checkGrad(t, "ConcatSeqBroadcast", in, func(tp *Tape) *Var { return tp.ConcatSeq(shared, b, 2, true) })
	sub := randVar(g, true, 2, 5)
	checkGrad(t, "ScatterRows", []*Var{a, sub}, func(tp *Tape) *Var { return tp.ScatterRows(a, sub, []int{4, 1}) })
	if got := (*Tape)(nil).ScatterRows(a, sub, []int{4, 1}).Value; got.Data[4*5] != sub.Value.Data[0] || got.Data[5] != sub.Value.Data[5] || got.Data[0] != a.Value.Data[0] {
		t.Error("ScatterRows did not put sub's rows at 4 and 1 and keep the others")
	}

	// ConcatSeq layout: sequence s is a's rows for s, then b's.
	out := (*Tape)(nil).ConcatSeq(shared, b, 2, true).Value
	for s := 0; s < 2; s++ {
		for i := 0; i < 5; i++ {
			want := []*tensor.Tensor{shared.Value, shared.Value, shared.Value, b.Value, b.Value}[i]
			wr := []int{0, 1, 2, 2 * s, 2*s + 1}[i]
			for j := 0; j < 5; j++ {
				if out.Data[(s*5+i)*5+j] != want.Data[wr*5+j] {
					t.Fatalf("ConcatSeq sequence %d row %d col %d wrong", s, i, j)
				}
			}
		}
	}
	// A frozen bf16 table: rows widened exactly.
	half := Param("emb", table.Value.ToBF16(), false)
	e := (*Tape)(nil).Embedding(half, []int{4, 2}).Value
	wide := table.Value.ToBF16().ToF32()
	for j := 0; j < 13; j++ {
		if e.Data[j] != wide.Data[4*13+j] || e.Data[13+j] != wide.Data[2*13+j] {
			t.Fatal("bf16 embedding rows differ from the widened table")
		}
	}
}

func TestGradCrossEntropy(t *testing.T) {
	g := tensor.NewRNG(8)
	logits := randVar(g, true, 5, 11)
	targets := []int{3, IgnoreIndex, 0, 10, 3}
	checkGrad(t, "CrossEntropy", []*Var{logits}, func(tp *Tape) *Var { return tp.CrossEntropy(logits, targets) })
	// Value against float64 log-softmax.
	got := (*Tape)(nil).CrossEntropy(logits, targets).Value.Data[0]
	var want float64
	for r, tg := range targets {
		if tg == IgnoreIndex {
			continue
		}
		var z float64
		for j := 0; j < 11; j++ {
			z += math.Exp(float64(logits.Value.Data[r*11+j]))
		}
		want += math.Log(z) - float64(logits.Value.Data[r*11+tg])
	}
	want /= 4
	if math.Abs(float64(got)-want) > 1e-5 {
		t.Errorf("CrossEntropy = %v, want %v", got, want)
	}
	all := []int{IgnoreIndex, IgnoreIndex, IgnoreIndex, IgnoreIndex, IgnoreIndex}
	if l := (*Tape)(nil).CrossEntropy(logits, all).Value.Data[0]; l != 0 {
		t.Errorf("all-ignored loss = %v, want 0", l)
	}
}

func TestLMHeadCrossEntropy(t *testing.T) {
	g := tensor.NewRNG(9)
	h, w := randVar(g, true, 7, 13), randVar(g, true, 17, 13)
	targets := []int{1, IgnoreIndex, 16, 0, IgnoreIndex, 5, 5}
	for _, chunk := range []int{1, 2, 64} {
		checkGrad(t, fmt.Sprint("chunk", chunk), []*Var{h, w}, func(tp *Tape) *Var { return tp.LMHeadCrossEntropy(h, w, targets, chunk) })
	}
	// Same loss and gradients as Linear followed by CrossEntropy.
	grads := func(fused bool) []float32 {
		h.Grad, w.Grad = nil, nil
		tp := NewTape()
		var loss *Var
		if fused {
			loss = tp.LMHeadCrossEntropy(h, w, targets, 3)
		} else {
			loss = tp.CrossEntropy(tp.Linear(h, w), targets)
		}
		l := loss.Value.Data[0]
		tp.Backward(loss)
		return append(append([]float32{l}, h.Grad.Data...), w.Grad.Data...)
	}
	a, b := grads(true), grads(false)
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-5 {
			t.Fatalf("fused vs unfused element %d: %v vs %v", i, a[i], b[i])
		}
	}
	// A frozen head forms dh in the forward pass (online softmax): the same
	// dh as the unfused ops, for row tiles and vocabulary blocks of every
	// size, with a loss gradient other than 1.
	frozen := Param("lm_head", w.Value, false)
	dhOf := func(chunk int) []float32 {
		h.Grad = nil
		tp := NewTape()
		if chunk == 0 {
			tp.Backward(tp.Scale(tp.CrossEntropy(tp.Linear(h, frozen), targets), 0.5))
		} else {
			tp.Backward(tp.Scale(tp.LMHeadCrossEntropy(h, frozen, targets, chunk), 0.5))
		}
		return h.Grad.Data
	}
	want := dhOf(0)
	for _, chunk := range []int{1, 2, 3, 64} {
		for i, v := range dhOf(chunk) {
			if math.Abs(float64(v-want[i])) > 1e-6 {
				t.Fatalf("frozen head, chunk %d: dh[%d] = %v, unfused %v", chunk, i, v, want[i])
			}
		}
	}
	// A frozen bf16 head: no weight gradient; dh as the unfused ops give
	// with the same bf16 weight, and as the widened weight gives. The bf16
	// kernels may round their float32 operand to bf16 (VDPBF16PS, AMX), so
	// the bound is bf16's precision (2⁻⁹ per rounded operand, summed over the
	// vocabulary with cancellation), not float32's.
	wh := Param("lm_head", w.Value.ToBF16(), false)
	wf := Param("lm_head32", w.Value.ToBF16().ToF32(), false)
	var dh [3][]float32
	for i, ww := range []*Var{wh, wf, wh} {
		h.Grad = nil
		tp := NewTape()
		if i < 2 {
			tp.Backward(tp.LMHeadCrossEntropy(h, ww, targets, 4))
		} else {
			tp.Backward(tp.CrossEntropy(tp.Linear(h, ww), targets))
		}
		dh[i] = h.Grad.Data
		if ww.Grad != nil {
			t.Error("frozen head got a gradient")
		}
	}
	var scale float64 // the largest |dh|: bf16 errors scale with it
	for _, v := range dh[1] {
		scale = max(scale, math.Abs(float64(v)))
	}
	for i := range dh[0] {
		if d := math.Abs(float64(dh[0][i] - dh[2][i])); d > 0.02*scale {
			t.Fatalf("bf16 head dh[%d] = %v fused, %v unfused (max |dh| %v)", i, dh[0][i], dh[2][i], scale)
		}
		if d := math.Abs(float64(dh[0][i] - dh[1][i])); d > 0.02*scale {
			t.Fatalf("bf16 head dh[%d] = %v, widened %v (max |dh| %v)", i, dh[0][i], dh[1][i], scale)
		}
	}
}

// LoRA on a frozen weight: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ. W must get no gradient
// and no weight-gradient GEMM; A and B get correct ones.
func TestFrozenWeightSkipsGEMM(t *testing.T) {
	g := tensor.NewRNG(10)
	x := randVar(g, false, 6, 13)
	wv := randVar(g, false, 9, 13)
	a, b := randVar(g, true, 3, 13), randVar(g, true, 9, 3)
	lora := func(tp *Tape) *Var {
		return tp.Add(tp.Linear(x, wv), tp.Scale(tp.Linear(tp.Linear(x, a), b), 0.5))
	}
	before := WeightGradGEMMs()
	tp := NewTape()
	tp.Backward(tp.Sum(lora(tp)))
	if n := WeightGradGEMMs() - before; n != 2 {
		t.Errorf("%d weight-gradient GEMMs ran, want 2 (A and B only)", n)
	}
	if wv.Grad != nil {
		t.Error("frozen W has a gradient")
	}
	if a.Grad == nil || b.Grad == nil {
		t.Fatal("A or B has no gradient")
	}
	checkGrad(t, "lora", []*Var{x, wv, a, b}, lora)
	// The same graph with W trainable runs three.
	wv.SetTrainable(true)
	before = WeightGradGEMMs()
	tp.Backward(tp.Sum(lora(tp)))
	if n := WeightGradGEMMs() - before; n != 3 {
		t.Errorf("%d weight-gradient GEMMs with W trainable, want 3", n)
	}
}

// Shape bugs panic with a message naming both shapes.
func TestShapeMismatchPanics(t *testing.T) {
	g := tensor.NewRNG(11)
	a, b := randVar(g, true, 2, 3), randVar(g, true, 3, 2)
	v4 := randVar(g, true, 4)
	cases := []struct {
		name, want string
		f          func()
	}{
		{"Add", "[2 3] vs [3 2]", func() { NewTape().Add(a, b) }},
		{"Mul", "[2 3] vs [4]", func() { NewTape().Mul(a, v4) }},
		{"SwiGLU", "[2 3] vs [3 2]", func() { NewTape().SwiGLU(a, b) }},
		{"RMSNorm", "[2 3] vs [4]", func() { NewTape().RMSNorm(a, v4, 1e-5) }},
		{"Linear", "[2 3] vs [3 2]", func() { NewTape().Linear(a, b) }},
		{"Reshape", "[2 3]", func() { NewTape().Reshape(a, 4, 2) }},
		{"Attention", "[2 3] vs [2 4]", func() {
			NewTape().Attention(a, a, a, nil, nil, AttnShape{Batch: 1, T: 2, Heads: 2, KVHeads: 1, HeadDim: 2}, nil)
		}},
		{"LMHead", "[2 3] vs [3 2]", func() { NewTape().LMHeadCrossEntropy(a, b, []int{0, 1}, 2) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				r := recover()
				msg := fmt.Sprint(r)
				if r == nil || !strings.Contains(msg, c.want) {
					t.Errorf("panic %q, want one naming %s", msg, c.want)
				}
			}()
			c.f()
		})
	}
}
