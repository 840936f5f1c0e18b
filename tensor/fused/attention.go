package fused

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/tensor/kernels"
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
//
// PrefixStride, when PrefixPerBatch and non-zero, is the number of rows from
// one sequence's prefix to the next (at least Prefix): a KV cache of fixed
// capacity is then read in place, without gathering its filled rows.
//
// SegStart, when not nil, packs several examples into each sequence: it has
// Batch·T entries, and query t of sequence b sees only the new keys from
// SegStart[b·T+t] to t (its own example's; prefix keys stay visible to
// all), so no attention crosses from one packed example to another.
//
// Packed runs the tiles' score products (queries × keys) through the
// packed GEMM (kernels.GemmPacked), about twice the GEMV path's rate for
// a tile of 32 queries; without it they take Gemm's one-row arithmetic, so
// that a query's scores are bit for bit the same in a tile of a prompt and
// alone in a decode step. Training sets it (nothing there decodes).
type AttnDims struct {
	Batch, T, Heads, KVHeads, HeadDim int
	Prefix                            int
	PrefixPerBatch                    bool
	PrefixStride                      int
	SegStart                          []int
	Packed                            bool
}

// prefixStride is the row distance between sequences' prefixes.
func (d AttnDims) prefixStride() int {
	if d.PrefixStride > 0 {
		return d.PrefixStride
	}
	return d.Prefix
}

// Keys is the number of keys a sequence has: Prefix + T.
func (d AttnDims) Keys() int { return d.Prefix + d.T }

func (d AttnDims) check(op string, q, k, v, pk, pv []float32, keyMask []bool) {
	if d.Batch < 0 || d.T < 0 || d.Prefix < 0 || d.Heads <= 0 || d.KVHeads <= 0 || d.HeadDim <= 0 || d.Heads%d.KVHeads != 0 ||
		(d.PrefixStride != 0 && (!d.PrefixPerBatch || d.PrefixStride < d.Prefix)) {
		panic(fmt.Sprintf("fused.%s: bad attention dims %+v (heads must be a multiple of kv heads)", op, d))
	}
	rows, qd, kd := d.Batch*d.T, d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	need(op, "q", q, rows*qd)
	need(op, "k", k, rows*kd)
	need(op, "v", v, rows*kd)
	if d.Prefix > 0 {
		pr := d.Prefix
		if d.PrefixPerBatch && d.Batch > 0 {
			pr = (d.Batch-1)*d.prefixStride() + d.Prefix
		}
		need(op, "prefix k", pk, pr*kd)
		need(op, "prefix v", pv, pr*kd)
	}
	if keyMask != nil && len(keyMask) != d.Batch*d.Keys() {
		panic(fmt.Sprintf("fused.%s: key mask has %d entries, want batch %d × keys %d", op, len(keyMask), d.Batch, d.Keys()))
	}
	if d.SegStart != nil {
		if len(d.SegStart) != rows {
			panic(fmt.Sprintf("fused.%s: %d segment starts for %d query rows", op, len(d.SegStart), rows))
		}
		for i, st := range d.SegStart {
			if st < 0 || st > i%max(d.T, 1) {
				panic(fmt.Sprintf("fused.%s: query %d of its sequence starts its segment at key %d", op, i%d.T, st))
			}
		}
	}
}

// attnTile is the number of query rows processed together: their scores
// against every key they may see, attnTile×(Prefix+T) values, are the only
// score storage (one buffer per worker), and each tile's products run as
// GEMMs.
const attnTile = 32

// attnSeq holds the operands one (sequence, kv head) pair reads, each
// starting at its first row and column and read with the row strides qd (q,
// out and their gradients) or kd (keys, values and theirs).
type attnSeq struct {
	d             AttnDims
	qd, kd        int
	k, v, pk, pv  []float32 // new and prefix keys/values of this kv head
	mask          []bool    // this sequence's Keys() entries, or nil
	seg           []int     // this sequence's T segment starts, or nil
	scale, negInf float32
	scores        []float32 // per-worker tile buffer
}

func newAttnSeq(d AttnDims) *attnSeq {
	s := &attnSeq{d: d, qd: d.Heads * d.HeadDim, kd: d.KVHeads * d.HeadDim,
		scale: float32(1 / math.Sqrt(float64(d.HeadDim))), negInf: float32(math.Inf(-1))}
	s.scores = make([]float32, min(attnTile, d.T)*d.Keys())
	return s
}

// kvOffsets returns where sequence b's new and prefix rows of kv head kvh
// start in k/v and in the prefix tensors.
func (s *attnSeq) kvOffsets(b, kvh int) (newOff, preOff int) {
	d := s.d
	newOff = b*d.T*s.kd + kvh*d.HeadDim
	preOff = kvh * d.HeadDim
	if d.PrefixPerBatch {
		preOff += b * d.prefixStride() * s.kd
	}
	return
}

// bind points s at sequence b and kv head kvh.
func (s *attnSeq) bind(b, kvh int, k, v, pk, pv []float32, keyMask []bool) {
	newOff, preOff := s.kvOffsets(b, kvh)
	s.k, s.v = k[newOff:], v[newOff:]
	if s.d.Prefix > 0 {
		s.pk, s.pv = pk[preOff:], pv[preOff:]
	}
	s.mask = nil
	if keyMask != nil {
		s.mask = keyMask[b*s.d.Keys() : (b+1)*s.d.Keys()]
	}
	s.seg = nil
	if s.d.SegStart != nil {
		s.seg = s.d.SegStart[b*s.d.T : (b+1)*s.d.T]
	}
}

// rowsTimesKeys computes dst[r, j] = a_r·key_j for the n query rows a
// (stride qd) and every key j < nk the tile sees (prefix keys, then new
// keys), where keys are taken from pre/cur (the prefix and new rows of
// either K or V); dst has row stride nk.
func (s *attnSeq) rowsTimesKeys(dst []float32, n, nk int, a, pre, cur []float32) {
	P, hd := s.d.Prefix, s.d.HeadDim
	gemm := kernels.Gemm
	if s.d.Packed {
		gemm = kernels.GemmPacked
	}
	if P > 0 {
		gemm(false, true, n, P, hd, a, s.qd, pre, s.kd, dst, nk, false)
	}
	gemm(false, true, n, nk-P, hd, a, s.qd, cur, s.kd, dst[P:], nk, false)
}

// probsTimesKeys does dst (n rows, stride qd) += p·keys (p [n, nk], stride
// nk), or = when !acc.
func (s *attnSeq) probsTimesKeys(dst []float32, n, nk int, p, pre, cur []float32, acc bool) {
	P, hd := s.d.Prefix, s.d.HeadDim
	if P > 0 {
		kernels.Gemm(false, false, n, hd, P, p, nk, pre, s.kd, dst, s.qd, acc)
		acc = true
	}
	kernels.Gemm(false, false, n, hd, nk-P, p[P:], nk, cur, s.kd, dst, s.qd, acc)
}

// keysGrad does gpre/gcur (the prefix and new rows of a key or value
// gradient, stride kd) += pᵀ·a for p [n, nk] and n rows a (stride qd). A nil
// destination is skipped.
func (s *attnSeq) keysGrad(gpre, gcur []float32, n, nk int, p, a []float32) {
	P, hd := s.d.Prefix, s.d.HeadDim
	if P > 0 && gpre != nil {
		kernels.Gemm(true, false, P, hd, n, p, nk, a, s.qd, gpre, s.kd, true)
	}
	if gcur != nil {
		kernels.Gemm(true, false, nk-P, hd, n, p[P:], nk, a, s.qd, gcur, s.kd, true)
	}
}

// probs turns the raw scores of query row t (row[j] = q·k_j for j < nk)
// into probabilities exp(scale·q·k_j − lse) in place, 0 where the key is
// masked or in the future. With lse unknown (forward) it computes and
// returns it; a row that may see no key is all 0 with lse −Inf.
func (s *attnSeq) probs(row []float32, t int, lse float32, forward bool) float32 {
	// Keys from limit on are in the future; below it, the mask decides,
	// and new keys of an earlier packed example are hidden.
	limit := min(len(row), s.d.Prefix+t+1)
	clear(row[limit:])
	row = row[:limit]
	if s.seg != nil {
		for j := s.d.Prefix; j < s.d.Prefix+s.seg[t]; j++ {
			row[j] = s.negInf
		}
	}
	mask := s.mask
	if mask != nil {
		mask = mask[:limit]
		for j, ok := range mask {
			if !ok {
				row[j] = s.negInf // as if the score were −Inf: exp gives 0
			}
		}
	}
	if forward {
		m, sum := softmaxRow(row, s.scale)
		if m == s.negInf {
			clear(row)
			return s.negInf
		}
		return m + float32(math.Log(sum))
	}
	if lse == s.negInf {
		clear(row)
		return lse
	}
	for j, v := range row {
		row[j] = v*s.scale - lse
	}
	ExpTo(row, row)
	return lse
}

// AttentionForward computes out = softmax(q·kᵀ/√hd + causal/padding mask)·v
// and lse [Batch·Heads·T] (index (b·Heads+h)·T+t), the log-sum-exp of each
// query row's scaled scores, which the backward uses to recompute
// probabilities. Work is split over (sequence, head) pairs; within one,
// query rows go in tiles of attnTile whose scores against the keys they may
// see are formed by GEMM, softmaxed row by row and multiplied into the
// values, so no T×(Prefix+T) matrix is ever formed. A query that may see no
// key gets a zero output and lse = −Inf.
func AttentionForward(out, lse, q, k, v, pk, pv []float32, keyMask []bool, d AttnDims) {
	d.check("AttentionForward", q, k, v, pk, pv, keyMask)
	hd, qd := d.HeadDim, d.Heads*d.HeadDim
	need("AttentionForward", "out", out, d.Batch*d.T*qd)
	need("AttentionForward", "lse", lse, d.Batch*d.Heads*d.T)
	if d.T == 1 && hasAttnDecode(hd) {
		attentionDecode(out, lse, q, k, v, pk, pv, keyMask, d)
		return
	}
	attentionTiled(out, lse, q, k, v, pk, pv, keyMask, d)
}

// attentionTiled is AttentionForward's general path.
func attentionTiled(out, lse, q, k, v, pk, pv []float32, keyMask []bool, d AttnDims) {
	hd, qd := d.HeadDim, d.Heads*d.HeadDim
	group := d.Heads / d.KVHeads
	parallel.For(d.Batch*d.Heads, parallel.Grain(d.Batch*d.Heads, 1), func(lo, hi int) {
		s := newAttnSeq(d)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/d.Heads, bh%d.Heads
			s.bind(b, h/group, k, v, pk, pv, keyMask)
			for i0 := 0; i0 < d.T; i0 += attnTile {
				i1 := min(i0+attnTile, d.T)
				n, nk := i1-i0, d.Prefix+i1
				sc := s.scores[:n*nk]
				off := (b*d.T+i0)*qd + h*hd
				s.rowsTimesKeys(sc, n, nk, q[off:], s.pk, s.k)
				for r := 0; r < n; r++ {
					lse[bh*d.T+i0+r] = s.probs(sc[r*nk:(r+1)*nk], i0+r, 0, true)
				}
				s.probsTimesKeys(out[off:], n, nk, sc, s.pv, s.v, false)
			}
		}
	})
}

// attentionDecode is AttentionForward for one new token per sequence (a
// decoding step through a KV cache): per (sequence, head), the scores
// against every key in one pass of dot products, a softmax, and the
// probability-weighted sum of the values, each a vector kernel (AVX-512, for
// head sizes a multiple of 16) over the
// cache's rows read in place, instead of the tiled path's small GEMMs. The
// result equals the tiled path's up to float32 rounding.
func attentionDecode(out, lse, q, k, v, pk, pv []float32, keyMask []bool, d AttnDims) {
	hd, qd, kd := d.HeadDim, d.Heads*d.HeadDim, d.KVHeads*d.HeadDim
	group := d.Heads / d.KVHeads
	P, keys := d.Prefix, d.Keys()
	scale := float32(1 / math.Sqrt(float64(hd)))
	negInf := float32(math.Inf(-1))
	pairs := d.Batch * d.Heads
	// At least ~16K multiply-adds of scores and sums per chunk.
	parallel.For(pairs, parallel.Grain(pairs, max(1, (1<<14)/(keys*hd))), func(lo, hi int) {
		row := make([]float32, keys)
		for bh := lo; bh < hi; bh++ {
			b, h := bh/d.Heads, bh%d.Heads
			kvh := h / group
			newOff := b*kd + kvh*hd
			preOff := kvh * hd
			if d.PrefixPerBatch {
				preOff += b * d.prefixStride() * kd
			}
			qh := q[b*qd+h*hd:]
			attnDots(row, qh, pk[min(preOff, len(pk)):], kd, P, hd)
			attnDots(row[P:], qh, k[newOff:], kd, 1, hd)
			if keyMask != nil {
				for j, ok := range keyMask[b*keys : (b+1)*keys] {
					if !ok {
						row[j] = negInf
					}
				}
			}
			o := out[b*qd+h*hd : b*qd+h*hd+hd]
			clear(o)
			m, sum := softmaxRow(row, scale)
			if m == negInf { // no key to attend to: the output stays zero
				lse[bh] = negInf
				continue
			}
			lse[bh] = m + float32(math.Log(sum))
			attnAxpy(o, row, pv[min(preOff, len(pv)):], kd, P, hd)
			attnAxpy(o, row[P:], v[newOff:], kd, 1, hd)
		}
	})
}

// AttentionBackward accumulates the gradients of AttentionForward into dq,
// dk, dv, dpk and dpv (each may be nil), given the forward's out and lse.
// Per query tile, probabilities P are recomputed from lse, dP = dout·vᵀ,
// dS = P ⊙ (dP − rowsum(dout⊙out))/√hd, and dq += dS·k, dk += dSᵀ·q,
// dv += Pᵀ·dout, all as GEMMs. Work is split over (sequence, kv head)
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
	if d.PrefixPerBatch && d.Batch > 0 {
		prefixRows = (d.Batch-1)*d.prefixStride() + d.Prefix
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
	// from returns g from offset o, or nil for a gradient not wanted.
	from := func(g []float32, o int) []float32 {
		if g == nil {
			return nil
		}
		return g[o:]
	}
	group := d.Heads / d.KVHeads
	parallel.For(d.Batch*d.KVHeads, parallel.Grain(d.Batch*d.KVHeads, 1), func(lo, hi int) {
		s := newAttnSeq(d)
		dsc := make([]float32, min(attnTile, d.T)*d.Keys())
		for bk := lo; bk < hi; bk++ {
			b, kvh := bk/d.KVHeads, bk%d.KVHeads
			s.bind(b, kvh, k, v, pk, pv, keyMask)
			newOff, preOff := s.kvOffsets(b, kvh)
			gk, gv := from(dk, newOff), from(dv, newOff)
			gpk, gpv := from(dpk, preOff), from(dpv, preOff)
			if sharedParts { // this sequence's partial, laid out as the prefix
				gpk, gpv = from(partK, b*d.Prefix*kd+preOff), from(partV, b*d.Prefix*kd+preOff)
			}
			for h := kvh * group; h < (kvh+1)*group; h++ {
				for i0 := 0; i0 < d.T; i0 += attnTile {
					i1 := min(i0+attnTile, d.T)
					n, nk := i1-i0, d.Prefix+i1
					off := (b*d.T+i0)*qd + h*hd
					p, ds := s.scores[:n*nk], dsc[:n*nk]
					s.rowsTimesKeys(p, n, nk, q[off:], s.pk, s.k)
					s.rowsTimesKeys(ds, n, nk, dout[off:], s.pv, s.v)
					for r := 0; r < n; r++ {
						pr, dr := p[r*nk:(r+1)*nk], ds[r*nk:(r+1)*nk]
						s.probs(pr, i0+r, lse[(b*d.Heads+h)*d.T+i0+r], false)
						ro := off + r*qd
						D := dot(dout[ro:ro+hd], out[ro:ro+hd])
						for j, pj := range pr {
							dr[j] = pj * (dr[j] - D) * s.scale
						}
					}
					if dq != nil {
						s.probsTimesKeys(dq[off:], n, nk, ds, s.pk, s.k, true)
					}
					s.keysGrad(gpk, gk, n, nk, ds, q[off:])
					s.keysGrad(gpv, gv, n, nk, p, dout[off:])
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
