package llama

import (
	"math"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
)

func classifier(t testing.TB, labels int) *Model {
	t.Helper()
	m, err := NewRandom(smallConfig(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AddScoreHead(labels, 3); err != nil {
		t.Fatal(err)
	}
	return m
}

// padBatch lays sequences out T wide, padded on the left or the right with
// an id that is not otherwise used.
func padBatch(seqs [][]int, T int, left bool) Input {
	in := Input{Batch: len(seqs), T: T}
	for _, s := range seqs {
		row, mask := make([]int, T), make([]bool, T)
		off := 0
		if left {
			off = T - len(s)
		}
		for i := range row {
			row[i] = 36
		}
		copy(row[off:], s)
		for i := range s {
			mask[off+i] = true
		}
		in.IDs, in.Mask = append(in.IDs, row...), append(in.Mask, mask...)
	}
	return in
}

func TestClassifyLogitsUsesLastRealToken(t *testing.T) {
	m := classifier(t, 3)
	seqs := [][]int{{1, 5, 9, 11, 3, 4, 30}, {1, 8, 2}, {1, 17, 21, 5, 6}}
	alone := make([][]float32, len(seqs))
	for i, s := range seqs {
		lg, err := m.ClassifyLogits(nil, Input{IDs: s, Batch: 1, T: len(s)})
		if err != nil {
			t.Fatal(err)
		}
		if sh := lg.Value.Shape; len(sh) != 2 || sh[0] != 1 || sh[1] != 3 {
			t.Fatalf("logits shape %v, want [1 3]", sh)
		}
		alone[i] = lg.Value.Row(0)
		// The head reads the final hidden state of the last token.
		h, err := m.Forward(nil, Input{IDs: s, Batch: 1, T: len(s)})
		if err != nil {
			t.Fatal(err)
		}
		last := h.Value.Row(len(s) - 1)
		for k := range 3 {
			var want float64
			for j, w := range m.Score.Weight.Value.Row(k) {
				want += float64(w) * float64(last[j])
			}
			if d := math.Abs(want - float64(alone[i][k])); d > 1e-5 {
				t.Errorf("sequence %d class %d: logit %g, score·h[last] %g", i, k, alone[i][k], want)
			}
		}
	}
	for _, left := range []bool{false, true} {
		lg, err := m.ClassifyLogits(nil, padBatch(seqs, 8, left))
		if err != nil {
			t.Fatal(err)
		}
		for b := range seqs {
			if d := maxDiff([][]float32{lg.Value.Row(b)}, [][]float32{alone[b]}); d > 1e-5 {
				t.Errorf("left=%v sequence %d: batched logits differ from alone by %g", left, b, d)
			}
		}
	}
}

func TestLastTokenRows(t *testing.T) {
	in := padBatch([][]int{{1, 2}, {1, 2, 3, 4}}, 4, false)
	rows, err := LastTokenRows(in)
	if err != nil || rows[0] != 1 || rows[1] != 7 {
		t.Errorf("right padding: rows %v, %v; want [1 7]", rows, err)
	}
	in = padBatch([][]int{{1, 2}, {1, 2, 3, 4}}, 4, true)
	if rows, err = LastTokenRows(in); err != nil || rows[0] != 3 || rows[1] != 7 {
		t.Errorf("left padding: rows %v, %v; want [3 7]", rows, err)
	}
	in.Mask[4], in.Mask[5], in.Mask[6], in.Mask[7] = false, false, false, false
	if _, err := LastTokenRows(in); err == nil {
		t.Error("a sequence of padding only was accepted")
	}
	m := classifier(t, 2)
	if _, err := m.ClassifyLogits(nil, in); err == nil {
		t.Error("ClassifyLogits accepted a sequence of padding only")
	}
}

func TestScoreHeadIsAModule(t *testing.T) {
	m, err := NewRandom(smallConfig(), 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ClassifyLogits(nil, Input{IDs: []int{1, 2}, Batch: 1, T: 2}); err == nil {
		t.Error("ClassifyLogits without a head succeeded")
	}
	nLin, nParams := len(m.Linears()), len(m.Params())
	if err := m.AddScoreHead(0, 1); err == nil {
		t.Error("a head of 0 labels was accepted")
	}
	if err := m.AddScoreHead(4, 1); err != nil {
		t.Fatal(err)
	}
	if err := m.AddScoreHead(4, 1); err == nil {
		t.Error("a second head was accepted")
	}
	ls := m.Linears()
	if len(ls) != nLin+1 || ls[len(ls)-1] != m.Score || m.Score.Name != "score" || !m.IsOutput(m.Score) {
		t.Errorf("Linears does not end with the output module score")
	}
	if v, ok := m.Params().Get("score.weight"); !ok || v != m.Score.Weight || len(m.Params()) != nParams+1 || v.RequiresGrad() {
		t.Errorf("score.weight missing from Params, or trainable")
	}
	if sh := m.Score.Weight.Value.Shape; sh[0] != 4 || sh[1] != m.Config.HiddenSize {
		t.Errorf("score weight shape %v", sh)
	}
	var s, s2 float64
	w := m.Score.Weight.Value.Data
	for _, v := range w {
		s += float64(v)
		s2 += float64(v) * float64(v)
	}
	if std := math.Sqrt(s2/float64(len(w)) - (s/float64(len(w)))*(s/float64(len(w)))); std < 0.012 || std > 0.028 {
		t.Errorf("score init std %.4f, want about %.2f", std, InitializerRange)
	}
	// The head travels with the weights: New rebuilds it from Tensors.
	m2, err := New(m.Config, m.Tensors(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if m2.NumLabels() != 4 {
		t.Fatalf("rebuilt model has %d labels, want 4", m2.NumLabels())
	}
	in := Input{IDs: []int{1, 4, 9}, Batch: 1, T: 3}
	a, _ := m.ClassifyLogits(nil, in)
	b, _ := m2.ClassifyLogits(nil, in)
	if d := maxDiff([][]float32{a.Value.Data}, [][]float32{b.Value.Data}); d != 0 {
		t.Errorf("rebuilt classifier differs by %g", d)
	}
	ts := m.Tensors()
	ts[NameScore] = ts["model.layers.0.mlp.down_proj.weight"] // [hidden, intermediate]: the wrong width
	if _, err := New(m.Config, ts, "test"); err == nil {
		t.Error("New accepted a score.weight of the wrong shape")
	}
}

// BenchmarkClassifyStep times a training step's forward and backward of
// stories260K's shape (random weights) on 32 sequences of 40 tokens.
func BenchmarkClassifyStep(b *testing.B) {
	cfg := Config{HiddenSize: 64, IntermediateSize: 172, NumHiddenLayers: 5, NumAttentionHeads: 8, NumKeyValueHeads: 4,
		VocabSize: 512, MaxPositionEmbeddings: 512, RMSNormEps: 1e-5, RopeTheta: 10000, BOSTokenID: 1, EOSTokenID: 2}
	m, err := NewRandom(cfg, 1)
	if err != nil {
		b.Fatal(err)
	}
	if err := m.AddScoreHead(2, 1); err != nil {
		b.Fatal(err)
	}
	m.Score.Weight.SetTrainable(true)
	const B, T = 32, 40
	in := Input{IDs: make([]int, B*T), Batch: B, T: T}
	for i := range in.IDs {
		in.IDs[i] = (i*7 + 3) % 512
	}
	classes := make([]int, B)
	for b := range classes {
		classes[b] = b % 2
	}
	b.ResetTimer()
	for range b.N {
		tp := autograd.NewTape()
		lg, err := m.ClassifyLogits(&nn.Pass{Tape: tp, Training: true}, in)
		if err != nil {
			b.Fatal(err)
		}
		tp.Backward(tp.CrossEntropy(lg, classes))
		m.Score.Weight.ZeroGrad()
	}
}
