package lora

// DoRA (Liu et al. 2024, "Weight-Decomposed Low-Rank Adaptation"): LoRA's
// update with the weight's direction and magnitude trained apart,
//
//	W' = m ⊙ (W₀ + s·B·A) / ‖W₀ + s·B·A‖_row
//
// with m [out] trained (lora_magnitude_vector) and the row norm treated as
// a constant in the backward (DoRA §4.3). The forward is PEFT's
// (peft/tuners/lora/dora.py, variants.py DoraLinearVariant) term for term:
// with g = m/‖·‖,
//
//	no dropout:   y = g ⊙ (W₀x + s·B·A·x)
//	with dropout: y = W₀x + (g−1) ⊙ W₀·drop(x) + g ⊙ s·B·A·drop(x)
//
// so in training with dropout the base term keeps the undropped input.

import (
	"fmt"
	"math"
	"sync"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
	"github.com/gopeft/gopeft/tensor/parallel"
)

// MagnitudeSuffix ends the name of DoRA's magnitude vector. PEFT saves the
// parameter lora_magnitude_vector.default.weight without ".weight".
const MagnitudeSuffix = ".lora_magnitude_vector"

// doraLayer is DoRA on one Linear.
type doraLayer struct {
	nn.OwnedBy
	linear  *nn.Linear
	f       *lowrank.Factors
	m       *autograd.Var // [out]
	dropout float32

	// mergedNorm is the row norm the merge divided by: unmerge needs the
	// norm of the original weight, which the merged weight no longer gives.
	mergedNorm []float32
	cache      normCache
	// fixedNorm, when set, replaces the row norm (tests: finite
	// differences of the function whose norm is the constant the backward
	// takes it to be).
	fixedNorm []float32
}

// attachDoRA makes the DoRA layer of one targeted Linear: the LoRA factors
// and m initialised to ‖W₀ + s·B·A‖_row, as PEFT's update_layer does.
func (m *Method) attachDoRA(l *nn.Linear, adapter string, f *lowrank.Factors) (*doraLayer, error) {
	if l.Bias != nil {
		return nil, fmt.Errorf("lora: use_dora on %s: the layer has a bias, which DoRA's rescaling would have to exclude; not supported", l.Name)
	}
	ly := &doraLayer{OwnedBy: nn.OwnedBy{Adapter: adapter}, linear: l, f: f, dropout: float32(m.Cfg.LoraDropout)}
	mag := tensor.New(l.Out())
	RowNorms(l.Weight.Value, f, mag.Data)
	ly.m = autograd.Param(peft.SavePrefix+l.Name+MagnitudeSuffix, mag, true)
	return ly, nil
}

// params lists A, B, then the magnitude.
func (ly *doraLayer) params() nn.Params {
	return append(ly.f.Params(), nn.Param{Name: ly.m.Name, Var: ly.m})
}

// Apply implements nn.Delta.
func (ly *doraLayer) Apply(p *nn.Pass, l *nn.Linear, x, y *autograd.Var) *autograd.Var {
	norm := ly.norms(p, l.Weight.Value)
	inv := tensor.New(len(norm))
	for i, n := range norm {
		inv.Data[i] = 1 / n
	}
	g := p.Tape.Mul(ly.m, autograd.Const(inv)) // m/‖·‖, the norm a constant
	if !p.Training || ly.dropout == 0 {
		// g ⊙ (W₀x + s·B·A·x): y is the base output W₀x.
		return p.Tape.Mul(ly.f.Add(p, x, y), g)
	}
	xd := p.Dropout(x, ly.dropout, l.Name+"/"+ly.Adapter)
	base := p.Tape.Linear(xd, l.Weight) // W₀·drop(x)
	// y + (g−1)⊙base + g⊙s·B·A·drop(x) = y + g⊙(base + s·B·A·drop(x)) − base.
	scaled := p.Tape.Mul(ly.f.Add(p, xd, base), g)
	return p.Tape.Add(y, p.Tape.Add(scaled, p.Tape.Scale(base, -1)))
}

// norms returns ‖W₀ + s·B·A‖ of each row. A pass without a tape (inference,
// generation) reuses the last value while A, B and the weight are
// unchanged; a training pass computes it afresh.
func (ly *doraLayer) norms(p *nn.Pass, w *tensor.Tensor) []float32 {
	if ly.fixedNorm != nil {
		return ly.fixedNorm
	}
	if p.Tape != nil {
		out := make([]float32, w.Shape[0])
		RowNorms(w, ly.f, out)
		return out
	}
	return ly.cache.get(w, ly.f)
}

// normBlock is the number of rows RowNorms forms at once: s·B·A for 32
// rows of stories110M's FFN is 32×2048 float32s, 256 KiB, in the L2 cache.
const normBlock = 32

// RowNorms writes ‖W + s·B·A‖₂ of each row of W [out, in] into dst [out],
// forming s·B·A a block of rows at a time and summing squares in float64,
// so no out×in matrix is allocated. W may be float32, bf16 or quantized
// (its rows dequantized one at a time: DoRA over a QLoRA base, as PEFT's
// get_weight_norm dequantizes a bitsandbytes weight).
func RowNorms(w *tensor.Tensor, f *lowrank.Factors, dst []float32) {
	out, in, r := w.Shape[0], w.Shape[1], f.A.Value.Shape[0]
	a, b := f.A.Value.Data, f.B.Value.Data
	// Each worker takes whole blocks and one buffer for them.
	chunk := (out + parallel.Threads() - 1) / parallel.Threads()
	chunk = (chunk + normBlock - 1) / normBlock * normBlock
	parallel.For(out, chunk, func(lo, hi int) {
		buf := make([]float32, normBlock*in)
		var rowBuf []float32
		if w.Data == nil { // bf16 or quantized: rows widened here
			rowBuf = make([]float32, in)
		}
		for b0 := lo; b0 < hi; b0 += normBlock {
			n := min(normBlock, hi-b0)
			kernels.Gemm(false, false, n, in, r, b[b0*r:(b0+n)*r], r, a, in, buf, in, false)
			for i := 0; i < n; i++ {
				k := b0 + i
				row := w.RowsF32(k, k+1, rowBuf)
				d := buf[i*in : (i+1)*in]
				var s float64
				for j, v := range row {
					e := float64(v + f.Scale*d[j])
					s += e * e
				}
				dst[k] = float32(math.Sqrt(s))
			}
		}
	})
}

// normCache holds the row norms an inference pass computed, with what they
// were computed from.
type normCache struct {
	mu     sync.Mutex
	norm   []float32
	a, b   []float32
	scale  float32
	wData  *float32
	wHalf  *kernels.BF16
	wQ4    *kernels.Q4 // a quantized weight's storage (immutable)
	wQ8    *kernels.Q8
	writes uint64
}

// get returns the cached norms when A, B, the scale and the weight are
// those they were computed from, and computes them otherwise.
func (c *normCache) get(w *tensor.Tensor, f *lowrank.Factors) []float32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var wd *float32
	var wh *kernels.BF16
	if len(w.Data) > 0 {
		wd = &w.Data[0]
	}
	if len(w.Half) > 0 {
		wh = &w.Half[0]
	}
	writes := nn.WeightWrites()
	if c.norm != nil && c.wData == wd && c.wHalf == wh && c.wQ4 == w.Q4 && c.wQ8 == w.Q8 && c.writes == writes && c.scale == f.Scale &&
		tensor.SameBits(c.a, f.A.Value.Data) && tensor.SameBits(c.b, f.B.Value.Data) {
		return c.norm
	}
	norm := make([]float32, w.Shape[0])
	RowNorms(w, f, norm)
	c.norm, c.wData, c.wHalf, c.wQ4, c.wQ8, c.writes, c.scale = norm, wd, wh, w.Q4, w.Q8, writes, f.Scale
	c.a = append(c.a[:0], f.A.Value.Data...)
	c.b = append(c.b[:0], f.B.Value.Data...)
	return norm
}

// merge folds the layer into its weight: W ← (m/‖W+ΔW‖)_row ⊙ (W + ΔW),
// keeping the norm for unmerge (PEFT's merge_safe).
func (ly *doraLayer) merge() error {
	w := ly.linear.Weight.Value
	out, in := w.Shape[0], w.Shape[1]
	norm := make([]float32, out)
	RowNorms(w, ly.f, norm)
	vals := w.ToF32().Data
	delta := ly.f.Delta()
	for i := 0; i < out; i++ {
		g := ly.m.Value.Data[i] / norm[i]
		for j := i * in; j < (i+1)*in; j++ {
			vals[j] = g * (vals[j] + delta[j])
		}
	}
	if err := nn.StoreInto(w, vals); err != nil {
		return err
	}
	ly.mergedNorm = norm
	return nil
}

// unmerge undoes merge: W ← W / (m/‖·‖)_row − ΔW with the norm merge used.
func (ly *doraLayer) unmerge() error {
	if ly.mergedNorm == nil {
		return fmt.Errorf("lora: %s: DoRA unmerge without a merge", ly.linear.Name)
	}
	w := ly.linear.Weight.Value
	out, in := w.Shape[0], w.Shape[1]
	vals := w.ToF32().Data
	delta := ly.f.Delta()
	for i := 0; i < out; i++ {
		g := ly.m.Value.Data[i] / ly.mergedNorm[i]
		for j := i * in; j < (i+1)*in; j++ {
			vals[j] = vals[j]/g - delta[j]
		}
	}
	if err := nn.StoreInto(w, vals); err != nil {
		return err
	}
	ly.mergedNorm = nil
	return nil
}
