package fused

import (
	"math"
	"testing"
)

// The single-query decode path (attentionDecode) gives the tiled path's
// outputs and log-sum-exps up to float32 rounding: plain and grouped-query
// heads, a KV cache read in place at several lengths (empty included), a
// shared prefix, padding keys, and a sequence that may see no key. It is
// bitwise the same on 1 and 3 threads.
func TestAttentionDecodeMatchesTiled(t *testing.T) {
	if !hasAttnDecode(16) {
		t.Skip("no vector decode kernel on this machine")
	}
	val := func(n int, seed float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(math.Sin(seed + float64(i)*0.7))
		}
		return x
	}
	for _, c := range []struct {
		name                  string
		batch, heads, kv, hd  int
		prefix, stride        int
		perBatch, mask, empty bool
	}{
		{name: "mha", batch: 1, heads: 6, kv: 6, hd: 48, prefix: 37, stride: 50, perBatch: true},
		{name: "gqa", batch: 2, heads: 8, kv: 2, hd: 64, prefix: 100, stride: 128, perBatch: true},
		{name: "mqa long", batch: 1, heads: 4, kv: 1, hd: 32, prefix: 700, stride: 700, perBatch: true},
		{name: "no cache", batch: 3, heads: 4, kv: 2, hd: 16, prefix: 0, perBatch: true},
		{name: "one cached", batch: 2, heads: 2, kv: 1, hd: 16, prefix: 1, stride: 5, perBatch: true},
		{name: "shared prefix", batch: 2, heads: 4, kv: 4, hd: 32, prefix: 9},
		{name: "padded", batch: 3, heads: 4, kv: 2, hd: 48, prefix: 21, stride: 24, perBatch: true, mask: true},
		{name: "no key", batch: 2, heads: 2, kv: 2, hd: 16, prefix: 3, stride: 3, perBatch: true, mask: true, empty: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := AttnDims{Batch: c.batch, T: 1, Heads: c.heads, KVHeads: c.kv, HeadDim: c.hd, Prefix: c.prefix, PrefixPerBatch: c.perBatch}
			prefixRows := c.prefix
			if c.perBatch {
				d.PrefixStride = c.stride
				prefixRows = c.batch * max(c.stride, c.prefix)
			}
			qd, kd := c.heads*c.hd, c.kv*c.hd
			q, k, v := val(c.batch*qd, 1), val(c.batch*kd, 2), val(c.batch*kd, 3)
			pk, pv := val(prefixRows*kd, 4), val(prefixRows*kd, 5)
			var mask []bool
			if c.mask {
				mask = make([]bool, c.batch*d.Keys())
				for i := range mask {
					mask[i] = i%3 != 1
				}
				if c.empty { // sequence 1 sees nothing
					for j := 0; j < d.Keys(); j++ {
						mask[d.Keys()+j] = false
					}
				}
			}
			want, wantLSE := make([]float32, c.batch*qd), make([]float32, c.batch*c.heads)
			attentionTiled(want, wantLSE, q, k, v, pk, pv, mask, d)
			var first []float32
			for _, th := range []int{1, 3} {
				got, lse := make([]float32, c.batch*qd), make([]float32, c.batch*c.heads)
				withThreads(th, func() { AttentionForward(got, lse, q, k, v, pk, pv, mask, d) })
				for i := range want {
					if d := math.Abs(float64(got[i] - want[i])); d > 1e-5 {
						t.Fatalf("threads %d: out[%d] = %g, tiled path %g", th, i, got[i], want[i])
					}
				}
				for i := range wantLSE {
					if wantLSE[i] != lse[i] && math.Abs(float64(lse[i]-wantLSE[i])) > 1e-5 {
						t.Fatalf("threads %d: lse[%d] = %g, tiled path %g", th, i, lse[i], wantLSE[i])
					}
				}
				if first == nil {
					first = got
				} else {
					for i := range got {
						if math.Float32bits(got[i]) != math.Float32bits(first[i]) {
							t.Fatalf("out[%d] differs between 1 and 3 threads", i)
						}
					}
				}
			}
		})
	}
}
