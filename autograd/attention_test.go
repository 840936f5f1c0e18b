package autograd

import (
	"fmt"
	"math"
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

// attnCase is one attention configuration under test.
type attnCase struct {
	s         AttnShape
	prefix    int // P: prefix keys per sequence (0: none)
	padLeft   []int
	padPrefix bool // also mask the first prefix key of sequence 0
}

func (c attnCase) String() string {
	return fmt.Sprintf("B%d_T%d_H%d_KV%d_hd%d_P%d_perBatch%v_pad%v_packed%v", c.s.Batch, c.s.T, c.s.Heads, c.s.KVHeads, c.s.HeadDim, c.prefix, c.s.PrefixPerBatch, c.padLeft, c.s.SegStart != nil)
}

var attnCases = []attnCase{
	{s: AttnShape{Batch: 2, T: 3, Heads: 2, KVHeads: 2, HeadDim: 6}},
	{s: AttnShape{Batch: 1, T: 1, Heads: 2, KVHeads: 1, HeadDim: 6}},
	{s: AttnShape{Batch: 2, T: 1, Heads: 4, KVHeads: 2, HeadDim: 6}, prefix: 2},
	{s: AttnShape{Batch: 2, T: 4, Heads: 4, KVHeads: 1, HeadDim: 6}, prefix: 3},
	{s: AttnShape{Batch: 2, T: 3, Heads: 4, KVHeads: 2, HeadDim: 6, PrefixPerBatch: true}, prefix: 2},
	// Left padding: sequence 1's first two keys are padding, so its first
	// two queries (when there is no prefix) see nothing.
	{s: AttnShape{Batch: 2, T: 4, Heads: 2, KVHeads: 1, HeadDim: 6}, padLeft: []int{0, 2}},
	{s: AttnShape{Batch: 2, T: 3, Heads: 4, KVHeads: 4, HeadDim: 4}, prefix: 2, padLeft: []int{1, 0}, padPrefix: true},
	{s: AttnShape{Batch: 2, T: 2, Heads: 4, KVHeads: 1, HeadDim: 6, PrefixPerBatch: true}, prefix: 3, padLeft: []int{0, 1}, padPrefix: true},
	// Longer than one tile of query rows (32), ragged last tile.
	{s: AttnShape{Batch: 2, T: 70, Heads: 2, KVHeads: 1, HeadDim: 4}, prefix: 3, padLeft: []int{0, 40}},
	// Packed examples: sequence 0 holds examples of 2 and 3 tokens,
	// sequence 1 of 1, 2 and 2; with a shared prefix and padding too.
	{s: AttnShape{Batch: 2, T: 5, Heads: 4, KVHeads: 2, HeadDim: 6, SegStart: []int{0, 0, 2, 2, 2, 0, 1, 1, 3, 3}}},
	{s: AttnShape{Batch: 2, T: 5, Heads: 4, KVHeads: 1, HeadDim: 6, SegStart: []int{0, 0, 2, 2, 2, 0, 1, 1, 3, 3}}, prefix: 2, padLeft: []int{0, 1}},
	// Segments across query tiles of 32.
	{s: AttnShape{Batch: 1, T: 70, Heads: 2, KVHeads: 1, HeadDim: 4, SegStart: segStarts(20, 30, 20)}},
}

// segStarts gives each row of one sequence packing examples of these
// lengths the start of its example.
func segStarts(lens ...int) []int {
	var st []int
	for _, n := range lens {
		start := len(st)
		for range n {
			st = append(st, start)
		}
	}
	return st
}

// inputs makes q, k, v and (when prefix > 0) prefix keys/values, all
// trainable, plus the key mask.
func (c attnCase) inputs(g *tensor.RNG) (q, k, v, pk, pv *Var, mask []bool) {
	s := c.s
	rows, kd := s.Batch*s.T, s.KVHeads*s.HeadDim
	q, k, v = randVar(g, true, rows, s.Heads*s.HeadDim), randVar(g, true, rows, kd), randVar(g, true, rows, kd)
	if c.prefix > 0 {
		pr := c.prefix
		if s.PrefixPerBatch {
			pr *= s.Batch
		}
		pk, pv = randVar(g, true, pr, kd), randVar(g, true, pr, kd)
	}
	if c.padLeft != nil {
		keys := c.prefix + s.T
		mask = make([]bool, s.Batch*keys)
		for b := 0; b < s.Batch; b++ {
			for j := 0; j < keys; j++ {
				mask[b*keys+j] = j >= c.prefix+c.padLeft[b] || j < c.prefix
			}
		}
		if c.padPrefix && c.prefix > 0 {
			mask[0] = false
		}
	}
	return
}

// naiveAttention is the plain O(T²) reference: for every (sequence, head,
// query) it lists the visible keys, forms all their scores in float64 and
// takes softmax-weighted values.
func naiveAttention(q, k, v, pk, pv *tensor.Tensor, s AttnShape, prefix int, mask []bool) []float64 {
	hd, qd, kd := s.HeadDim, s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	out := make([]float64, s.Batch*s.T*qd)
	keys := prefix + s.T
	for b := 0; b < s.Batch; b++ {
		for h := 0; h < s.Heads; h++ {
			kvh := h / (s.Heads / s.KVHeads)
			for t := 0; t < s.T; t++ {
				qr := q.Data[(b*s.T+t)*qd+h*hd:][:hd]
				var scores []float64
				var vals [][]float32
				for j := 0; j < keys; j++ {
					if j >= prefix+t+1 || (mask != nil && !mask[b*keys+j]) {
						continue
					}
					if s.SegStart != nil && j >= prefix && j-prefix < s.SegStart[b*s.T+t] {
						continue // an earlier packed example's key
					}
					var kr, vr []float32
					if j < prefix {
						row := j
						if s.PrefixPerBatch {
							row = b*prefix + j
						}
						kr, vr = pk.Data[row*kd+kvh*hd:][:hd], pv.Data[row*kd+kvh*hd:][:hd]
					} else {
						row := b*s.T + j - prefix
						kr, vr = k.Data[row*kd+kvh*hd:][:hd], v.Data[row*kd+kvh*hd:][:hd]
					}
					var dot float64
					for i := range qr {
						dot += float64(qr[i]) * float64(kr[i])
					}
					scores = append(scores, dot/math.Sqrt(float64(hd)))
					vals = append(vals, vr)
				}
				m := math.Inf(-1)
				for _, sc := range scores {
					m = math.Max(m, sc)
				}
				var z float64
				for _, sc := range scores {
					z += math.Exp(sc - m)
				}
				o := out[(b*s.T+t)*qd+h*hd:][:hd]
				for n, sc := range scores {
					p := math.Exp(sc-m) / z
					for i := range o {
						o[i] += p * float64(vals[n][i])
					}
				}
			}
		}
	}
	return out
}

func TestAttentionForwardMatchesNaive(t *testing.T) {
	g := tensor.NewRNG(20)
	for _, c := range attnCases {
		q, k, v, pk, pv, mask := c.inputs(g)
		var pkt, pvt *tensor.Tensor
		if pk != nil {
			pkt, pvt = pk.Value, pv.Value
		}
		got := (*Tape)(nil).Attention(q, k, v, pk, pv, c.s, mask).Value.Data
		want := naiveAttention(q.Value, k.Value, v.Value, pkt, pvt, c.s, c.prefix, mask)
		for i, w := range want {
			if d := math.Abs(float64(got[i]) - w); d > 1e-5 || math.IsNaN(float64(got[i])) {
				t.Errorf("%v: out[%d] = %v, want %v", c, i, got[i], w)
				break
			}
		}
	}
}

func TestGradAttention(t *testing.T) {
	g := tensor.NewRNG(21)
	for _, c := range attnCases {
		q, k, v, pk, pv, mask := c.inputs(g)
		in := []*Var{q, k, v}
		if pk != nil {
			in = append(in, pk, pv)
		}
		checkGrad(t, c.String(), in, func(tp *Tape) *Var { return tp.Attention(q, k, v, pk, pv, c.s, mask) })
	}
	// Gradients reach only the inputs that require them: frozen prefix.
	c := attnCases[2]
	q, k, v, pk, pv, _ := c.inputs(g)
	pk.SetTrainable(false)
	pv.SetTrainable(false)
	tp := NewTape()
	tp.Backward(tp.Sum(tp.Attention(q, k, v, pk, pv, c.s, nil)))
	if pk.Grad != nil || pv.Grad != nil || q.Grad == nil || k.Grad == nil || v.Grad == nil {
		t.Error("gradients reached a frozen prefix or missed q/k/v")
	}
}

// A KV cache: attending with T new tokens after a per-sequence prefix of
// cached keys equals the last T rows of attention over the whole sequence.
func TestAttentionKVCacheConsistent(t *testing.T) {
	g := tensor.NewRNG(22)
	s := AttnShape{Batch: 2, T: 5, Heads: 4, KVHeads: 2, HeadDim: 6}
	q, k, v := randVar(g, false, 10, 24), randVar(g, false, 10, 12), randVar(g, false, 10, 12)
	full := (*Tape)(nil).Attention(q, k, v, nil, nil, s, nil).Value
	const P = 3 // cached tokens per sequence
	split := func(x *Var, lo, hi int) *Var {
		c := x.Value.Cols()
		var d []float32
		for b := 0; b < 2; b++ {
			d = append(d, x.Value.Data[(b*5+lo)*c:(b*5+hi)*c]...)
		}
		return Const(tensor.FromData(d, 2*(hi-lo), c))
	}
	sc := AttnShape{Batch: 2, T: 5 - P, Heads: 4, KVHeads: 2, HeadDim: 6, PrefixPerBatch: true}
	got := (*Tape)(nil).Attention(split(q, P, 5), split(k, P, 5), split(v, P, 5), split(k, 0, P), split(v, 0, P), sc, nil).Value
	want := split(Const(full), P, 5).Value
	for i := range want.Data {
		if math.Abs(float64(got.Data[i]-want.Data[i])) > 1e-6 {
			t.Fatalf("cached attention [%d] = %v, full %v", i, got.Data[i], want.Data[i])
		}
	}
}

// A KV cache is read in place: prefix rows [Batch·capacity, kd] of which
// each sequence uses its first PrefixLen must give exactly what the gathered
// [Batch·PrefixLen, kd] prefix gives, forward and backward, and leave the
// unused rows' gradients zero.
func TestAttentionPrefixLenReadsInPlace(t *testing.T) {
	const P, capacity = 3, 5
	for _, padded := range []bool{false, true} {
		c := attnCase{s: AttnShape{Batch: 3, T: 2, Heads: 4, KVHeads: 2, HeadDim: 6, PrefixPerBatch: true}, prefix: P}
		if padded {
			c.padLeft, c.padPrefix = []int{0, 1, 0}, true
		}
		g := tensor.NewRNG(21)
		q, k, v, pk, pv, mask := c.inputs(g)
		kd := c.s.KVHeads * c.s.HeadDim
		spread := func(p *Var) *Var {
			buf := tensor.New(c.s.Batch*capacity, kd).Normal(g, 0, 100) // junk beyond each prefix
			for b := 0; b < c.s.Batch; b++ {
				copy(buf.Data[b*capacity*kd:(b*capacity+P)*kd], p.Value.Data[b*P*kd:(b+1)*P*kd])
			}
			return Param("spread", buf, true)
		}
		sk, sv := spread(pk), spread(pv)
		dout := tensor.New(c.s.Batch*c.s.T, c.s.Heads*c.s.HeadDim).Normal(g, 0, 1)

		tp := NewTape()
		want := tp.Attention(q, k, v, pk, pv, c.s, mask)
		tp.BackwardFrom(want, dout)
		grads := [][]float32{q.Grad.Data, k.Grad.Data, v.Grad.Data}
		for _, x := range []*Var{q, k, v} {
			x.Grad = nil
		}
		s := c.s
		s.PrefixLen = P
		got := tp.Attention(q, k, v, sk, sv, s, mask)
		tp.BackwardFrom(got, dout)
		same := func(what string, a, b []float32) {
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("padded=%v: %s[%d] = %v in place, %v gathered", padded, what, i, b[i], a[i])
				}
			}
		}
		same("out", want.Value.Data, got.Value.Data)
		for i, x := range []*Var{q, k, v} {
			same("grad", grads[i], x.Grad.Data)
		}
		for _, p := range [][2]*Var{{pk, sk}, {pv, sv}} {
			for b := 0; b < c.s.Batch; b++ {
				same("prefix grad", p[0].Grad.Data[b*P*kd:(b+1)*P*kd], p[1].Grad.Data[b*capacity*kd:(b*capacity+P)*kd])
				for _, x := range p[1].Grad.Data[(b*capacity+P)*kd : (b+1)*capacity*kd] {
					if x != 0 {
						t.Fatalf("padded=%v: gradient %v reached an unused cache row", padded, x)
					}
				}
			}
		}
	}
}
