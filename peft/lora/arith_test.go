package lora

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// randomAdapter makes a LoRA adapter's tensors for two modules of
// hand-picked shapes, one of them optional.
func randomAdapter(t *testing.T, name string, r int, alpha float64, rslora bool, seed uint64, withV bool) WeightedAdapter {
	t.Helper()
	c := NewConfig()
	c.R, c.LoraAlpha, c.UseRSLoRA = r, alpha, rslora
	c.BaseModelNameOrPath = "stories260K"
	g := tensor.NewRNG(seed)
	ts := map[string]*tensor.Tensor{}
	mods := map[string][2]int{"model.layers.0.self_attn.q_proj": {6, 5}}
	if withV {
		mods["model.layers.1.self_attn.v_proj"] = [2]int{4, 5}
	}
	for m, s := range mods {
		ts[peft.SavePrefix+m+".lora_A.weight"] = tensor.New(r, s[1]).Normal(g, 0, 1)
		ts[peft.SavePrefix+m+".lora_B.weight"] = tensor.New(s[0], r).Normal(g, 0, 1)
	}
	return WeightedAdapter{Name: name, Cfg: c, Tensors: ts}
}

// update is Σ_i w_i·s_i·B_i·A_i of one module over the inputs that have it.
func update(ins []WeightedAdapter, module string) []float64 {
	var d []float64
	for _, in := range ins {
		a, ok := in.Tensors[peft.SavePrefix+module+".lora_A.weight"]
		if !ok {
			continue
		}
		b := in.Tensors[peft.SavePrefix+module+".lora_B.weight"]
		r, n, out := a.Shape[0], a.Shape[1], b.Shape[0]
		s := in.Cfg.Scale(r, in.Cfg.LoraAlpha)
		if d == nil {
			d = make([]float64, out*n)
		}
		for j := 0; j < out; j++ {
			for c := 0; c < n; c++ {
				for q := 0; q < r; q++ {
					d[j*n+c] += in.Weight * s * float64(b.Data[j*r+q]) * float64(a.Data[q*n+c])
				}
			}
		}
	}
	return d
}

// applied is s·B·A of the combined adapter's module.
func applied(t *testing.T, c *Config, ps nn.Params, module string) []float64 {
	t.Helper()
	a, okA := ps.Get(peft.SavePrefix + module + ".lora_A.weight")
	b, okB := ps.Get(peft.SavePrefix + module + ".lora_B.weight")
	if !okA || !okB {
		t.Fatalf("the combined adapter lacks %s", module)
	}
	s := c.Scale(c.R, c.LoraAlpha)
	if s != 1 {
		t.Errorf("the combined adapter's scale is %v, want 1", s)
	}
	r, n, out := a.Value.Shape[0], a.Value.Shape[1], b.Value.Shape[0]
	d := make([]float64, out*n)
	for j := 0; j < out; j++ {
		for k := 0; k < n; k++ {
			for q := 0; q < r; q++ {
				d[j*n+k] += s * float64(b.Value.Data[j*r+q]) * float64(a.Value.Data[q*n+k])
			}
		}
	}
	return d
}

func maxDiff64(a, b []float64) (d, scale float64) {
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		scale = math.Max(scale, math.Abs(b[i]))
	}
	return d, scale
}

// linear, cat and svd (at a sufficient rank) give exactly Σ w_i·s_i·B_i·A_i:
// with negative weights, different ranks, an rsLoRA input (whose scale
// must not leak into the result) and a module only one input has.
func TestCombinedUpdateIsTheWeightedSum(t *testing.T) {
	ins := []WeightedAdapter{
		randomAdapter(t, "a", 2, 4, false, 1, true),
		randomAdapter(t, "b", 3, 6, true, 2, false),
		randomAdapter(t, "c", 2, 1, false, 3, true),
	}
	ins[0].Weight, ins[1].Weight, ins[2].Weight = 0.7, -0.4, 1.3
	for _, kind := range []string{"linear", "cat", "svd"} {
		o := CombineOptions{Combination: kind, SVDRank: 7}
		c, ps, err := AddWeighted(ins, o)
		if err != nil {
			t.Fatal(err)
		}
		if c.UseRSLoRA || c.LoraAlpha != float64(c.R) {
			t.Errorf("%s: r %d, lora_alpha %v, use_rslora %v: the scale must be 1", kind, c.R, c.LoraAlpha, c.UseRSLoRA)
		}
		for _, m := range []string{"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"} {
			d, scale := maxDiff64(applied(t, c, ps, m), update(ins, m))
			if d > 1e-5*scale {
				t.Errorf("%s, %s: combined update differs from Σ w·s·B·A by %g (scale %g)", kind, m, d, scale)
			}
		}
	}
	// svd at a lower rank is the best rank-k approximation: below the
	// exact sum's error, and s applied once (a wrong factor would miss by
	// far more).
	c, ps, err := AddWeighted(ins, CombineOptions{Combination: "svd"})
	if err != nil {
		t.Fatal(err)
	}
	if c.R != 3 {
		t.Errorf("svd without --svd-rank: rank %d, want the largest input rank 3", c.R)
	}
	d, scale := maxDiff64(applied(t, c, ps, "model.layers.0.self_attn.q_proj"), update(ins, "model.layers.0.self_attn.q_proj"))
	if d > scale {
		t.Errorf("svd at rank 3 misses the sum by %g (its largest entry %g)", d, scale)
	}
}

// The combine operators on hand-made tensors (METHODS.md §23).
func TestCombineOperators(t *testing.T) {
	eq := func(what string, got []float32, want ...float32) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	eq("magnitude prune 0.5", MagnitudePrune([]float32{1, -4, 2, -3}, 0.5), 0, -4, 0, -3)
	eq("magnitude prune 0.5 of 5 keeps ⌊2.5⌋", MagnitudePrune([]float32{1, -4, 2, -3, 0.5}, 0.5), 0, -4, 0, -3, 0)
	eq("magnitude prune ≥ 1", MagnitudePrune([]float32{1, -4}, 1.5), 1, -4)
	eq("linear with a negative weight", Linear([][]float32{{1, 2}, {3, 4}}, []float64{2, -1}), -1, 0)

	ts := [][]float32{{2, -1, 0, 3, 1}, {-1, -2, 0, 1, -1}, {0, 4, 0, -5, 0}}
	c := []float64{1, 0.5, -1}
	// total: sums 1, 1, 0, -1, 0 → signs +, +, +, −, +.
	got, err := TiesMerge(ts, c, SignTotal)
	if err != nil {
		t.Fatal(err)
	}
	// entry 0: + members T0=2 → 2·1/1 = 2; entry 1: + members T2=4 → −4;
	// entry 2: all zero → 0; entry 3: − member T2=−5 → 5; entry 4: + T0=1 → 1.
	eq("ties total", got, 2, -4, 0, 5, 1)
	got, _ = TiesMerge(ts, c, SignFrequency)
	// frequency: sign sums 0, -1, 0, 1, 0 → +, −, +, +, +.
	// entry 1: − members T0=−1 (c 1), T1=−2 (c .5) → (−1 −1)/2 = −1; entry 3:
	// + members T0=3, T1=1 → (3 + .5)/2 = 1.75.
	eq("ties frequency", got, 2, -1, 0, 1.75, 1)
	if _, err := TiesMerge(ts, c, "median"); err == nil {
		t.Error("an unknown sign method was accepted")
	}

	g := tensor.NewRNG(5)
	x := make([]float32, 20000)
	for i := range x {
		x[i] = 1
	}
	d := RandomPrune(x, 0.25, g)
	var kept int
	for _, v := range d {
		switch v {
		case 4:
			kept++
		case 0:
		default:
			t.Fatalf("DARE value %v: kept entries must be rescaled to 1/density = 4", v)
		}
	}
	if frac := float64(kept) / float64(len(x)); math.Abs(frac-0.25) > 0.02 {
		t.Errorf("DARE kept %.3f of the entries at density 0.25", frac)
	}
	eq("DARE at density ≥ 1", RandomPrune([]float32{1, 2}, 1, g), 1, 2)
	for _, kind := range []string{"ties", "dare_linear", "dare_ties", "magnitude_prune"} {
		if _, err := Combine(kind, ts, c, -0.1, SignTotal, g); err == nil || !strings.Contains(err.Error(), "density") {
			t.Errorf("%s with density −0.1: %v", kind, err)
		}
		got, err := Combine(kind, ts, c, 1, SignTotal, g)
		if err != nil {
			t.Fatal(err)
		}
		want := Linear(ts, c)
		if strings.HasSuffix(kind, "ties") {
			want, _ = TiesMerge(ts, c, SignTotal)
		}
		eq(kind+" at density 1 prunes nothing", got, want...)
	}
}

// The factor-space types combine A with sign(w·s)·√|w·s| and B with
// √|w·s|, each input once.
func TestFactorSpaceWeights(t *testing.T) {
	ins := []WeightedAdapter{randomAdapter(t, "a", 2, 4, false, 1, false), randomAdapter(t, "b", 2, 1, false, 2, false)}
	ins[0].Weight, ins[1].Weight = 0.5, -2
	c, ps, err := AddWeighted(ins, CombineOptions{Combination: "magnitude_prune", Density: 1})
	if err != nil {
		t.Fatal(err)
	}
	if c.R != 2 {
		t.Errorf("rank %d, want 2", c.R)
	}
	m := peft.SavePrefix + "model.layers.0.self_attn.q_proj"
	a, _ := ps.Get(m + ".lora_A.weight")
	b, _ := ps.Get(m + ".lora_B.weight")
	ws := []float64{0.5 * 2, -2 * 0.5} // w·s
	for i := range a.Value.Data {
		want := math.Sqrt(math.Abs(ws[0]))*float64(ins[0].Tensors[m+".lora_A.weight"].Data[i]) - math.Sqrt(math.Abs(ws[1]))*float64(ins[1].Tensors[m+".lora_A.weight"].Data[i])
		if math.Abs(want-float64(a.Value.Data[i])) > 1e-5 {
			t.Fatalf("A[%d] = %v, want %v", i, a.Value.Data[i], want)
		}
	}
	for i := range b.Value.Data {
		want := math.Sqrt(math.Abs(ws[0]))*float64(ins[0].Tensors[m+".lora_B.weight"].Data[i]) + math.Sqrt(math.Abs(ws[1]))*float64(ins[1].Tensors[m+".lora_B.weight"].Data[i])
		if math.Abs(want-float64(b.Value.Data[i])) > 1e-5 {
			t.Fatalf("B[%d] = %v, want %v", i, b.Value.Data[i], want)
		}
	}
}

// Bad input is refused naming what is wrong.
func TestCombineRefusals(t *testing.T) {
	a := randomAdapter(t, "a", 2, 4, false, 1, false)
	b := randomAdapter(t, "b", 3, 4, false, 2, false)
	for _, tc := range []struct {
		ins  []WeightedAdapter
		o    CombineOptions
		want string
	}{
		{[]WeightedAdapter{a, b}, CombineOptions{Combination: "ties", Density: 0.5}, "needs equal ranks"},
		{[]WeightedAdapter{a, b}, CombineOptions{Combination: "dare_linear", Density: -1}, "density"},
		{[]WeightedAdapter{a, b}, CombineOptions{Combination: "average"}, "combination \"average\""},
	} {
		if _, _, err := AddWeighted(tc.ins, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", tc.o.Combination, err, tc.want)
		}
	}
	dora := randomAdapter(t, "dora", 2, 4, false, 3, false)
	dora.Cfg.UseDoRA = true
	if _, _, err := AddWeighted([]WeightedAdapter{a, dora}, CombineOptions{Combination: "linear"}); err == nil || !strings.Contains(err.Error(), "lora_magnitude_vector") {
		t.Errorf("DoRA: %v", err)
	}
	other := randomAdapter(t, "other", 2, 4, false, 4, false)
	other.Cfg.BaseModelNameOrPath = "stories15M"
	if _, _, err := AddWeighted([]WeightedAdapter{a, other}, CombineOptions{Combination: "cat"}); err == nil || !strings.Contains(err.Error(), "base_model_name_or_path") {
		t.Errorf("different bases: %v", err)
	}
	wide := randomAdapter(t, "wide", 2, 4, false, 5, false)
	wide.Tensors[peft.SavePrefix+"model.layers.0.self_attn.q_proj.lora_B.weight"] = tensor.New(9, 2)
	if _, _, err := AddWeighted([]WeightedAdapter{a, wide}, CombineOptions{Combination: "cat"}); err == nil || !strings.Contains(err.Error(), "q_proj") {
		t.Errorf("a module of another shape: %v", err)
	}
	ada := NewConfig()
	ada.PeftType = "ADALORA"
	bad := a
	bad.Cfg = ada
	if _, _, err := AddWeighted([]WeightedAdapter{a, bad}, CombineOptions{Combination: "cat"}); err == nil || !strings.Contains(err.Error(), "ADALORA") {
		t.Errorf("an AdaLoRA input: %v", err)
	}
}
