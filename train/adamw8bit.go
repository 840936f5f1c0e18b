package train

import (
	"fmt"
	"math"
	"slices"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
)

// AdamW8bit's layout, bitsandbytes' Optimizer2State with optim_bits=8
// (bnb.optim.AdamW8bit; bitsandbytes/optim/optimizer.py, commit 95f9af30).
const (
	// Block8bit is the number of state elements that share one absmax:
	// init_state hard-codes blocksize = 256 for 8-bit state, and every
	// backend's optimizer_update_8bit_blockwise uses 256.
	Block8bit = 256
	// Min8bitSize is min_8bit_size: a parameter with fewer elements keeps
	// float32 state (init_state: p.numel() < min_8bit_size → float32).
	Min8bitSize = 4096
)

// The two code books: state1 (exp_avg) uses the signed dynamic map
// (qmap1 = name2qmap["dynamic"] = create_dynamic_map(signed=True)), state2
// (exp_avg_sq) the unsigned one (qmap2 = "udynamic", signed=False).
var (
	qmap1 = quant.NewCode8(quant.DynamicMap())
	qmap2 = quant.NewCode8(quant.UnsignedDynamicMap())
)

// segments must cut parameters only at block boundaries, so that a
// segment's last block is short only at its parameter's end.
var _ [0]struct{} = [chunkElems % Block8bit]struct{}{}

// AdamW8bit is AdamW with bitsandbytes' blockwise 8-bit state
// (bnb.optim.AdamW8bit, optim_bits=8, block_wise=True): exp_avg and
// exp_avg_sq are held as one byte per element, a code into a 256-entry
// map, times a float32 absmax per block of 256 consecutive elements
// (row-major). A parameter with fewer than Min8bitSize elements keeps
// float32 state and is updated exactly as AdamW updates it. Memory: 2 bytes
// plus 8/256 an element instead of AdamW's 8.
//
// One step of an 8-bit parameter, block by block (as bitsandbytes'
// optimizer_update_8bit_blockwise on CPU, backends/cpu/ops.py, and its
// pure-PyTorch reference, backends/triton/kernels_optim.py, do it):
//
//	m ← qmap1[state1]·absmax1, v ← qmap2[state2]·absmax2   dequantize (float32)
//	p ← p·(1 − lr·wd); m, v and p updated as AdamW does     in float32
//	absmax1 ← max|m| of the block, state1 ← nearest code of m/absmax1
//	absmax2 ← max|v| of the block, state2 ← nearest code of v/absmax2
//
// The parameter is updated from the float32 moments before they are
// requantized. Requantizing is bitsandbytes' quantize_blockwise as its
// PyTorch kernel computes it (backends/default/ops.py; quant.Code8): a full
// block multiplies by fl(1/max(absmax, 1e-38)), the parameter's last,
// partial block divides by that clamped absmax (and stores it); the scaled
// value, clamped to [-1, 1], takes the code of the nearest map entry, a
// value on the float32 midpoint of two entries the lower. Rounding is
// deterministic (the 8-bit optimizers never quantize stochastically). An
// all-zero block stores absmax 0 and the code of 0.0. Before its first
// update a parameter's state is what init_state makes: codes 0 and absmax
// 0 (dequantizing to zeros).
//
// Where bitsandbytes' backends disagree, this follows the CPU one, which is
// what bitsandbytes runs on a CPU tensor, except in two places:
//   - The float32 update is AdamW's own (torch.optim.AdamW's operation
//     order, adamwKernel) rather than the CPU backend's m·β1 + (1−β1)·g,
//     so an 8-bit parameter differs from AdamW only by the quantization
//     of its state, and a small one not at all. The two orders differ in
//     the last bit of m, far below the 8-bit rounding.
//   - bitsandbytes' native CPU quantizer (csrc/cpu_ops.cpp) looks codes up
//     in a 65536-bin table over [-1, 1], which cannot resolve the map's
//     smallest entries (1e-7); the PyTorch kernel, exact nearest, is used.
//
// The CUDA kernel (kOptimizerStatic8bit2StateBlockwise, csrc/kernels.cu)
// differs further: it applies the weight decay after the Adam step
// (p ← (p − …)·(1 − lr·wd)), writes ε as √(1−β2ᵗ)·ε inside the root's sum,
// divides with the approximate __fdividef, breaks midpoint ties by the side
// of its binary search, nudges a first-moment code whose sign differs from
// m's by one, and zeroes the state of elements whose gradient is not
// finite. Bitsandbytes' small-tensor path (optimizer_update_32bit) has its
// own operation order too; here small tensors are AdamW's, bit for bit.
//
// At that commit update_step passes gnorm_scale=1.0 (the percentile_clipping
// of older versions is gone) and AdamW8bit's max_unorm is 0, so neither
// scales the update; gradient clipping is the trainer's, as with AdamW.
//
// The state is saved under bitsandbytes' names: state1 and state2 (uint8,
// the parameter's shape) and absmax1, absmax2 (float32, one per block); a
// small parameter saves AdamW's exp_avg and exp_avg_sq. The maps are not
// saved: they are fixed (create_dynamic_map's).
type AdamW8bit struct {
	stateful
	cfg     AdamWConfig
	decayOn []bool
	q       []*state8bit // per parameter: nil when it keeps float32 state
}

// state8bit is one parameter's 8-bit state; the slices are nil before its
// first update.
type state8bit struct {
	shape            []int
	state1, state2   []uint8
	absmax1, absmax2 []float32
}

func (s *state8bit) blocks() int { return (len(s.state1) + Block8bit - 1) / Block8bit }

// NewAdamW8bit returns an 8-bit AdamW optimizer over the trainable
// parameters of ps (frozen ones skipped, tied ones counted once).
func NewAdamW8bit(ps nn.Params, cfg AdamWConfig) (*AdamW8bit, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	o := &AdamW8bit{stateful: newStateful("adamw_8bit", ps, "exp_avg", "exp_avg_sq"), cfg: cfg}
	o.decayOn = make([]bool, len(o.params))
	o.q = make([]*state8bit, len(o.params))
	o.own = make([]bool, len(o.params))
	o.owner = o
	for i, p := range o.params {
		o.decayOn[i] = cfg.NoDecay == nil || !cfg.NoDecay(p.Name)
		if p.Var.Value.Numel() >= Min8bitSize {
			o.q[i] = &state8bit{shape: slices.Clone(p.Var.Value.Shape)}
			o.own[i] = true
		}
	}
	return o, nil
}

// Step applies one update with learning rate lr.
func (o *AdamW8bit) Step(lr float64) {
	o.begin()
	for i, q := range o.q {
		if q != nil && o.active[i] && q.state1 == nil {
			n := o.params[i].Var.Value.Numel()
			nb := (n + Block8bit - 1) / Block8bit
			q.state1, q.state2 = make([]uint8, n), make([]uint8, n)
			q.absmax1, q.absmax2 = make([]float32, nb), make([]float32, nb)
		}
	}
	sc := adamStep(&o.stateful, o.cfg, o.decayOn, lr)
	forSegments(o.segs, func(_ int, s segment) {
		if !o.active[s.p] {
			return
		}
		v := o.params[s.p].Var
		p, g := v.Value.F32()[s.lo:s.hi], v.Grad.F32()[s.lo:s.hi]
		if q := o.q[s.p]; q != nil {
			q.step(sc[s.p], p, g, s.lo)
			return
		}
		adamwKernel(sc[s.p], p, g, o.bufs[s.p][0].Data[s.lo:s.hi], o.bufs[s.p][1].Data[s.lo:s.hi])
	})
}

// step updates the elements [lo, lo+len(p)) of the parameter, lo a
// multiple of Block8bit, one block at a time.
func (q *state8bit) step(c adamScalars, p, g []float32, lo int) {
	var m, v [Block8bit]float32
	for off := 0; off < len(p); off += Block8bit {
		e0, e1 := lo+off, min(lo+len(p), lo+off+Block8bit)
		n, b := e1-e0, e0/Block8bit
		qmap1.Dequantize(q.state1[e0:e1], q.absmax1[b:b+1], Block8bit, m[:n])
		qmap2.Dequantize(q.state2[e0:e1], q.absmax2[b:b+1], Block8bit, v[:n])
		adamwKernel(c, p[off:off+n], g[off:off+n], m[:n], v[:n])
		qmap1.Quantize(m[:n], Block8bit, q.state1[e0:e1], q.absmax1[b:b+1])
		qmap2.Quantize(v[:n], Block8bit, q.state2[e0:e1], q.absmax2[b:b+1])
	}
}

// dequantize returns the float32 moments (fresh slices).
func (q *state8bit) dequantize() (m, v []float32) {
	m, v = make([]float32, len(q.state1)), make([]float32, len(q.state2))
	qmap1.Dequantize(q.state1, q.absmax1, Block8bit, m)
	qmap2.Dequantize(q.state2, q.absmax2, Block8bit, v)
	return m, v
}

// MoveEntries implements Optimizer. An 8-bit parameter's moments are
// dequantized, moved (fresh entries get zeros) and requantized, each block
// with the absmax of its new contents, as a step requantizes.
func (o *AdamW8bit) MoveEntries(param string, from []int32) error {
	for i, p := range o.params {
		q := o.q[i]
		if p.Name != param || q == nil {
			continue
		}
		if len(from) != p.Var.Value.Numel() {
			return fmt.Errorf("train: moving %d entries of %q, which has %d", len(from), param, p.Var.Value.Numel())
		}
		for e, f := range from {
			if int(f) >= len(from) {
				return fmt.Errorf("train: entry %d of %q moves from %d, outside its %d", e, param, f, len(from))
			}
		}
		if q.state1 == nil {
			return nil // no state yet: nothing moves
		}
		m, v := q.dequantize()
		m2, v2 := make([]float32, len(m)), make([]float32, len(v))
		for e, f := range from {
			if f >= 0 {
				m2[e], v2[e] = m[f], v[f]
			}
		}
		qmap1.Quantize(m2, Block8bit, q.state1, q.absmax1)
		qmap2.Quantize(v2, Block8bit, q.state2, q.absmax2)
		return nil
	}
	return o.stateful.MoveEntries(param, from)
}

// State returns the step counts and buffers (live, not copied): state1,
// state2 in Codes and absmax1, absmax2 in Buffers for an 8-bit parameter,
// exp_avg and exp_avg_sq for a small one.
func (o *AdamW8bit) State() *OptimizerState {
	st := o.state(map[string]float64{
		"beta1": o.cfg.Beta1, "beta2": o.cfg.Beta2, "eps": o.cfg.Eps, "weight_decay": o.cfg.WeightDecay,
		"block_size": Block8bit, "min_8bit_size": Min8bitSize,
	})
	for i, p := range o.params {
		q := o.q[i]
		if q == nil || q.state1 == nil {
			continue
		}
		ps := st.Params[p.Name]
		ps.Codes = map[string]*Codes{
			"state1": {Shape: slices.Clone(q.shape), Data: q.state1},
			"state2": {Shape: slices.Clone(q.shape), Data: q.state2},
		}
		ps.Buffers["absmax1"] = tensor.FromData(q.absmax1, len(q.absmax1))
		ps.Buffers["absmax2"] = tensor.FromData(q.absmax2, len(q.absmax2))
	}
	return st
}

// LoadState restores state saved by State. State saved by another
// optimizer (adamw's float32 moments) is refused, naming a parameter.
func (o *AdamW8bit) LoadState(st *OptimizerState) error { return o.loadState(st) }

// checkOwn validates an 8-bit parameter's saved state: all four buffers
// (or none), codes of the parameter's shape, one finite absmax ≥ 0 a block.
func (o *AdamW8bit) checkOwn(i int, ps *ParamState) error {
	p := o.params[i]
	n := p.Var.Value.Numel()
	nb := (n + Block8bit - 1) / Block8bit
	what := func(format string, a ...any) error {
		return fmt.Errorf("train: adamw_8bit optimizer state for %q (%d elements, 8-bit state): %s", p.Name, n, fmt.Sprintf(format, a...))
	}
	if len(ps.Buffers)+len(ps.Codes) == 0 {
		if ps.Step > 0 {
			return what("%d steps taken but no buffers", ps.Step)
		}
		return nil
	}
	for name, c := range ps.Codes {
		if name != "state1" && name != "state2" {
			return what("unknown 8-bit buffer %q (want state1, state2)", name)
		}
		if c == nil || !tensor.SameShape(c.Shape, p.Var.Value.Shape) || len(c.Data) != n {
			got := "nothing"
			if c != nil {
				got = fmt.Sprintf("%d codes of shape %v", len(c.Data), c.Shape)
			}
			return what("%s: want %d uint8 codes of shape %v, got %s", name, n, p.Var.Value.Shape, got)
		}
	}
	for name, t := range ps.Buffers {
		if name != "absmax1" && name != "absmax2" {
			return what("unknown buffer %q (want absmax1, absmax2 beside 8-bit state1, state2; float32 exp_avg and exp_avg_sq are kept only under %d elements)", name, Min8bitSize)
		}
		if t == nil || t.DType() != tensor.F32 || len(t.Shape) != 1 || len(t.Data) != nb {
			return what("%s: want float32 [%d] (one absmax a block of %d), got %s", name, nb, Block8bit, describe(t))
		}
		for b, a := range t.Data {
			if !(a >= 0) || math.IsInf(float64(a), 0) {
				return what("%s[%d] = %v: an absmax must be finite and ≥ 0", name, b, a)
			}
		}
	}
	for _, name := range []string{"state1", "state2"} {
		if ps.Codes[name] == nil {
			return what("missing 8-bit buffer %q", name)
		}
	}
	for _, name := range []string{"absmax1", "absmax2"} {
		if ps.Buffers[name] == nil {
			return what("missing buffer %q", name)
		}
	}
	return nil
}

// loadOwn copies a checked 8-bit state in.
func (o *AdamW8bit) loadOwn(i int, ps *ParamState) {
	q := o.q[i]
	if len(ps.Codes) == 0 {
		q.state1, q.state2, q.absmax1, q.absmax2 = nil, nil, nil, nil
		return
	}
	q.state1 = slices.Clone(ps.Codes["state1"].Data)
	q.state2 = slices.Clone(ps.Codes["state2"].Data)
	q.absmax1 = slices.Clone(ps.Buffers["absmax1"].Data)
	q.absmax2 = slices.Clone(ps.Buffers["absmax2"].Data)
}
