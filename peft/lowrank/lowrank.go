// Package lowrank is the low-rank core that the LoRA family (LoRA, rsLoRA,
// DoRA, AdaLoRA, DyLoRA) shares: a pair of factors A [r, in] and B [out, r]
// beside a frozen Linear, their initialisers, the scale s, the per-module
// rank and alpha patterns, and the dense change s·B·A that merging folds
// into the base.
package lowrank

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// Init is init_lora_weights: true (Kaiming-uniform A, zero B), "gaussian"
// (A ~ N(0, 1/r), zero B), false (random A and B: not an identity start,
// for tests), or one that starts from the base weight (init.go: "pissa",
// "pissa_niter_K", "olora").
type Init string

const (
	InitDefault  Init = "true"
	InitGaussian Init = "gaussian"
	InitRandom   Init = "false"
)

// UnmarshalJSON accepts a bool or a string.
func (i *Init) UnmarshalJSON(b []byte) error {
	var on bool
	if err := json.Unmarshal(b, &on); err == nil {
		*i = InitRandom
		if on {
			*i = InitDefault
		}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("init_lora_weights: want a bool or a string, got %s", b)
	}
	*i = Init(s)
	return nil
}

// MarshalJSON writes booleans as booleans, as PEFT does.
func (i Init) MarshalJSON() ([]byte, error) {
	switch i {
	case InitDefault, "":
		return []byte("true"), nil
	case InitRandom:
		return []byte("false"), nil
	}
	return json.Marshal(string(i))
}

// Validate refuses the initialisations not built here.
func (i Init) Validate() error {
	switch {
	case i == InitDefault, i == InitGaussian, i == InitRandom, i == "", i.ChangesBase():
		return nil
	}
	return fmt.Errorf("init_lora_weights %q is not supported (true, false, \"gaussian\", \"pissa\", \"pissa_niter_K\", \"olora\")", string(i))
}

// AlphaRange says what FiniteScale allows, for a lora_alpha error.
const AlphaRange = "must be a finite number of at most 3.4e38 in size (the scale alpha/r is float32)"

// FiniteScale reports whether every scale lora_alpha gives (alpha/r,
// alpha/√r, alpha/(r + 1e-5); r ≥ 1) is a finite float32: beyond, the
// adapter's output is ±Inf or NaN.
func FiniteScale(alpha float64) bool { return math.Abs(alpha) <= math.MaxFloat32 }

// Factors are one module's A [r, in] and B [out, r] with the scale s.
type Factors struct {
	A, B  *autograd.Var
	Scale float32
}

// Expect is peft.Model.ExpectTensor for the factors New would make: call
// it before New, so that loading a file whose config disagrees with its
// factors fails before they are allocated.
func Expect(m *peft.Model, aName, bName string, r, in, out int) error {
	if err := m.ExpectTensor(aName, r, in); err != nil {
		return err
	}
	return m.ExpectTensor(bName, out, r)
}

// New makes trainable factors named aName and bName for a module of in
// inputs and out outputs, initialised as init says from g.
func New(aName, bName string, r, in, out int, scale float64, init Init, g *tensor.RNG) *Factors {
	A, B := tensor.New(r, in), tensor.New(out, r)
	switch init {
	case InitGaussian:
		A.Normal(g, 0, float32(1/float64(r)))
	case InitRandom:
		A.KaimingUniform(g)
		B.KaimingUniform(g)
	default:
		A.KaimingUniform(g)
	}
	return &Factors{A: autograd.Param(aName, A, true), B: autograd.Param(bName, B, true), Scale: float32(scale)}
}

// Params lists A then B.
func (f *Factors) Params() nn.Params {
	return nn.Params{{Name: f.A.Name, Var: f.A}, {Name: f.B.Name, Var: f.B}}
}

// Add returns y + s·(x·Aᵀ)·Bᵀ: the update a LoRA-family layer adds to its
// base output.
func (f *Factors) Add(p *nn.Pass, x, y *autograd.Var) *autograd.Var {
	return p.Tape.AddLinear(y, p.Tape.Linear(x, f.A), f.B, f.Scale)
}

// AddGroup is Add for several factors at one layer in an inference pass:
// rows[i] of y gain s_i·(x·A_iᵀ)·B_iᵀ, computed on those rows only, and are
// written into one copy of y (the SGMV grouping; see nn.GroupDelta), where
// routing each adapter alone would copy all of y once per adapter. Each
// row gets exactly Add on its gathered rows: the same call.
func AddGroup(p *nn.Pass, fs []*Factors, rows [][]int, x, y *autograd.Var) *autograd.Var {
	z := y.Value.Clone()
	zv := autograd.Const(z)
	cols := z.Cols()
	for i, f := range fs {
		idx := rows[i]
		res := f.Add(p, p.Tape.GatherRows(x, idx), p.Tape.GatherRows(zv, idx)).Value.F32()
		for k, r := range idx {
			copy(z.Data[r*cols:(r+1)*cols], res[k*cols:(k+1)*cols])
		}
	}
	return zv
}

// Delta returns s·B·A as a dense [out, in] matrix.
func (f *Factors) Delta() []float32 {
	r, in, out := f.A.Value.Shape[0], f.A.Value.Shape[1], f.B.Value.Shape[0]
	sb := make([]float32, len(f.B.Value.Data))
	for i, v := range f.B.Value.Data {
		sb[i] = v * f.Scale
	}
	d := make([]float32, out*in)
	kernels.Gemm(false, false, out, in, r, sb, r, f.A.Value.Data, in, d, in, false)
	return d
}

// Scale is s for a rank and alpha: alpha/r, or alpha/√r with rsLoRA.
func Scale(r int, alpha float64, rslora bool) float64 {
	if rslora {
		return alpha / math.Sqrt(float64(r))
	}
	return alpha / float64(r)
}

// RankAlpha resolves a module's rank and alpha through rank_pattern and
// alpha_pattern (PEFT's get_pattern_key rules).
func RankAlpha(module string, r int, alpha float64, rankPattern map[string]int, alphaPattern map[string]float64) (int, float64) {
	if k, ok := peft.PatternKey(slices.Sorted(maps.Keys(rankPattern)), module); ok {
		r = rankPattern[k]
	}
	if k, ok := peft.PatternKey(slices.Sorted(maps.Keys(alphaPattern)), module); ok {
		alpha = alphaPattern[k]
	}
	return r, alpha
}

// PEFTKeys are the keys PEFT's LoraConfig (and AdaLoraConfig, its
// subclass) writes that gopeft keeps no field for, with PEFT's defaults at
// the pinned snapshot: a config gopeft writes carries every key PEFT's
// does (peft.BaseConfig.SetDefaultKeys).
func PEFTKeys() map[string]any {
	return map[string]any{
		"alora_invocation_tokens": nil, "arrow_config": nil, "corda_config": nil,
		"ensure_weight_tying": false, "eva_config": nil, "kasa_config": nil,
		"layer_replication": nil, "loftq_config": map[string]any{}, "lora_ga_config": nil,
		"megatron_config": nil, "megatron_core": "megatron.core", "monteclora_config": nil,
		"qalora_group_size": 16, "target_parameters": nil, "trainable_token_indices": nil,
		"use_bdlora": nil, "use_qalora": false, "velora_config": nil,
	}
}
