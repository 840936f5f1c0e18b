package lora

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/tensor"
)

// TestDoRAGolden checks PEFT's DoRA forward, loss and the gradients of A,
// B and the magnitude against PyTorch's, from PEFT's own file layout.
func TestDoRAGolden(t *testing.T) {
	dir := methodtest.LoadGolden(t, "dora").Dir
	pm := methodtest.BaseModel(t)
	a, err := pm.LoadAdapter(dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(a.Method.(*Method).doras); n != 10 {
		t.Fatalf("%d DoRA layers, want 10 (k_proj and gate_proj of 5 layers)", n)
	}
	g := methodtest.LoadGolden(t, filepath.Base(dir))
	methodtest.CheckLogits(t, pm.Base, g)
	methodtest.CheckLossAndGrads(t, pm, a, g)
}

func doraConfig(r int, targets ...string) *Config {
	c := NewConfig()
	c.R, c.LoraAlpha, c.UseDoRA = r, 5, true
	c.TargetModules = peft.ModuleList(targets...)
	c.InitLoraWeights = InitRandom // B ≠ 0
	c.Seed = 3
	return c
}

// perturbMagnitudes moves m off its initial ‖W+sBA‖ so that every term of
// the forward is exercised.
func perturbMagnitudes(m *Method) {
	g := tensor.NewRNG(8)
	for _, ly := range m.doras {
		for i := range ly.m.Value.Data {
			ly.m.Value.Data[i] *= 1 + 0.3*(g.Float32()-0.5)
		}
	}
}

// TestDoRAGradientsMatchFiniteDifferences checks the gradients of A, B and
// m through a small model, without and with dropout, against finite
// differences of the same function with the row norm held at its value
// (the constant PEFT's backward takes it to be).
func TestDoRAGradientsMatchFiniteDifferences(t *testing.T) {
	for _, dropout := range []float64{0, 0.3} {
		pm := smallModel(t)
		c := doraConfig(2, "q_proj", "v_proj")
		c.LoraDropout = dropout
		m := New(c)
		a, err := pm.AddAdapter(peft.DefaultAdapter, m)
		if err != nil {
			t.Fatal(err)
		}
		perturbMagnitudes(m)
		for _, ly := range m.doras {
			ly.fixedNorm = make([]float32, ly.linear.Out())
			RowNorms(ly.linear.Weight.Value, ly.f, ly.fixedNorm)
		}
		var inputs []*autograd.Var
		for _, p := range a.Params {
			inputs = append(inputs, p.Var)
		}
		ids := []int{1, 3, 5, 7, 9, 2}
		worst, err := autograd.GradCheckModel(inputs, func(tp *autograd.Tape) *autograd.Var {
			if tp == nil {
				tp = autograd.NewTape() // a training pass even for the plain evaluations: dropout on
			}
			p := &nn.Pass{Tape: tp, Training: true, Seed: 11}
			h, err := pm.Base.Forward(p, llama.Input{IDs: ids, Batch: 1, T: len(ids)})
			if err != nil {
				t.Fatal(err)
			}
			return pm.Base.Logits(p, h)
		})
		if err != nil {
			t.Errorf("dropout %v: %v", dropout, err)
		}
		t.Logf("dropout %v: worst |numeric − analytic| / tolerance %.3f", dropout, worst)
	}
}

// TestDoRADropoutForm checks one layer's output with dropout against PEFT's
// formula y = W₀x + (g−1)⊙W₀·drop(x) + g⊙s·B·A·drop(x) (the base term keeps
// the undropped x) and without it against g⊙(W₀x + s·B·A·x).
func TestDoRADropoutForm(t *testing.T) {
	pm := smallModel(t)
	c := doraConfig(3, "gate_proj")
	c.LoraDropout = 0.4
	m := New(c)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	perturbMagnitudes(m)
	ly := m.doras[0]
	l := ly.linear
	in, out, r := l.In(), l.Out(), c.R
	rows := 5
	x := tensor.New(rows, in).Normal(tensor.NewRNG(4), 0, 1)
	for _, training := range []bool{false, true} {
		p := &nn.Pass{Tape: autograd.NewTape(), Training: training, Seed: 99}
		p, _ = p.Begin(1, peft.DefaultAdapter)
		got := l.Forward(p, autograd.Const(x)).Value.Data
		xd := append([]float32(nil), x.Data...)
		if training {
			seed := p.SeedFor(l.Name + "/" + ly.Adapter)
			for i := range xd {
				if autograd.DropoutKeep(seed, i, 0.4) {
					xd[i] /= 1 - 0.4
				} else {
					xd[i] = 0
				}
			}
		}
		norm := make([]float32, out)
		RowNorms(l.Weight.Value, ly.f, norm)
		W, A, B := l.Weight.Value.Data, ly.f.A.Value.Data, ly.f.B.Value.Data
		for i := 0; i < rows; i++ {
			for j := 0; j < out; j++ {
				var base, based, lora float64
				for k := 0; k < in; k++ {
					base += float64(W[j*in+k]) * float64(x.Data[i*in+k])
					based += float64(W[j*in+k]) * float64(xd[i*in+k])
				}
				for q := 0; q < r; q++ {
					var ax float64
					for k := 0; k < in; k++ {
						ax += float64(A[q*in+k]) * float64(xd[i*in+k])
					}
					lora += float64(B[j*r+q]) * ax
				}
				g := float64(ly.m.Value.Data[j]) / float64(norm[j])
				want := base + (g-1)*based + g*float64(ly.f.Scale)*lora
				if d := math.Abs(want - float64(got[i*out+j])); d > 1e-5*(1+math.Abs(want)) {
					t.Fatalf("training %v, row %d, out %d: got %v, PEFT's form gives %v", training, i, j, got[i*out+j], want)
				}
			}
		}
	}
}

// TestDoRAMergeUnmerge folds DoRA into float32 and bf16 bases: merged
// logits equal unmerged (float32: within 1e-4; bf16: the merged weight is
// the float32 merge rounded once), and unmerge restores the weights.
func TestDoRAMergeUnmerge(t *testing.T) {
	ids := []int{1, 328, 384, 353, 219, 207, 297, 389}
	dir := methodtest.LoadGolden(t, "dora").Dir
	pm := methodtest.BaseModel(t)
	base := methodtest.Logits(t, pm.Base, ids)
	if _, err := pm.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	adapted := methodtest.Logits(t, pm.Base, ids)
	if methodtest.MaxAbsDiff(base, adapted) < 1e-2 {
		t.Fatal("the golden DoRA adapter hardly changes the logits; the test would prove nothing")
	}
	orig := map[string][]float32{}
	for _, l := range pm.Linears() {
		orig[l.Name] = l.Weight.Value.ToF32().Data
	}
	if err := pm.Merge(); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
		t.Errorf("float32: merged logits differ from unmerged by %g", d)
	}
	if err := pm.Unmerge(); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(adapted, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
		t.Errorf("float32: unmerged logits differ by %g", d)
	}
	for _, l := range pm.Linears() {
		if d := methodtest.MaxAbsDiff(orig[l.Name], l.Weight.Value.Data); d > 1e-5 {
			t.Errorf("float32: %s differs from the original by %g after unmerge", l.Name, d)
		}
	}

	// bf16: the same merge computed in float32 from the widened weights,
	// rounded once.
	pb := methodtest.BaseModel(t)
	pb.Base.ToBF16()
	pf := methodtest.BaseModel(t)
	for i, l := range pf.Linears() {
		l.Weight.Value = pb.Linears()[i].Weight.Value.ToF32()
	}
	for _, p := range []*peft.Model{pb, pf} {
		if _, err := p.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
			t.Fatal(err)
		}
	}
	unmergedBF16 := methodtest.Logits(t, pb.Base, ids)
	// On CPUs with AVX512_BF16 a bf16 product of up to RowInvariantRows
	// rows rounds the activations to bf16 too (see kernels.GemmBF16), so
	// the twin agrees to within what rounding the weights costs, not 1e-4.
	rounding := methodtest.MaxAbsDiff(adapted, unmergedBF16)
	if d := methodtest.MaxAbsDiff(unmergedBF16, methodtest.Logits(t, pf.Base, ids)); d > max(1e-4, rounding) {
		t.Errorf("bf16 base and its float32 widening give logits %g apart (rounding the base to bf16: %g)", d, rounding)
	}
	for _, p := range []*peft.Model{pb, pf} {
		if err := p.Merge(); err != nil {
			t.Fatal(err)
		}
	}
	for i, l := range pb.Linears() {
		w := l.Weight.Value
		if w.DType() != tensor.BF16 {
			t.Fatalf("%s became %v after merge", l.Name, w.DType())
		}
		want := pf.Linears()[i].Weight.Value.ToBF16()
		if !slices.Equal(w.Half, want.Half) {
			t.Errorf("bf16 %s: merged weight is not the float32 merge rounded once", l.Name)
		}
	}
	// Rounding the merged weights to bf16 moves the logits by about as
	// much as rounding the float32 base to bf16 did.
	if d := methodtest.MaxAbsDiff(unmergedBF16, methodtest.Logits(t, pb.Base, ids)); d > 2*rounding {
		t.Errorf("bf16: merged logits differ from unmerged by %g (rounding the base to bf16: %g)", d, rounding)
	}
	if err := pb.Unmerge(); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(unmergedBF16, methodtest.Logits(t, pb.Base, ids)); d > 2*rounding {
		t.Errorf("bf16: unmerged logits differ by %g (rounding the base to bf16: %g)", d, rounding)
	}
	t.Logf("bf16: rounding the base moves the logits by %g", rounding)
}

// TestDoRASaveLayout: what gopeft writes carries the golden file's tensor
// names and shapes, use_dora true and peft_type LORA, and reloads bitwise.
func TestDoRASaveLayout(t *testing.T) {
	golden := methodtest.LoadGolden(t, "dora").Dir
	pm := methodtest.BaseModel(t)
	if _, err := pm.LoadAdapter(golden, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	want, _, err := format.ReadSafetensors(filepath.Join(golden, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sortedNames(want), sortedNames(got)) {
		t.Fatalf("tensor names differ:\n got %v\nwant %v", sortedNames(got), sortedNames(want))
	}
	for n, w := range want {
		if !reflect.DeepEqual(w.Shape, got[n].Shape) || string(w.Data) != string(got[n].Data) {
			t.Errorf("%s differs after save", n)
		}
	}
	var gcfg, ocfg map[string]any
	methodtest.ReadJSON(t, filepath.Join(golden, peft.ConfigFile), &gcfg)
	methodtest.ReadJSON(t, filepath.Join(dir, peft.ConfigFile), &ocfg)
	for k, v := range gcfg {
		if k != "inference_mode" && !reflect.DeepEqual(v, ocfg[k]) {
			t.Errorf("key %q: saved %v, golden %v", k, ocfg[k], v)
		}
	}
}

// TestDoRAFreshIsIdentity: m starts at ‖W₀‖, so a new DoRA adapter leaves
// the model's output as it was.
func TestDoRAFreshIsIdentity(t *testing.T) {
	pm := smallModel(t)
	ids := []int{1, 3, 5, 7, 9}
	before := methodtest.Logits(t, pm.Base, ids)
	c := doraConfig(4, "q_proj", "down_proj")
	c.InitLoraWeights = InitDefault
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(before, methodtest.Logits(t, pm.Base, ids)); d > 1e-5 {
		t.Errorf("a fresh DoRA adapter changed the logits by %g", d)
	}
}

// TestDoRAInferenceCacheFollowsChanges: the row norms an inference pass
// reuses are recomputed when A, B or the base weight change.
func TestDoRAInferenceCacheFollowsChanges(t *testing.T) {
	pm := smallModel(t)
	m := New(doraConfig(2, "q_proj"))
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	ids := []int{1, 3, 5, 7}
	first := methodtest.Logits(t, pm.Base, ids)
	fresh := func() []float32 { // the same model without any cached norm
		for _, ly := range m.doras {
			ly.cache = normCache{}
		}
		return methodtest.Logits(t, pm.Base, ids)
	}
	m.doras[1].f.B.Value.Data[0] += 0.5
	changed := methodtest.Logits(t, pm.Base, ids)
	if methodtest.MaxAbsDiff(first, changed) == 0 {
		t.Fatal("changing B did not change the output")
	}
	if !slices.Equal(changed, fresh()) {
		t.Error("after B changed, the cached row norms were used")
	}
	w := m.doras[2].linear.Weight.Value
	delta := make([]float32, w.Numel())
	delta[3] = 0.25
	if err := nn.MergeInto(w, delta, 1); err != nil {
		t.Fatal(err)
	}
	again := methodtest.Logits(t, pm.Base, ids)
	if !slices.Equal(again, fresh()) {
		t.Error("after the base weight changed, the cached row norms were used")
	}
}

// TestDoRABadInput: DoRA on an embedding and --method DORA turned back into
// plain LoRA are refused naming the module and the key; an adapter file
// saying peft_type DORA names the type PEFT writes.
func TestDoRABadInput(t *testing.T) {
	pm := smallModel(t)
	c := doraConfig(2, "embed_tokens", "q_proj")
	_, err := pm.AddAdapter(peft.DefaultAdapter, New(c))
	if err == nil || !strings.Contains(err.Error(), "model.embed_tokens") {
		t.Errorf("DoRA on the embedding: %v", err)
	}
	if len(pm.Adapters()) != 0 {
		t.Errorf("a refused adapter was left attached: %v", pm.Adapters())
	}
	c = doraConfig(2)
	c.TargetModules = peft.ModuleRegex("all-linear")
	if _, err := pm.AddAdapter("all", New(c)); err != nil {
		t.Errorf("DoRA on all-linear: %v", err)
	}
	reg, err := peft.Lookup("dora")
	if err != nil {
		t.Fatal(err)
	}
	dm := reg.New()
	if dm.Config().Base().PeftType != PeftType || !dm.Config().(*Config).UseDoRA {
		t.Errorf("DORA's config: peft_type %s use_dora %v, want LORA true", dm.Config().Base().PeftType, dm.Config().(*Config).UseDoRA)
	}
	err = peft.DecodeConfig([]byte(`{"use_dora": false}`), dm.Config(), "recipe peft block", true)
	var ke *peft.KeyError
	if !errors.As(err, &ke) || ke.Key != "use_dora" {
		t.Errorf("method DORA with use_dora false: %v", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, peft.ConfigFile), []byte(`{"peft_type": "DORA", "target_modules": ["q_proj"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := peft.ReadMethod(dir); err == nil || !strings.Contains(err.Error(), `"LORA"`) {
		t.Errorf("a file with peft_type DORA: %v", err)
	}
}
