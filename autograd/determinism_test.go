package autograd

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// tinyModel is a one-block LLaMA-like graph over every fused op the model
// uses, sized so that parallel.For really splits the work (600 rows of 64).
type tinyModel struct {
	emb, norm1, wq, wk, wv, wo, norm2, gate, up, down, normF, head *Var
	ids, targets                                                   []int
	pos                                                            []int
	mask                                                           []bool
	rope                                                           *RoPE
	s                                                              AttnShape
}

func newTinyModel() *tinyModel {
	g := tensor.NewRNG(40)
	const B, T, d, H, KV, hid, V = 2, 300, 64, 4, 2, 96, 97
	hd := d / H
	w := func(shape ...int) *Var {
		return Param(fmt.Sprint(shape), tensor.New(shape...).Normal(g, 0, 0.3), true)
	}
	ones := func() *Var {
		v := w(d)
		for i := range v.Value.Data {
			v.Value.Data[i] = 1 + 0.1*v.Value.Data[i]
		}
		return v
	}
	m := &tinyModel{
		emb: w(V, d), norm1: ones(), wq: w(d, d), wk: w(KV*hd, d), wv: w(KV*hd, d), wo: w(d, d),
		norm2: ones(), gate: w(hid, d), up: w(hid, d), down: w(d, hid), normF: ones(), head: w(V, d),
		rope: &RoPE{InvFreq: RoPEInvFreq(hd, 10000), Style: RoPEHalf},
		s:    AttnShape{Batch: B, T: T, Heads: H, KVHeads: KV, HeadDim: hd},
	}
	for b := 0; b < B; b++ {
		for t := 0; t < T; t++ {
			m.ids = append(m.ids, g.IntN(V))
			m.pos = append(m.pos, t)
			m.mask = append(m.mask, b == 0 || t >= 7) // sequence 1 left-padded
			tg := g.IntN(V)
			if t%5 == 0 {
				tg = IgnoreIndex
			}
			m.targets = append(m.targets, tg)
		}
	}
	m.head.SetTrainable(false)
	return m
}

func (m *tinyModel) params() []*Var {
	return []*Var{m.emb, m.norm1, m.wq, m.wk, m.wv, m.wo, m.norm2, m.gate, m.up, m.down, m.normF, m.head}
}

func (m *tinyModel) loss(tp *Tape) *Var {
	x := tp.Embedding(m.emb, m.ids)
	h := tp.RMSNorm(x, m.norm1, 1e-5)
	heads, kv := m.s.Heads, m.s.KVHeads
	q := tp.RoPE(tp.Linear(h, m.wq), heads, m.pos, m.rope)
	k := tp.RoPE(tp.Linear(h, m.wk), kv, m.pos, m.rope)
	a := tp.Attention(q, k, tp.Linear(h, m.wv), nil, nil, m.s, m.mask)
	x = tp.Add(x, tp.Dropout(tp.Linear(a, m.wo), 0.1, 5))
	h = tp.RMSNorm(x, m.norm2, 1e-5)
	x = tp.Add(x, tp.Linear(tp.SwiGLU(tp.Linear(h, m.gate), tp.Linear(h, m.up)), m.down))
	return tp.LMHeadCrossEntropy(tp.RMSNorm(x, m.normF, 1e-5), m.head, m.targets, 64)
}

// run returns the loss and every gradient, flattened, with n threads.
func (m *tinyModel) run(n int) []float32 {
	old := parallel.SetThreads(n)
	defer parallel.SetThreads(old)
	for _, p := range m.params() {
		p.Grad = nil
	}
	tp := NewTape()
	loss := m.loss(tp)
	tp.Backward(loss)
	res := []float32{loss.Value.Data[0]}
	for _, p := range m.params() {
		if p.Grad != nil {
			res = append(res, p.Grad.Data...)
		}
	}
	return res
}

func TestDeterministicAcrossThreads(t *testing.T) {
	m := newTinyModel()
	sameAcrossThreads(t, m)
	if m.head.Grad != nil {
		t.Error("frozen head got a gradient")
	}
}

// The mixed-precision step (a frozen base in bf16, and 4-bit weights
// computed in bf16, as train's default where the CPU has bf16 products)
// is deterministic for any thread count too.
func TestDeterministicAcrossThreadsMixed(t *testing.T) {
	m := newTinyModel()
	for _, v := range []*Var{m.gate, m.up, m.down, m.wo} {
		v.Value = v.Value.ToBF16()
		v.SetTrainable(false)
	}
	for _, v := range []*Var{m.wq, m.wv} {
		q, err := quant.QuantizeTensor(v.Value, quant.KindNF4, false)
		if err != nil {
			t.Fatal(err)
		}
		q.Q4.BF16 = true
		v.Value = q
		v.SetTrainable(false)
	}
	sameAcrossThreads(t, m)
}

// sameAcrossThreads checks that 2 and 3 threads give the loss and
// gradients of 1, bit for bit.
func sameAcrossThreads(t *testing.T, m *tinyModel) {
	t.Helper()
	one := m.run(1)
	if l := one[0]; math.IsNaN(float64(l)) || l <= 0 {
		t.Fatalf("loss %v", l)
	}
	for _, n := range []int{2, 3} {
		got := m.run(n)
		if len(got) != len(one) {
			t.Fatalf("%d threads: %d values, 1 thread %d", n, len(got), len(one))
		}
		for i := range one {
			if math.Float32bits(got[i]) != math.Float32bits(one[i]) {
				t.Fatalf("%d threads: value %d = %v, 1 thread %v", n, i, got[i], one[i])
			}
		}
	}
}
