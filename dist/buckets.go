package dist

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
)

// DefaultBucketElems is the fusion buffer's size in float32 elements
// (16 MiB), between PyTorch DDP's 25 MB buckets and Horovod's 64 MB
// fusion threshold: big enough that per-message latency vanishes next to
// the bytes, small enough to cost little memory.
const DefaultBucketElems = 4 << 20

// Buckets sums the gradients of a fixed list of trainable parameters
// across the ranks. The gradients are laid end to end, in the list's
// order, and the stream is cut into buckets of at most cap elements; each
// bucket is copied into one reused fusion buffer, summed by one
// collective, and copied back. The cut depends only on the parameters'
// sizes, so every rank, and every run with the same ranks, reduces the
// same buffers in the same order.
type Buckets struct {
	vars  []*autograd.Var
	sizes []int
	total int
	buf   []float32
	flags []float64
}

// NewBuckets prepares the reduction of vars' gradients (each Var's Value
// fixes its size) in buckets of at most capElems elements (≤ 0:
// DefaultBucketElems).
func NewBuckets(vars []*autograd.Var, capElems int) *Buckets {
	if capElems <= 0 {
		capElems = DefaultBucketElems
	}
	b := &Buckets{vars: vars}
	for _, v := range vars {
		n := v.Value.Numel()
		b.sizes = append(b.sizes, n)
		b.total += n
	}
	b.buf = make([]float32, min(capElems, max(b.total, 1)))
	return b
}

// Elems is the number of gradient elements summed per reduction.
func (b *Buckets) Elems() int { return b.total }

// Bytes is the size of the gradients summed per reduction (float32).
func (b *Buckets) Bytes() int64 { return int64(b.total) * 4 }

// Count is the number of buckets (collectives) per reduction.
func (b *Buckets) Count() int { return (b.total + len(b.buf) - 1) / len(b.buf) }

// Sum replaces each gradient by its sum over the ranks, and extra (the
// step's loss, token counts, flags: anything the ranks must agree on) by
// its sum, in one more small collective. A parameter without a gradient
// on this rank counts as zeros; it gets a zero gradient buffer when
// another rank has one, and stays without one when no rank has, as on a
// single process (an optimizer skips such a parameter).
func (b *Buckets) Sum(c Communicator, extra []float64) error {
	c = Or(c)
	if c.Size() == 1 {
		return nil
	}
	b.flags = b.flags[:0]
	for _, v := range b.vars {
		has := 0.0
		if v.Grad != nil {
			has = 1
		}
		b.flags = append(b.flags, has)
	}
	b.flags = append(b.flags, extra...)
	if err := c.SumFloat64(b.flags); err != nil {
		return fmt.Errorf("dist: summing the step's counts: %w", err)
	}
	copy(extra, b.flags[len(b.vars):])
	for i, v := range b.vars {
		if b.flags[i] > 0 && v.Grad == nil {
			v.GradBuf()
		}
	}
	// Walk the stream bucket by bucket: a bucket covers
	// [start, start+len(chunk)) of the concatenated gradients.
	for start := 0; start < b.total; start += len(b.buf) {
		chunk := b.buf[:min(len(b.buf), b.total-start)]
		b.copyRange(start, chunk, true)
		if err := c.SumFloat32(chunk); err != nil {
			return fmt.Errorf("dist: summing gradient bucket %d of %d (%d bytes): %w", start/len(b.buf)+1, b.Count(), 4*len(chunk), err)
		}
		b.copyRange(start, chunk, false)
	}
	return nil
}

// copyRange copies the gradients' elements [start, start+len(chunk)) of
// the stream into chunk (in) or back out of it; a missing gradient reads
// as zeros and is not written.
func (b *Buckets) copyRange(start int, chunk []float32, in bool) {
	off := 0 // the stream position of parameter i's first element
	for i, n := range b.sizes {
		lo, hi := max(start, off), min(start+len(chunk), off+n)
		if lo < hi {
			dst := chunk[lo-start : hi-start]
			g := b.vars[i].Grad
			switch {
			case in && g == nil:
				clear(dst)
			case in:
				copy(dst, g.Data[lo-off:hi-off])
			case g != nil:
				copy(g.Data[lo-off:hi-off], dst)
			}
		}
		off += n
		if off >= start+len(chunk) {
			break
		}
	}
}
