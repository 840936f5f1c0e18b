package llama

import (
	"math"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
)

// packed lays examples out as packing does: each row of the batch holds
// the examples listed for it one after another (segment ids 0, 1, ...),
// right-padded to T. It returns the input, and for every example its
// sequence and first column.
func packed(rows [][][]int, T int) (Input, [][2]int) {
	in := Input{Batch: len(rows), T: T}
	var at [][2]int
	for b, exs := range rows {
		t := 0
		for s, ex := range exs {
			at = append(at, [2]int{b, t})
			for _, id := range ex {
				in.IDs = append(in.IDs, id)
				in.Segments = append(in.Segments, s)
				in.Mask = append(in.Mask, true)
				t++
			}
		}
		for ; t < T; t++ {
			in.IDs = append(in.IDs, 36)
			in.Segments = append(in.Segments, len(exs))
			in.Mask = append(in.Mask, false)
		}
	}
	return in, at
}

var packRows = [][][]int{
	{{1, 5, 9, 11, 3}, {1, 8, 2}, {1, 17, 21, 5, 6, 30, 4}},
	{{1, 22, 7}, {1, 33, 12, 19, 25, 6}}, // then padding
}

// Packing several examples into one sequence gives each the logits and the
// loss it has alone (positions restart, no attention across examples, no
// prediction across a boundary), with and without a prefix that every
// example sees; the packed batch's loss is the target-weighted mean of the
// examples' own, and its gradient the same sum of theirs.
func TestPackedExamplesMatchAlone(t *testing.T) {
	for _, prefix := range []bool{false, true} {
		m, err := NewRandom(smallConfig(), 11)
		if err != nil {
			t.Fatal(err)
		}
		if prefix {
			addPrefix(m, "", 3, 5)
		}
		in, at := packed(packRows, 15)
		h, err := m.Forward(nil, in)
		if err != nil {
			t.Fatal(err)
		}
		lg := m.Logits(nil, h).Value
		labels := LMLabels(in)
		var exs [][]int
		for _, r := range packRows {
			exs = append(exs, r...)
		}
		w := m.Layers[0].Q.Weight
		w.SetTrainable(true)
		var sum float64
		var targets int
		wantGrad := make([]float64, len(w.Value.Data))
		for e, ex := range exs {
			b, t0 := at[e][0], at[e][1]
			want := logitsOf(t, m, ex)
			got := make([][]float32, len(ex))
			for i := range ex {
				got[i] = lg.Row(b*in.T + t0 + i)
			}
			if d := maxDiff(got, want); d > 1e-5 {
				t.Errorf("prefix=%v example %d: packed logits differ from alone by %g", prefix, e, d)
			}
			// The loss of this example inside the pack: every other label
			// ignored.
			own := make([]int, len(labels))
			for i := range own {
				own[i] = autograd.IgnoreIndex
			}
			copy(own[b*in.T+t0:], ex)
			pl, err := m.Loss(nil, in, own)
			if err != nil {
				t.Fatal(err)
			}
			tp := autograd.NewTape()
			al, err := m.Loss(&nn.Pass{Tape: tp}, Input{IDs: ex, Batch: 1, T: len(ex)}, ex)
			if err != nil {
				t.Fatal(err)
			}
			if d := math.Abs(float64(pl.Value.Data[0] - al.Value.Data[0])); d > 1e-5 {
				t.Errorf("prefix=%v example %d: packed loss %v, alone %v", prefix, e, pl.Value.Data[0], al.Value.Data[0])
			}
			n := len(ex) - 1
			tp.Backward(tp.Scale(al, float32(n)))
			for i, g := range w.Grad.Data {
				wantGrad[i] += float64(g)
			}
			w.Grad = nil
			sum += float64(al.Value.Data[0]) * float64(n)
			targets += n
		}
		tp := autograd.NewTape()
		l, err := m.Loss(&nn.Pass{Tape: tp}, in, labels)
		if err != nil {
			t.Fatal(err)
		}
		if want := sum / float64(targets); math.Abs(float64(l.Value.Data[0])-want) > 1e-5 {
			t.Errorf("prefix=%v: packed batch loss %v, want the mean of the examples' %v", prefix, l.Value.Data[0], want)
		}
		tp.Backward(tp.Scale(l, float32(targets)))
		for i, g := range w.Grad.Data {
			if d := math.Abs(float64(g) - wantGrad[i]); d > 1e-4*(1+math.Abs(wantGrad[i])) {
				t.Fatalf("prefix=%v: packed gradient [%d] = %v, the examples' sum %v", prefix, i, g, wantGrad[i])
			}
		}
		w.SetTrainable(false)
	}
}

// The packed loss's gradients against finite differences, through the
// query and value weights (the scores' and the values' paths of the
// attention).
func TestGradPackedLoss(t *testing.T) {
	cfg := smallConfig()
	cfg.NumHiddenLayers = 1
	m, err := NewRandom(cfg, 12)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := packed([][][]int{{{1, 5, 9}, {1, 8, 2, 4}}, {{1, 22}, {1, 33, 12}}}, 7)
	labels := LMLabels(in)
	b := m.Layers[0]
	inputs := []*autograd.Var{b.Q.Weight, b.V.Weight} // scores and values
	for _, v := range inputs {
		v.SetTrainable(true)
	}
	worst, err := autograd.GradCheckModel(inputs, func(tp *autograd.Tape) *autograd.Var {
		l, err := m.Loss(&nn.Pass{Tape: tp}, in, labels)
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
	if err != nil {
		t.Error(err)
	}
	t.Logf("worst error/tolerance %.3f", worst)
}

// Packing is refused where it would compute something else: with virtual
// tokens, a KV cache or classification, or with a wrong number of ids.
func TestPackedSegmentsRefused(t *testing.T) {
	m, err := NewRandom(smallConfig(), 13)
	if err != nil {
		t.Fatal(err)
	}
	in, _ := packed(packRows[:1], 15)
	bad := in
	bad.Segments = bad.Segments[1:]
	if _, err := m.Forward(nil, bad); err == nil || !strings.Contains(err.Error(), "segment ids") {
		t.Errorf("short segments: %v", err)
	}
	c := in
	c.Cache = m.NewKVCache(1, 20)
	if _, err := m.Forward(nil, c); err == nil || !strings.Contains(err.Error(), "KV cache") {
		t.Errorf("with a cache: %v", err)
	}
	if err := m.AddScoreHead(2, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ClassifyLogits(nil, in); err == nil || !strings.Contains(err.Error(), "packed") {
		t.Errorf("classification: %v", err)
	}
	addPrompt(m, "", 2, 3)
	if _, err := m.Forward(nil, in); err == nil || !strings.Contains(err.Error(), "virtual tokens") {
		t.Errorf("virtual tokens: %v", err)
	}
}
