package fused

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// AttnDims describes a causal grouped-query attention over Batch sequences
// of T new tokens. q is [Batch·T, Heads·HeadDim]; k and v are
// [Batch·T, KVHeads·HeadDim]; query head h reads kv head h/(Heads/KVHeads).
// Prefix keys and values (prefix tuning, or a KV cache) come before the
// new ones: Prefix rows per sequence, stored [Batch·Prefix, KVHeads·HeadDim]
// when PrefixPerBatch, else [Prefix, KVHeads·HeadDim] shared by every
// sequence. Query t of a sequence sees all its prefix keys and new keys
// 0..t, except those a key mask marks as padding.
type AttnDims struct {
	Batch, T, Heads, KVHeads, HeadDim int
	Prefix                            int
	PrefixPerBatch                    bool
}

// Keys is the number of keys a sequence has: Prefix + T.
func (d AttnDims) Keys() int { return d.Prefix + d.T }

func (d AttnDims) check(op string, q, k, v, pk, pv []float32, keyMask []bool) {
	if d.Batch < 0 || d.T < 0 || d.Prefix < 0 || d.Heads <= 0 || d.KVHeads <= 0 || d.HeadDim <= 0 || d.Heads%d.KVHeads != 0 {
		panic(fmt.Sprintf("fused.%s: bad attention dims %+v (heads must be a multiple of kv heads)", op, d))
	}
	rows, qd, kd := d.Batch*d.T, d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	need(op, "q", q, rows*qd)
	need(op, "k", k, rows*kd)
	need(op, "v", v, rows*kd)
	if d.Prefix > 0 {
		pr := d.Prefix
		if d.PrefixPerBatch {
			pr *= d.Batch
		}
		need(op, "prefix k", pk, pr*kd)
		need(op, "prefix v", pv, pr*kd)
	}
	if keyMask != nil && len(keyMask) != d.Batch*d.Keys() {
		panic(fmt.Sprintf("fused.%s: key mask has %d entries, want batch %d × keys %d", op, len(keyMask), d.Batch, d.Keys()))
	}
}

// attnSeq locates the keys and values one (sequence, kv head) pair reads.
type attnSeq struct {
	d            AttnDims
	b, kvh, kd   int
	k, v, pk, pv []float32
	mask         []bool // this sequence's Keys() entries, or nil
	prefixRow0   int    // first prefix row of this sequence
}

func newAttnSeq(d AttnDims, b, kvh int, k, v, pk, pv []float32, keyMask []bool) attnSeq {
	s := attnSeq{d: d, b: b, kvh: kvh, kd: d.KVHeads * d.HeadDim, k: k, v: v, pk: pk, pv: pv}
	if keyMask != nil {
		s.mask = keyMask[b*d.Keys() : (b+1)*d.Keys()]
	}
	if d.PrefixPerBatch {
		s.prefixRow0 = b * d.Prefix
	}
	return s
}

// offset is where key j (prefix keys first) of this sequence and kv head
// starts, and whether it lives in the prefix tensors.
func (s *attnSeq) offset(j int) (int, bool) {
	if j < s.d.Prefix {
		return (s.prefixRow0+j)*s.kd + s.kvh*s.d.HeadDim, true
	}
	return (s.b*s.d.T+j-s.d.Prefix)*s.kd + s.kvh*s.d.HeadDim, false
}

func (s *attnSeq) key(j int) []float32 {
	o, pre := s.offset(j)
	if pre {
		return s.pk[o : o+s.d.HeadDim]
	}
	return s.k[o : o+s.d.HeadDim]
}

func (s *attnSeq) value(j int) []float32 {
	o, pre := s.offset(j)
	if pre {
		return s.pv[o : o+s.d.HeadDim]
	}
	return s.v[o : o+s.d.HeadDim]
}

func (s *attnSeq) visible(j int) bool { return s.mask == nil || s.mask[j] }

// AttentionForward computes out = softmax(q·kᵀ/√hd + causal/padding mask)·v
// and lse [Batch·Heads·T] (index (b·Heads+h)·T+t), the log-sum-exp of each
// query row's scores, which the backward uses to recompute probabilities.
// Work is split over (sequence, head) pairs and each query row is handled on
// its own with one scores buffer of Prefix+T values, so no T×(Prefix+T)
// matrix is ever formed. A query that may see no key gets a zero output and
// lse = −Inf.
func AttentionForward(out, lse, q, k, v, pk, pv []float32, keyMask []bool, d AttnDims) {
	d.check("AttentionForward", q, k, v, pk, pv, keyMask)
	hd, qd := d.HeadDim, d.Heads*d.HeadDim
	need("AttentionForward", "out", out, d.Batch*d.T*qd)
	need("AttentionForward", "lse", lse, d.Batch*d.Heads*d.T)
	group := d.Heads / d.KVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	negInf := float32(math.Inf(-1))
	parallel.For(d.Batch*d.Heads, 1, func(lo, hi int) {
		scores := make([]float32, d.Keys())
		for bh := lo; bh < hi; bh++ {
			b, h := bh/d.Heads, bh%d.Heads
			seq := newAttnSeq(d, b, h/group, k, v, pk, pv, keyMask)
			for t := 0; t < d.T; t++ {
				row := (b*d.T+t)*qd + h*hd
				qr, or := q[row:row+hd], out[row:row+hd]
				nk := d.Prefix + t + 1
				m := negInf
				for j := 0; j < nk; j++ {
					if !seq.visible(j) {
						scores[j] = negInf
						continue
					}
					s := dot(qr, seq.key(j)) * scale
					scores[j] = s
					m = max(m, s)
				}
				clear(or)
				li := bh*d.T + t
				if m == negInf {
					lse[li] = negInf
					continue
				}
				var sum float64
				for j := 0; j < nk; j++ {
					if scores[j] == negInf {
						continue
					}
					p := exp32(scores[j] - m)
					sum += float64(p)
					axpy(or, p, seq.value(j))
				}
				inv := float32(1 / sum)
				for i := range or {
					or[i] *= inv
				}
				lse[li] = m + float32(math.Log(sum))
			}
		}
	})
}

// AttentionBackward accumulates the gradients of AttentionForward into dq,
// dk, dv, dpk and dpv (each may be nil), given the forward's out and lse.
// Per query row, probabilities are recomputed from lse and
// ds = p ⊙ (dout·vⱼ − dout·out). Work is split over (sequence, kv head)
// pairs, which own disjoint rows of every gradient except a prefix shared by
// all sequences; that one is summed per sequence and then over sequences in
// order, so results do not depend on the thread count.
func AttentionBackward(dq, dk, dv, dpk, dpv, dout, out, lse, q, k, v, pk, pv []float32, keyMask []bool, d AttnDims) {
	op := "AttentionBackward"
	d.check(op, q, k, v, pk, pv, keyMask)
	hd, qd, kd := d.HeadDim, d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	rows := d.Batch * d.T
	need(op, "dout", dout, rows*qd)
	need(op, "out", out, rows*qd)
	need(op, "lse", lse, d.Batch*d.Heads*d.T)
	for _, g := range []struct {
		name string
		s    []float32
		n    int
	}{{"dq", dq, rows * qd}, {"dk", dk, rows * kd}, {"dv", dv, rows * kd}} {
		if g.s != nil {
			need(op, g.name, g.s, g.n)
		}
	}
	if d.Prefix == 0 {
		dpk, dpv = nil, nil
	}
	// A shared prefix gets one partial gradient per sequence.
	sharedParts := !d.PrefixPerBatch && d.Batch > 1
	prefixRows := d.Prefix
	if d.PrefixPerBatch {
		prefixRows *= d.Batch
	}
	var partK, partV []float32
	for _, g := range []struct {
		s    []float32
		part *[]float32
		name string
	}{{dpk, &partK, "dprefix k"}, {dpv, &partV, "dprefix v"}} {
		if g.s == nil {
			continue
		}
		need(op, g.name, g.s, prefixRows*kd)
		if sharedParts {
			*g.part = make([]float32, d.Batch*d.Prefix*kd)
		}
	}
	group := d.Heads / d.KVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	negInf := float32(math.Inf(-1))
	parallel.For(d.Batch*d.KVHeads, 1, func(lo, hi int) {
		for bk := lo; bk < hi; bk++ {
			b, kvh := bk/d.KVHeads, bk%d.KVHeads
			seq := newAttnSeq(d, b, kvh, k, v, pk, pv, keyMask)
			// Gradient slices in the layout of the keys this sequence reads (a
			// per-sequence partial of a shared prefix has the prefix's layout).
			gpk, gpv := dpk, dpv
			if sharedParts {
				gpk, gpv = nil, nil
				if partK != nil {
					gpk = partK[b*d.Prefix*kd : (b+1)*d.Prefix*kd]
				}
				if partV != nil {
					gpv = partV[b*d.Prefix*kd : (b+1)*d.Prefix*kd]
				}
			}
			gradAt := func(j int, newG, preG []float32) []float32 {
				o, pre := seq.offset(j)
				if pre {
					if preG == nil {
						return nil
					}
					return preG[o : o+hd]
				}
				if newG == nil {
					return nil
				}
				return newG[o : o+hd]
			}
			for h := kvh * group; h < (kvh+1)*group; h++ {
				for t := 0; t < d.T; t++ {
					L := lse[(b*d.Heads+h)*d.T+t]
					if L == negInf {
						continue
					}
					row := (b*d.T+t)*qd + h*hd
					qr, dor := q[row:row+hd], dout[row:row+hd]
					var dqr []float32
					if dq != nil {
						dqr = dq[row : row+hd]
					}
					D := dot(dor, out[row:row+hd])
					for j := 0; j < d.Prefix+t+1; j++ {
						if !seq.visible(j) {
							continue
						}
						kj, vj := seq.key(j), seq.value(j)
						p := exp32(dot(qr, kj)*scale - L)
						ds := p * (dot(dor, vj) - D) * scale
						if dqr != nil {
							axpy(dqr, ds, kj)
						}
						if g := gradAt(j, dk, gpk); g != nil {
							axpy(g, ds, qr)
						}
						if g := gradAt(j, dv, gpv); g != nil {
							axpy(g, p, dor)
						}
					}
				}
			}
		}
	})
	if sharedParts {
		n := d.Prefix * kd
		for b := 0; b < d.Batch; b++ {
			if partK != nil {
				axpy(dpk[:n], 1, partK[b*n:(b+1)*n])
			}
			if partV != nil {
				axpy(dpv[:n], 1, partV[b*n:(b+1)*n])
			}
		}
	}
}
