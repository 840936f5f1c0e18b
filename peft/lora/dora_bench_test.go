package lora

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/peft/lowrank"
	"github.com/gopeft/gopeft/tensor"
)

// fullRowNorms is the direct form: W + s·B·A as a dense out×in matrix,
// then each row's norm.
func fullRowNorms(w *tensor.Tensor, f *lowrank.Factors, dst []float32) {
	out, in := w.Shape[0], w.Shape[1]
	d := f.Delta()
	for i := 0; i < out; i++ {
		var s float64
		for j := i * in; j < (i+1)*in; j++ {
			e := float64(w.Data[j] + d[j])
			s += e * e
		}
		dst[i] = float32(math.Sqrt(s))
	}
}

// BenchmarkDoRARowNorms compares RowNorms (blocks of rows, no out×in
// matrix) with the dense form on stories110M's shapes at r = 8:
//
//	go test ./peft/lora -run '^$' -bench DoRARowNorms -benchmem
func BenchmarkDoRARowNorms(b *testing.B) {
	for _, s := range [][2]int{{768, 768}, {2048, 768}, {768, 2048}} {
		out, in := s[0], s[1]
		g := tensor.NewRNG(1)
		w := tensor.New(out, in).Normal(g, 0, 0.02)
		f := lowrank.New("A", "B", 8, in, out, 2, lowrank.InitRandom, g)
		dst := make([]float32, out)
		b.Run(fmt.Sprintf("blockwise/%dx%d", out, in), func(b *testing.B) {
			for b.Loop() {
				RowNorms(w, f, dst)
			}
		})
		b.Run(fmt.Sprintf("dense/%dx%d", out, in), func(b *testing.B) {
			for b.Loop() {
				fullRowNorms(w, f, dst)
			}
		})
	}
}

// The blockwise norms equal the dense ones.
func TestRowNormsMatchDense(t *testing.T) {
	g := tensor.NewRNG(2)
	for _, s := range [][2]int{{70, 33}, {5, 200}, {129, 64}} {
		w := tensor.New(s[0], s[1]).Normal(g, 0, 1)
		f := lowrank.New("A", "B", 3, s[1], s[0], 1.5, lowrank.InitRandom, g)
		got, want := make([]float32, s[0]), make([]float32, s[0])
		RowNorms(w, f, got)
		fullRowNorms(w, f, want)
		for i := range got {
			if math.Abs(float64(got[i]-want[i])) > 1e-5*float64(want[i]) {
				t.Fatalf("%v row %d: blockwise %v, dense %v", s, i, got[i], want[i])
			}
		}
		bw := w.ToBF16()
		RowNorms(bw, f, got)
		fullRowNorms(bw.ToF32(), f, want)
		for i := range got {
			if math.Abs(float64(got[i]-want[i])) > 1e-5*float64(want[i]) {
				t.Fatalf("bf16 %v row %d: blockwise %v, dense %v", s, i, got[i], want[i])
			}
		}
	}
}
