package sparse

import (
	"fmt"
	"math"
	"runtime"
	"slices"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// DefaultMaxFisherMiB is the methods' default bound, in MiB, on the Fisher
// (or gradient) sums held at once (FisherOptions.MaxBytes; their
// max_fisher_mib key).
const DefaultMaxFisherMiB = 64

// FisherBudget is the max_fisher_mib key of the methods that sum a Fisher
// or gradient estimate per entry (FishMask, Fish-Dip, SAM): a bound, in
// MiB, on the sums held at once; 0: all targets in one pass.
type FisherBudget struct {
	MaxFisherMiB int `json:"max_fisher_mib"`
}

// DefaultFisherBudget is DefaultMaxFisherMiB.
func DefaultFisherBudget() FisherBudget { return FisherBudget{MaxFisherMiB: DefaultMaxFisherMiB} }

// Check refuses a negative bound, naming method's key.
func (b FisherBudget) Check(method string) error {
	if b.MaxFisherMiB < 0 {
		return &peft.KeyError{Method: method, Key: "max_fisher_mib", Value: b.MaxFisherMiB, Allowed: "must be ≥ 0 (0: no bound)"}
	}
	return nil
}

// Bytes is the bound as FisherOptions.MaxBytes takes it.
func (b FisherBudget) Bytes() int64 { return int64(b.MaxFisherMiB) << 20 }

// FisherOptions sets how Fisher estimates the empirical Fisher information.
type FisherOptions struct {
	// Samples is how many training examples to use, one per backward
	// (batch size 1), from the first: FishMask's N. 0: all.
	Samples int
	// Examples, when set, are the examples to use instead (Fish-Dip's
	// highest-loss ones), in this order.
	Examples []int
	// ClipNorm, when positive, scales each tensor's gradient of a sample
	// to at most this L2 norm before squaring (child-tuning D clips per
	// tensor).
	ClipNorm float64
	// Mean divides the sum by the number of samples used.
	Mean bool
	// Signed sums the gradients themselves instead of their squares (SAM
	// scores the square of the summed gradient).
	Signed bool
	// MaxBytes bounds the sums held at once: the targets are taken in
	// consecutive groups whose sums fit (a group holds one target at the
	// least), and each group makes its own pass over the samples. 0: one
	// group, one pass.
	MaxBytes int64
}

// examples are the examples the options use, of n.
func (o FisherOptions) examples(n int) []int {
	if o.Examples != nil {
		return o.Examples
	}
	if o.Samples > 0 && o.Samples < n {
		n = o.Samples
	}
	ex := make([]int, n)
	for i := range ex {
		ex[i] = i
	}
	return ex
}

// probe sits last on a target Linear while the Fisher information is
// summed: its backward forms the weight's gradient dW = dYᵀ·X of the sample
// in a scratch buffer shared by every probe (backwards run one at a time),
// squares it into the sum and drops it. So no weight is made trainable, no
// dense gradient outlives its layer's backward, and only the sums of the
// current group and one scratch the size of the largest target exist.
// mark, a trainable scalar that nothing reads, makes the output require a
// gradient so that the backward reaches every probe.
type probe struct {
	nn.OwnedBy // "": runs in every pass
	sum        []float32
	scratch    []float32
	mark       *autograd.Var
	opt        *FisherOptions
	reached    bool
}

func (pr *probe) Apply(p *nn.Pass, l *nn.Linear, x, y *autograd.Var) *autograd.Var {
	if p.Tape == nil {
		return y
	}
	out, in := l.Out(), l.In()
	rows := y.Value.Rows()
	return p.Tape.Result(y.Value, func(o *autograd.Var) {
		g := o.Grad.Data
		if y.RequiresGrad() {
			dy := y.GradBuf().Data
			for i, v := range g {
				dy[i] += v
			}
		}
		dw := pr.scratch[:out*in]
		kernels.Gemm(true, false, out, in, rows, g, out, x.Value.F32(), in, dw, in, false)
		pr.reached = true
		scale := float32(1)
		if pr.opt.ClipNorm > 0 {
			var ss float64
			for _, v := range dw {
				ss += float64(v) * float64(v)
			}
			if norm := math.Sqrt(ss); norm > pr.opt.ClipNorm {
				scale = float32(pr.opt.ClipNorm / (norm + 1e-6))
			}
		}
		if pr.opt.Signed {
			for j, v := range dw {
				pr.sum[j] += v * scale
			}
			return
		}
		for j, v := range dw {
			v *= scale
			pr.sum[j] += v * v
		}
	}, y, x, pr.mark)
}

// Fisher is Σ_i (∇_W ℓ(x_i, y_i))² for each target weight W, the loss of
// each example alone with its true label (FishMask's "label-square"
// estimate), all targets in one pass (opt.MaxBytes is ignored: the result
// holds every sum). See FisherTopK for a bounded-memory selection.
func Fisher(pm *peft.Model, targets []*nn.Linear, obj peft.Objective, opt FisherOptions) ([][]float32, error) {
	return fisherGroup(pm, targets, obj, &opt, nil, nil)
}

// fisherGroup sums over the options' examples for targets, into buf (nil:
// allocated; else zeroed and carved into the sums), with scratch (nil:
// allocated) for the largest gradient.
func fisherGroup(pm *peft.Model, targets []*nn.Linear, obj peft.Objective, opt *FisherOptions, buf, scratch []float32) ([][]float32, error) {
	big := 0
	for _, l := range targets {
		big = max(big, l.Weight.Value.Numel())
	}
	if len(scratch) < big {
		scratch = make([]float32, big)
	}
	mark := autograd.Param("fisher probe", tensor.New(1), true)
	probes := make([]*probe, len(targets))
	sums := make([][]float32, len(targets))
	for t, l := range targets {
		if l.Weight.RequiresGrad() {
			return nil, fmt.Errorf("%s is already trained by another method: it cannot also be selected", l.Name)
		}
		n := l.Weight.Value.Numel()
		if len(buf) >= n {
			sums[t], buf = buf[:n:n], buf[n:]
			clear(sums[t])
		} else {
			sums[t] = make([]float32, n)
		}
		probes[t] = &probe{sum: sums[t], scratch: scratch, mark: mark, opt: opt}
		l.Deltas = append(l.Deltas, probes[t])
	}
	defer func() {
		for t, l := range targets {
			// DeleteFunc clears the freed slot: a probe left in the
			// backing array would keep its sums alive.
			l.Deltas = slices.DeleteFunc(l.Deltas, func(d nn.Delta) bool { return d == nn.Delta(probes[t]) })
			if len(l.Deltas) == 0 {
				l.Deltas = nil
			}
		}
		for _, p := range pm.TrainableParams() { // trained deltas (Fish-Dip) got gradients too
			p.Var.ZeroGrad()
		}
	}()
	used := 0
	for _, i := range opt.examples(obj.Len()) {
		tp := autograd.NewTape()
		loss, err := obj.Loss(&nn.Pass{Tape: tp}, []int{i})
		if err != nil {
			return nil, err
		}
		if loss == nil || !loss.RequiresGrad() {
			tp.Reset()
			continue // no target in this example
		}
		tp.Backward(loss)
		used++
	}
	if used == 0 {
		return nil, fmt.Errorf("no training example has a target to compute the Fisher information from")
	}
	for t, s := range sums {
		if opt.Mean {
			for j := range s {
				s[j] /= float32(used)
			}
		}
		if j := finite(s); j >= 0 {
			return nil, fmt.Errorf("the Fisher information of %s is not finite (entry %d): the loss or its gradient overflowed", targets[t].Name, j)
		}
	}
	return sums, nil
}

// groups splits targets into consecutive runs whose sums fit maxBytes.
func groups(targets []*nn.Linear, maxBytes int64) [][2]int {
	var out [][2]int
	lo, size := 0, int64(0)
	for t, l := range targets {
		b := int64(l.Weight.Value.Numel()) * 4
		if maxBytes > 0 && t > lo && size+b > maxBytes {
			out = append(out, [2]int{lo, t})
			lo, size = t, 0
		}
		size += b
	}
	return append(out, [2]int{lo, len(targets)})
}

// FisherTopK selects the global top k entries of the targets by what
// Fisher computes, holding at most opt.MaxBytes of sums at once: each group of targets
// makes its own pass over the examples and keeps only its k best entries
// as candidates, and the candidates of all groups are cut to the k best at
// the end. Every entry of the global top k is among its group's k best,
// and ties break the same way (earlier target, lower index), so the result
// equals TopK over the whole Fisher.
func FisherTopK(pm *peft.Model, targets []*nn.Linear, obj peft.Objective, opt FisherOptions, k int) ([][]int32, error) {
	gs := groups(targets, opt.MaxBytes)
	big := 0
	for _, l := range targets {
		big = max(big, l.Weight.Value.Numel())
	}
	scratch := make([]float32, big)
	most := 0
	for _, g := range gs {
		n := 0
		for _, l := range targets[g[0]:g[1]] {
			n += l.Weight.Value.Numel()
		}
		most = max(most, n)
	}
	buf := make([]float32, most) // one group's sums, reused by the next
	candIdx := make([][]int32, len(targets))
	candScore := make([][]float32, len(targets))
	for _, g := range gs {
		sums, err := fisherGroup(pm, targets[g[0]:g[1]], obj, &opt, buf, scratch)
		if err != nil {
			return nil, err
		}
		if len(gs) == 1 {
			return TopK(sums, k), nil
		}
		for i, ix := range TopK(sums, k) {
			t := g[0] + i
			candIdx[t] = ix
			candScore[t] = make([]float32, len(ix))
			for e, j := range ix {
				candScore[t][e] = sums[i][j]
			}
		}
		sums = nil
		runtime.GC()
		// Cut the candidates so far to k: what is not among the k best of
		// the targets seen cannot be among the k best of all.
		keep := TopK(candScore[:g[1]], k)
		for t := 0; t < g[1]; t++ {
			ix, sc := make([]int32, len(keep[t])), make([]float32, len(keep[t]))
			for e, c := range keep[t] {
				ix[e], sc[e] = candIdx[t][c], candScore[t][c]
			}
			candIdx[t], candScore[t] = ix, sc
		}
	}
	return candIdx, nil
}

// EachFisher computes what Fisher does group by group, as FisherTopK
// bounds them (opt.MaxBytes), and hands each target's sums to fn (target
// index, sums) before the next group reuses their memory.
func EachFisher(pm *peft.Model, targets []*nn.Linear, obj peft.Objective, opt FisherOptions, fn func(t int, sum []float32) error) error {
	gs := groups(targets, opt.MaxBytes)
	most := 0
	for _, g := range gs {
		n := 0
		for _, l := range targets[g[0]:g[1]] {
			n += l.Weight.Value.Numel()
		}
		most = max(most, n)
	}
	buf := make([]float32, most)
	for _, g := range gs {
		sums, err := fisherGroup(pm, targets[g[0]:g[1]], obj, &opt, buf, nil)
		if err != nil {
			return err
		}
		for i, s := range sums {
			if err := fn(g[0]+i, s); err != nil {
				return err
			}
		}
	}
	return nil
}
