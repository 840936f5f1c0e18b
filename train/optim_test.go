package train

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// TestAdamWTwoSteps works torch.optim.AdamW's formulas by hand for one
// weight: p0 = 1, gradients 0.5 then −0.25, learning rates 0.1 then 0.05,
// defaults β = (0.9, 0.999), ε = 1e-8, wd = 0.01.
func TestAdamWTwoSteps(t *testing.T) {
	w := param("w", []float32{1}, []float32{0.5}, true)
	frozen := param("frozen", []float32{3}, nil, false)
	ps := nn.Params{w, frozen, {Name: "tied", Var: w.Var}}
	opt, err := NewAdamW(ps, DefaultAdamW())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(opt.Params()); n != 1 {
		t.Fatalf("optimizer trains %d parameters, want 1 (frozen skipped, tied once)", n)
	}

	// Step 1: decay 1−0.1·0.01 = 0.999; m = 0.1·0.5 = 0.05; v = 0.001·0.25 =
	// 0.00025; m̂ = 0.05/0.1 = 0.5; v̂ = 0.00025/0.001 = 0.25, √v̂ = 0.5.
	// p = 0.999 − 0.1·0.5/(0.5+1e-8) = 0.899000002.
	opt.Step(0.1)
	p1 := 0.999 - 0.1*0.5/(0.5+1e-8)
	near(t, "p after step 1", float64(w.Var.Value.Data[0]), p1, 1e-7)
	near(t, "p after step 1 (literal)", p1, 0.899000002, 1e-12)
	st := opt.State().Params["w"]
	near(t, "exp_avg after step 1", float64(st.Buffers["exp_avg"].Data[0]), 0.05, 1e-7)
	near(t, "exp_avg_sq after step 1", float64(st.Buffers["exp_avg_sq"].Data[0]), 0.00025, 1e-7)

	// Step 2 with g = −0.25, lr = 0.05: decay 1−0.05·0.01 = 0.9995;
	// m = 0.9·0.05 + 0.1·(−0.25) = 0.02; v = 0.999·0.00025 + 0.001·0.0625 =
	// 0.00031225; bias corrections 1−0.9² = 0.19 and 1−0.999² = 0.001999.
	w.Var.Grad.Data[0] = -0.25
	opt.Step(0.05)
	p2 := p1*0.9995 - 0.05/0.19*0.02/(math.Sqrt(0.00031225)/math.Sqrt(0.001999)+1e-8)
	near(t, "p after step 2", float64(w.Var.Value.Data[0]), p2, 1e-6)
	near(t, "p after step 2 (literal)", p2, 0.8852336503529, 1e-12)
	st = opt.State().Params["w"]
	if st.Step != 2 {
		t.Errorf("step count %d, want 2", st.Step)
	}
	near(t, "exp_avg after step 2", float64(st.Buffers["exp_avg"].Data[0]), 0.02, 1e-7)
	near(t, "exp_avg_sq after step 2", float64(st.Buffers["exp_avg_sq"].Data[0]), 0.00031225, 1e-7)
	if frozen.Var.Value.Data[0] != 3 || frozen.Var.Grad != nil {
		t.Error("the frozen parameter changed")
	}
}

// adamwRef is AdamW in float64 for one element sequence of gradients.
func adamwRef(p float64, grads, lrs []float64, b1, b2, eps, wd float64) float64 {
	var m, v float64
	for i, g := range grads {
		t := float64(i + 1)
		p *= 1 - lrs[i]*wd
		m = b1*m + (1-b1)*g
		v = b2*v + (1-b2)*g*g
		p -= lrs[i] / (1 - math.Pow(b1, t)) * m / (math.Sqrt(v)/math.Sqrt(1-math.Pow(b2, t)) + eps)
	}
	return p
}

// TestAdamWMatchesReference runs three steps over a tensor bigger than one
// parallel segment, on 1 and 4 threads: the two runs must agree bit for bit
// and with a float64 reference to float32 accuracy. NoDecay exempts one
// parameter.
func TestAdamWMatchesReference(t *testing.T) {
	const rows, cols, steps = 70, 1000, 3 // 70000 elements: three segments
	run := func(threads int) (nn.Params, [][]float64, [][]float64) {
		defer parallel.SetThreads(parallel.SetThreads(threads))
		rng := tensor.NewRNG(7)
		ps := nn.Params{randParam("big", rng, rows, cols), randParam("norm.weight", rng, 1, 5)}
		init := [][]float64{toF64(ps[0].Var.Value.Data), toF64(ps[1].Var.Value.Data)}
		cfg := DefaultAdamW()
		cfg.WeightDecay = 0.1
		cfg.NoDecay = func(name string) bool { return strings.HasSuffix(name, "norm.weight") }
		opt, err := NewAdamW(ps, cfg)
		if err != nil {
			t.Fatal(err)
		}
		grads := [][]float64{}
		for s := 0; s < steps; s++ {
			if s > 0 {
				for _, p := range ps {
					p.Var.Grad.Normal(rng, 0, 1)
				}
			}
			grads = append(grads, append(toF64(ps[0].Var.Grad.Data), toF64(ps[1].Var.Grad.Data)...))
			opt.Step(1e-2 * float64(s+1))
		}
		return ps, init, grads
	}
	one, init, grads := run(1)
	four, _, _ := run(4)
	for i := range one {
		if !tensor.SameBits(one[i].Var.Value.Data, four[i].Var.Value.Data) {
			t.Fatalf("%s differs between 1 and 4 threads", one[i].Name)
		}
	}
	lrs := []float64{1e-2, 2e-2, 3e-2}
	n0 := rows * cols
	for _, k := range []int{0, 1, 12345, 33000, n0 - 1, n0, n0 + 4} {
		pi, off, wd := 0, k, 0.1
		if k >= n0 {
			pi, off, wd = 1, k-n0, 0
		}
		gs := []float64{grads[0][k], grads[1][k], grads[2][k]}
		want := adamwRef(init[pi][off], gs, lrs, 0.9, 0.999, 1e-8, wd)
		near(t, fmt.Sprintf("%s[%d]", one[pi].Name, off), float64(one[pi].Var.Value.Data[off]), want, 2e-6)
	}
}

func toF64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

func itoa(i int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(i)) }

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

// TestAdamWSkipsMissingGrad: a parameter no gradient reached neither moves
// nor counts a step, as PyTorch skips .grad None.
func TestAdamWSkipsMissingGrad(t *testing.T) {
	a := param("a", []float32{1, 2}, []float32{1, 1}, true)
	b := param("b", []float32{5}, nil, true)
	opt, err := NewAdamW(nn.Params{a, b}, DefaultAdamW())
	if err != nil {
		t.Fatal(err)
	}
	opt.Step(0.1)
	st := opt.State()
	if st.Params["a"].Step != 1 || st.Params["b"].Step != 0 || len(st.Params["b"].Buffers) != 0 {
		t.Errorf("steps a=%d b=%d (b buffers %d), want 1, 0, 0", st.Params["a"].Step, st.Params["b"].Step, len(st.Params["b"].Buffers))
	}
	if b.Var.Value.Data[0] != 5 {
		t.Errorf("b moved to %v without a gradient", b.Var.Value.Data[0])
	}
	opt.ZeroGrad()
	if a.Var.Grad.Data[0] != 0 || a.Var.Grad.Data[1] != 0 {
		t.Error("ZeroGrad left a gradient")
	}
}

func TestAdamWConfigErrors(t *testing.T) {
	for _, c := range []AdamWConfig{
		{Beta1: 1, Beta2: 0.9},
		{Beta1: 0.9, Beta2: -0.1},
		{Beta1: 0.9, Beta2: 0.9, Eps: math.NaN()},
		{Beta1: 0.9, Beta2: 0.9, WeightDecay: -1},
	} {
		if _, err := NewAdamW(nil, c); err == nil {
			t.Errorf("NewAdamW(%+v) accepted a bad config", c)
		}
	}
}

// TestSGDTwoSteps works torch.optim.SGD by hand: p0 = 1, gradients 0.5 then
// −0.25, lr 0.1, momentum 0.9, weight decay 0.1.
func TestSGDTwoSteps(t *testing.T) {
	for _, tc := range []struct {
		cfg    SGDConfig
		p1, p2 float64
	}{
		// g = 0.5+0.1·1 = 0.6, b = 0.6, p = 1−0.06 = 0.94;
		// g = −0.25+0.1·0.94 = −0.156, b = 0.54−0.156 = 0.384, p = 0.94−0.0384.
		{SGDConfig{Momentum: 0.9, WeightDecay: 0.1}, 0.94, 0.9016},
		// nesterov: g + 0.9·b: 0.6+0.54 = 1.14, p = 0.886; g = −0.25+0.0886 =
		// −0.1614, b = 0.54−0.1614 = 0.3786, g = −0.1614+0.34074 = 0.17934.
		{SGDConfig{Momentum: 0.9, WeightDecay: 0.1, Nesterov: true}, 0.886, 0.886 - 0.017934},
		// plain: p = 1 − 0.05; p = 0.95 + 0.025.
		{SGDConfig{}, 0.95, 0.975},
		// dampening 0.5 applies from the second step: b = 0.6, then
		// 0.54 + 0.5·(−0.156) = 0.462.
		{SGDConfig{Momentum: 0.9, Dampening: 0.5, WeightDecay: 0.1}, 0.94, 0.94 - 0.0462},
	} {
		w := param("w", []float32{1}, []float32{0.5}, true)
		opt, err := NewSGD(nn.Params{w}, tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		opt.Step(0.1)
		near(t, "SGD step 1", float64(w.Var.Value.Data[0]), tc.p1, 1e-6)
		w.Var.Grad.Data[0] = -0.25
		opt.Step(0.1)
		near(t, "SGD step 2", float64(w.Var.Value.Data[0]), tc.p2, 1e-6)
	}
	if _, err := NewSGD(nil, SGDConfig{Nesterov: true}); err == nil {
		t.Error("nesterov without momentum accepted")
	}
}

// TestOptimizerStateRoundTrip: a fresh optimizer loaded with another's state
// continues exactly as the original does; mismatched states are refused.
func TestOptimizerStateRoundTrip(t *testing.T) {
	mk := func() nn.Params {
		rng := tensor.NewRNG(3)
		return nn.Params{randParam("a", rng, 3, 4), randParam("b", rng, 1, 2)}
	}
	for _, kind := range []string{"adamw", "sgd"} {
		newOpt := func(ps nn.Params) Optimizer {
			if kind == "adamw" {
				o, _ := NewAdamW(ps, DefaultAdamW())
				return o
			}
			o, _ := NewSGD(ps, SGDConfig{Momentum: 0.9})
			return o
		}
		ps1, ps2 := mk(), mk()
		o1 := newOpt(ps1)
		o1.Step(0.01)
		o2 := newOpt(ps2)
		if err := o2.LoadState(o1.State()); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		for i := range ps2 { // same parameters as o1 has now
			copy(ps2[i].Var.Value.Data, ps1[i].Var.Value.Data)
		}
		o1.Step(0.02)
		o2.Step(0.02)
		for i := range ps1 {
			if !tensor.SameBits(ps1[i].Var.Value.Data, ps2[i].Var.Value.Data) {
				t.Errorf("%s: %s diverged after LoadState", kind, ps1[i].Name)
			}
		}

		st := o1.State()
		delete(st.Params, "b")
		if err := o2.LoadState(st); err == nil || !strings.Contains(err.Error(), `"b"`) {
			t.Errorf("%s: missing parameter: err %v", kind, err)
		}
		st = o1.State()
		st.Params["c"] = &ParamState{}
		if err := o2.LoadState(st); err == nil || !strings.Contains(err.Error(), `"c"`) {
			t.Errorf("%s: extra parameter: err %v", kind, err)
		}
		st = o1.State()
		for name := range st.Params["a"].Buffers {
			st.Params["a"].Buffers[name] = tensor.New(4, 3)
		}
		if err := o2.LoadState(st); err == nil || !strings.Contains(err.Error(), "[3 4]") {
			t.Errorf("%s: wrong buffer shape: err %v", kind, err)
		}
	}
	a, _ := NewAdamW(mk(), DefaultAdamW())
	s, _ := NewSGD(mk(), SGDConfig{})
	if err := a.LoadState(s.State()); err == nil {
		t.Error("AdamW accepted SGD state")
	}
}

// MoveEntries hands each entry the moments of the entry it names, and
// fresh (zero) moments for −1.
func TestMoveEntries(t *testing.T) {
	p := autograd.Param("p", tensor.FromData([]float32{1, 2, 3}, 3), true)
	ps := nn.Params{{Name: "p", Var: p}}
	opt, err := NewAdamW(ps, DefaultAdamW())
	if err != nil {
		t.Fatal(err)
	}
	copy(p.GradBuf().Data, []float32{0.1, 0.2, 0.3})
	opt.Step(1e-2)
	st := opt.State().Params["p"]
	m := append([]float32(nil), st.Buffers["exp_avg"].Data...)
	if err := opt.MoveEntries("p", []int32{2, -1, 0}); err != nil {
		t.Fatal(err)
	}
	got := opt.State().Params["p"].Buffers["exp_avg"].Data
	if got[0] != m[2] || got[1] != 0 || got[2] != m[0] {
		t.Fatalf("moved moments %v from %v", got, m)
	}
	if opt.MoveEntries("q", []int32{0}) == nil || opt.MoveEntries("p", []int32{0}) == nil || opt.MoveEntries("p", []int32{0, 1, 5}) == nil {
		t.Fatal("a bad move was accepted")
	}
}
