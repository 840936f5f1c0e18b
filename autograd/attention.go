package autograd

import (
	"fmt"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
)

// AttnShape describes an Attention call: Batch sequences of T new tokens,
// Heads query heads and KVHeads key/value heads of HeadDim each. With
// PrefixPerBatch, prefix keys/values are [Batch·P, KVHeads·HeadDim] (a KV
// cache: P = rows/Batch); otherwise they are [P, KVHeads·HeadDim], shared by
// every sequence (prefix tuning).
//
// PrefixLen, with PrefixPerBatch, makes each sequence use only the first
// PrefixLen of its P rows: a KV cache of capacity P read in place.
//
// SegStart, when not nil, packs several examples into each sequence
// (Batch·T entries): query t of a sequence sees its new keys
// SegStart[b·T+t]..t only, and every prefix key (fused.AttnDims).
type AttnShape struct {
	Batch, T, Heads, KVHeads, HeadDim int
	PrefixPerBatch                    bool
	PrefixLen                         int
	SegStart                          []int
}

// Attention computes causal softmax(q·kᵀ/√hd)·v with grouped-query heads
// (query head h reads kv head h/(Heads/KVHeads)). q is [Batch·T,
// Heads·HeadDim], k and v [Batch·T, KVHeads·HeadDim], rows sequence-major
// (row b·T+t). prefixK/prefixV (both nil or both set) are keys and values
// every query sees before the new ones; query t sees new keys 0..t.
// keyMask, when not nil, has Batch·(P+T) entries (each sequence's prefix
// keys, then its new keys); false marks padding no query may attend to. A
// query that may see no key outputs zeros. The result is [Batch·T,
// Heads·HeadDim]; gradients reach q, k, v, prefixK and prefixV.
//
// Nothing T×(P+T)-sized is stored: the forward keeps each query row's
// log-sum-exp, and the backward recomputes probabilities from it.
func (tp *Tape) Attention(q, k, v, prefixK, prefixV *Var, s AttnShape, keyMask []bool) *Var {
	// With a tape (training, gradient checks) the score products take the
	// packed GEMM; inference keeps the one-row arithmetic decoding needs.
	d := fused.AttnDims{Batch: s.Batch, T: s.T, Heads: s.Heads, KVHeads: s.KVHeads, HeadDim: s.HeadDim, PrefixPerBatch: s.PrefixPerBatch,
		Packed: tp != nil}
	if s.Batch <= 0 || s.T <= 0 || s.Heads <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 || s.Heads%s.KVHeads != 0 ||
		s.PrefixLen < 0 || (s.PrefixLen > 0 && !s.PrefixPerBatch) {
		panic(fmt.Sprintf("autograd.Attention: bad shape %+v (heads must be a positive multiple of kv heads; PrefixLen needs PrefixPerBatch)", s))
	}
	rows, qd, kd := s.Batch*s.T, s.Heads*s.HeadDim, s.KVHeads*s.HeadDim
	checkMatrix("Attention", "q", q, rows, qd)
	checkMatrix("Attention", "k", k, rows, kd)
	checkMatrix("Attention", "v", v, rows, kd)
	var pk, pv []float32
	if (prefixK == nil) != (prefixV == nil) {
		panic("autograd.Attention: prefixK and prefixV must both be set or both be nil")
	}
	if prefixK != nil {
		if !tensor.SameShape(prefixK.Value.Shape, prefixV.Value.Shape) {
			panicShapes("Attention(prefixK vs prefixV)", prefixK.Value.Shape, prefixV.Value.Shape)
		}
		pr := prefixK.Value.Rows()
		if prefixK.Value.Cols() != kd || (s.PrefixPerBatch && pr%s.Batch != 0) {
			panicShapes("Attention(prefix vs k)", prefixK.Value.Shape, k.Value.Shape)
		}
		d.Prefix = pr
		if s.PrefixPerBatch {
			d.Prefix = pr / s.Batch
			if s.PrefixLen > 0 {
				if s.PrefixLen > d.Prefix {
					panic(fmt.Sprintf("autograd.Attention: prefix length %d beyond the %d rows per sequence of prefix shape %v", s.PrefixLen, d.Prefix, prefixK.Value.Shape))
				}
				d.Prefix, d.PrefixStride = s.PrefixLen, d.Prefix
			}
		}
		pk, pv = prefixK.Value.F32(), prefixV.Value.F32()
	}
	if keyMask != nil && len(keyMask) != s.Batch*d.Keys() {
		panic(fmt.Sprintf("autograd.Attention: key mask has %d entries, want batch %d × (prefix %d + T %d)", len(keyMask), s.Batch, d.Prefix, s.T))
	}
	if keyMask != nil { // the backward reads it later; the caller may reuse it
		keyMask = append([]bool(nil), keyMask...)
	}
	if s.SegStart != nil {
		if len(s.SegStart) != rows {
			panic(fmt.Sprintf("autograd.Attention: %d segment starts for %d query rows", len(s.SegStart), rows))
		}
		d.SegStart = append([]int(nil), s.SegStart...)
	}
	out := tensor.New(rows, qd)
	lse := make([]float32, s.Batch*s.Heads*s.T)
	qv, kv, vv := q.Value.F32(), k.Value.F32(), v.Value.F32()
	fused.AttentionForward(out.Data, lse, qv, kv, vv, pk, pv, keyMask, d)
	return tp.Result(out, func(o *Var) {
		fused.AttentionBackward(gradOrNil(q), gradOrNil(k), gradOrNil(v), gradOrNil(prefixK), gradOrNil(prefixV),
			o.Grad.Data, out.Data, lse, qv, kv, vv, pk, pv, keyMask, d)
	}, q, k, v, prefixK, prefixV)
}

// checkMatrix panics unless x seen as a matrix is [rows, cols].
func checkMatrix(op, name string, x *Var, rows, cols int) {
	if x == nil {
		panic(fmt.Sprintf("autograd.%s: %s is nil", op, name))
	}
	if x.Value.Cols() != cols || x.Value.Rows() != rows {
		panicShapes(op+"("+name+")", x.Value.Shape, []int{rows, cols})
	}
}
