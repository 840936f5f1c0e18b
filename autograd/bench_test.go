package autograd

import (
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

// BenchmarkAttention is one stories15M-shaped attention layer (6 heads of 48,
// 256 tokens, batch 4), forward and backward.
func BenchmarkAttention(b *testing.B) {
	g := tensor.NewRNG(50)
	s := AttnShape{Batch: 4, T: 256, Heads: 6, KVHeads: 6, HeadDim: 48}
	q, k, v := randVar(g, true, 1024, 288), randVar(g, true, 1024, 288), randVar(g, true, 1024, 288)
	b.ResetTimer()
	for range b.N {
		tp := NewTape()
		tp.Backward(tp.Sum(tp.Attention(q, k, v, nil, nil, s, nil)))
	}
}

// BenchmarkLMHeadCrossEntropy is stories15M's head: 512 rows of 288 against
// a 32000-word vocabulary, frozen, forward and backward to h.
func BenchmarkLMHeadCrossEntropy(b *testing.B) {
	g := tensor.NewRNG(51)
	h := randVar(g, true, 512, 288)
	w := Param("head", tensor.New(32000, 288).Normal(g, 0, 0.02), false)
	targets := make([]int, 512)
	for i := range targets {
		targets[i] = g.IntN(32000)
	}
	b.ResetTimer()
	for range b.N {
		tp := NewTape()
		tp.Backward(tp.LMHeadCrossEntropy(h, w, targets, 64))
	}
}

// BenchmarkRMSNormRoPESwiGLU covers the cheap per-row ops at stories15M size.
func BenchmarkRMSNormRoPESwiGLU(b *testing.B) {
	g := tensor.NewRNG(52)
	x, w := randVar(g, true, 1024, 288), randVar(g, true, 288)
	gt, up := randVar(g, true, 1024, 768), randVar(g, true, 1024, 768)
	pos := make([]int, 1024)
	for i := range pos {
		pos[i] = i % 256
	}
	r := &RoPE{InvFreq: RoPEInvFreq(48, 10000), Style: RoPEInterleaved}
	b.ResetTimer()
	for range b.N {
		tp := NewTape()
		a := tp.RoPE(tp.RMSNorm(x, w, 1e-5), 6, pos, r)
		c := tp.SwiGLU(gt, up)
		tp.Backward(tp.Add(tp.Sum(a), tp.Sum(c)))
	}
}
