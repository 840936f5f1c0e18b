package lora

// PiSSA and OLoRA start A and B from the base weight W and train over the
// residual W − s·B₀·A₀, which replaces W in the base model (as PEFT's
// pissa_init and olora_init do). The adapter so trained needs that
// residual base, so SaveAdapter writes PEFT's "convert to LoRA" form
// instead (save_pretrained's path_initial_model_for_weight_conversion):
// A' = [A; A₀], B' = [B, −B₀], r and lora_alpha doubled (rsLoRA: alpha
// times √2, keeping s), init_lora_weights true. s·B'·A' = s·(B·A − B₀·A₀)
// is the change to the original W, so the file applies to the original
// base like any LoRA adapter.

import (
	"fmt"
	"maps"
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
	"github.com/gopeft/gopeft/tensor"
)

// initial is one layer's factors as PiSSA or OLoRA made them.
type initial struct {
	f      *lowrank.Factors
	a0, b0 []float32
}

// checkRewritable refuses a PiSSA/OLoRA init over a quantized weight: the
// residual cannot be written back into 4- or 8-bit codes without
// re-rounding the whole layer, and PEFT refuses it too (pissa_init:
// "Please initialize PiSSA under float32, float16, or bfloat16"). Attach
// checks every target before the first weight is rewritten.
func checkRewritable(l *nn.Linear, init lowrank.Init) error {
	if w := l.Weight.Value; w.Quantized() {
		return fmt.Errorf("lora: %s: init_lora_weights %q starts from the base weight and replaces it by the residual, which a %v weight cannot hold: train it on the float32 or bf16 base (PEFT refuses it on a quantized one too)", l.Name, init, w.DType())
	}
	return nil
}

// initFromWeight sets f from l's weight and replaces the weight by the
// residual.
func (m *Method) initFromWeight(l *nn.Linear, f *lowrank.Factors, g *tensor.RNG) error {
	res, err := f.FromWeight(m.Cfg.InitLoraWeights, l.Weight.Value, g)
	if err != nil {
		return fmt.Errorf("lora: %s: %w", l.Name, err)
	}
	if err := nn.StoreInto(l.Weight.Value, res); err != nil {
		return err
	}
	m.inits = append(m.inits, initial{f: f,
		a0: append([]float32(nil), f.A.Value.Data...), b0: append([]float32(nil), f.B.Value.Data...)})
	return nil
}

// Convert implements peft.Converter: for an adapter initialised from the
// base weight, the LoRA adapter of twice the rank that applies to the
// original base.
func (m *Method) Convert() (peft.Config, nn.Params, bool, error) {
	if len(m.inits) == 0 {
		return nil, nil, false, nil
	}
	c := *m.Cfg // a copy: the live config keeps its init
	c.InitLoraWeights = InitDefault
	c.R *= 2
	if c.UseRSLoRA {
		c.LoraAlpha *= math.Sqrt2
	} else {
		c.LoraAlpha *= 2
	}
	c.RankPattern = maps.Clone(c.RankPattern)
	for k, v := range c.RankPattern {
		c.RankPattern[k] = 2 * v
	}
	c.AlphaPattern = maps.Clone(c.AlphaPattern)
	for k, v := range c.AlphaPattern {
		c.AlphaPattern[k] = 2 * v
	}
	var ps nn.Params
	for _, in := range m.inits {
		f := in.f
		r, n, out := f.A.Value.Shape[0], f.A.Value.Shape[1], f.B.Value.Shape[0]
		A, B := tensor.New(2*r, n), tensor.New(out, 2*r)
		copy(A.Data, f.A.Value.Data)
		copy(A.Data[r*n:], in.a0)
		for o := 0; o < out; o++ {
			copy(B.Data[o*2*r:], f.B.Value.Data[o*r:(o+1)*r])
			for q := 0; q < r; q++ {
				B.Data[o*2*r+r+q] = -in.b0[o*r+q]
			}
		}
		ps = append(ps, nn.Param{Name: f.A.Name, Var: autograd.Const(A)}, nn.Param{Name: f.B.Name, Var: autograd.Const(B)})
	}
	return &c, ps, true, nil
}
