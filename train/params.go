package train

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// Trainable returns the parameters that require a gradient, in order, each
// Var once (a tied weight listed under two names keeps its first name). It
// panics if two different trainable Vars share a name, since optimizer state
// and checkpoints are keyed by name.
func Trainable(ps nn.Params) nn.Params {
	var out nn.Params
	seen := map[*autograd.Var]bool{}
	names := map[string]bool{}
	for _, p := range ps {
		if p.Var == nil || !p.Var.RequiresGrad() || seen[p.Var] {
			continue
		}
		if names[p.Name] {
			panic(fmt.Sprintf("train: two trainable parameters are both named %q", p.Name))
		}
		seen[p.Var] = true
		names[p.Name] = true
		out = append(out, p)
	}
	return out
}

// chunkElems is the size of the pieces elementwise work is cut into: small
// enough to balance threads over one big tensor, big enough that scheduling
// costs nothing next to the arithmetic.
const chunkElems = 1 << 15

// segment is a contiguous range [lo, hi) of parameter p's elements.
type segment struct{ p, lo, hi int }

// segments cuts tensors of the given sizes into pieces of at most chunkElems
// elements. The cut depends only on the sizes, so per-segment results
// combined in segment order are the same on any number of threads.
func segments(sizes []int) []segment {
	var segs []segment
	for p, n := range sizes {
		for lo := 0; lo < n; lo += chunkElems {
			segs = append(segs, segment{p, lo, min(lo+chunkElems, n)})
		}
	}
	return segs
}

// forSegments runs fn over every segment, in parallel when there is enough
// work to pay for it.
// fn gets each segment's index in segs, for per-segment results.
func forSegments(segs []segment, fn func(i int, s segment)) {
	if len(segs) == 1 {
		fn(0, segs[0])
		return
	}
	parallel.For(len(segs), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			fn(i, segs[i])
		}
	})
}
