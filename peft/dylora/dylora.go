// Package dylora is DyLoRA (Valipour et al. 2023): LoRA trained at a rank
// b drawn anew for every training pass from {r_min, …, r_max}, so that one
// adapter works truncated to any rank b ≤ r_max:
//
//	y = W₀x + (α/b)·B[:, :b]·A[:b, :]·drop(x)
//
// In frozen mode only row b of A and column b of B receive gradient (the
// first b−1 are detached, as in the reference's "frozen" option); in the
// default mode all of the first b do. Inference, merging and evaluation
// take the rank SetRank chose (r_max by default).
//
// PEFT has no DyLoRA. Its file follows PEFT's layout in PEFT's style:
// peft_type DYLORA, the LoRA keys lora_alpha, lora_dropout,
// init_lora_weights and target_modules plus r_max, r_min and frozen, and
// the tensors …lora_A.weight [r_max, in] and …lora_B.weight [out, r_max]
// (the reference saves the full factors too).
package dylora

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lowrank"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// PeftType is DyLoRA's peft_type.
const PeftType = "DYLORA"

// Config is DyLoRA's adapter_config.json.
type Config struct {
	peft.BaseConfig
	RMax            int          `json:"r_max"`
	RMin            int          `json:"r_min"`
	Frozen          bool         `json:"frozen"`
	LoraAlpha       float64      `json:"lora_alpha"`
	LoraDropout     float64      `json:"lora_dropout"`
	Bias            string       `json:"bias"`
	InitLoraWeights lowrank.Init `json:"init_lora_weights"`
}

// NewConfig returns DyLoRA's defaults: ranks 1 to 8, alpha 8, not frozen,
// q_proj and v_proj.
func NewConfig() *Config {
	return &Config{
		BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM", TargetModules: peft.ModuleList("q_proj", "v_proj")},
		RMax:       8, RMin: 1, LoraAlpha: 8, Bias: "none", InitLoraWeights: lowrank.InitDefault,
	}
}

// Validate checks DyLoRA's keys.
func (c *Config) Validate() error {
	bad := func(key string, v any, allowed string) error {
		return &peft.KeyError{Method: PeftType, Key: key, Value: v, Allowed: allowed}
	}
	switch {
	case c.RMax < 1:
		return bad("r_max", c.RMax, "must be at least 1")
	case c.RMin < 1 || c.RMin > c.RMax:
		return bad("r_min", c.RMin, fmt.Sprintf("must be in [1, r_max = %d]", c.RMax))
	case !lowrank.FiniteScale(c.LoraAlpha):
		return bad("lora_alpha", c.LoraAlpha, lowrank.AlphaRange)
	case !(c.LoraDropout >= 0 && c.LoraDropout < 1):
		return bad("lora_dropout", c.LoraDropout, "must be in [0, 1)")
	case c.Bias != "" && c.Bias != "none":
		return bad("bias", c.Bias, `must be "none" (LLaMA has no biases)`)
	}
	switch c.InitLoraWeights {
	case lowrank.InitDefault, lowrank.InitGaussian, lowrank.InitRandom, "":
		return nil
	}
	return bad("init_lora_weights", string(c.InitLoraWeights), "true, \"gaussian\" or false")
}

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "alpha", Key: "lora_alpha", Kind: peft.FloatFlag, Default: "16", Usage: "lora_alpha (the scale at rank b is alpha/b)"},
			{Name: "dropout", Key: "lora_dropout", Kind: peft.FloatFlag, Default: "0", Usage: "lora_dropout"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Default: "q_proj,v_proj", Usage: "target modules: a comma list, a regex or all-linear"},
			{Name: "r-max", Key: "r_max", Kind: peft.IntFlag, Usage: "largest rank, the factors' size (default 8)"},
			{Name: "r-min", Key: "r_min", Kind: peft.IntFlag, Usage: "smallest rank drawn in training (default 1)"},
			{Name: "frozen", Key: "frozen", Kind: peft.BoolFlag, Usage: "train only row/column b of the factors at rank b"},
			{Name: "init-lora-weights", Key: "init_lora_weights", Kind: peft.StringFlag, Usage: "true or gaussian"},
		},
	})
}

// Method is a DyLoRA adapter's recipe; New attaches it.
type Method struct {
	Cfg    *Config
	layers []*layer
	rank   int // the rank of passes that do not train (0: r_max)
	name   string
	merged int // the rank merged into the base (0: none)
}

// New returns a DyLoRA method for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// Ranks implements peft.RankSelector.
func (m *Method) Ranks() (lo, hi int) { return 1, m.Cfg.RMax }

// SetRank implements peft.RankSelector: inference, evaluation and merging
// use the first b ranks.
func (m *Method) SetRank(b int) error {
	if b < 1 || b > m.Cfg.RMax {
		return fmt.Errorf("dylora: rank %d outside [1, r_max = %d]", b, m.Cfg.RMax)
	}
	if m.merged != 0 && b != m.merged {
		return fmt.Errorf("dylora: the adapter is merged at rank %d; unmerge it before choosing rank %d", m.merged, b)
	}
	m.rank = b
	return nil
}

// Rank is the rank of passes that do not train.
func (m *Method) Rank() int {
	if m.rank == 0 {
		return m.Cfg.RMax
	}
	return m.rank
}

// passRank is the rank a pass runs at: for a training pass, drawn from the
// pass's seed (one draw per pass, shared by every layer); otherwise Rank.
func (m *Method) passRank(p *nn.Pass) int {
	if !p.Training {
		return m.Rank()
	}
	n := uint64(m.Cfg.RMax - m.Cfg.RMin + 1)
	return m.Cfg.RMin + int(p.SeedFor("dylora/"+m.name)%n)
}

// layer is DyLoRA on one Linear.
type layer struct {
	nn.OwnedBy
	m      *Method
	linear *nn.Linear
	f      *lowrank.Factors // at r_max; f.Scale is unused
}

// Attach implements peft.Method: A [r_max, in] and B [out, r_max] per
// targeted Linear, initialised as LoRA's.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	targets, err := pm.Targets(&m.Cfg.BaseConfig)
	if err != nil {
		return nil, err
	}
	m.name = a.Name
	g := tensor.NewRNG(m.Cfg.Seed)
	var ps nn.Params
	for _, l := range targets {
		name := peft.SavePrefix + l.Name
		if err := lowrank.Expect(pm, name+".lora_A.weight", name+".lora_B.weight", m.Cfg.RMax, l.In(), l.Out()); err != nil {
			return nil, err
		}
		ly := &layer{OwnedBy: nn.OwnedBy{Adapter: a.Name}, m: m, linear: l,
			f: lowrank.New(name+".lora_A.weight", name+".lora_B.weight", m.Cfg.RMax, l.In(), l.Out(), 0, m.Cfg.InitLoraWeights, g)}
		l.Deltas = append(l.Deltas, ly)
		m.layers = append(m.layers, ly)
		ps = append(ps, ly.f.Params()...)
	}
	return ps, nil
}

// Apply implements nn.Delta.
func (ly *layer) Apply(p *nn.Pass, l *nn.Linear, x, y *autograd.Var) *autograd.Var {
	x = p.Dropout(x, float32(ly.m.Cfg.LoraDropout), l.Name+"/"+ly.Adapter)
	b := ly.m.passRank(p)
	return truncated(p.Tape, y, x, ly.f.A, ly.f.B, b, float32(ly.m.Cfg.LoraAlpha/float64(b)), p.Training && ly.m.Cfg.Frozen)
}

// truncated returns y + s·(x·A[:b]ᵀ)·B[:, :b]ᵀ for A [R, in] and B [out, R],
// without copying the truncated factors. With onlyLast, A and B receive
// gradient in row and column b−1 alone (the others are detached); x's
// gradient is the full one either way.
func truncated(tp *autograd.Tape, y, x, A, B *autograd.Var, b int, s float32, onlyLast bool) *autograd.Var {
	R, in, out, rows := A.Value.Shape[0], A.Value.Shape[1], B.Value.Shape[0], x.Value.Rows()
	if x.Value.Cols() != in || y.Value.Rows() != rows || y.Value.Cols() != out || b < 1 || b > R {
		panic(fmt.Sprintf("dylora: truncated rank %d of A %v, B %v with x %v, y %v", b, A.Value.Shape, B.Value.Shape, x.Value.Shape, y.Value.Shape))
	}
	xv, av, bv := x.Value.F32(), A.Value.Data, B.Value.Data
	h := make([]float32, rows*b) // s·x·A[:b]ᵀ
	kernels.Gemm(false, true, rows, b, in, xv, in, av[:b*in], in, h, b, false)
	fused.Scale(h, s, h, len(h))
	z := y.Value.Clone()
	kernels.Gemm(false, true, rows, out, b, h, b, bv, R, z.Data, out, true)
	return tp.Result(z, func(o *autograd.Var) {
		dz := o.Grad.Data
		if B.RequiresGrad() { // dB[:, :b] += dzᵀ·h
			g := B.GradBuf().Data
			if onlyLast {
				kernels.Gemm(true, false, out, 1, rows, dz, out, h[b-1:], b, g[b-1:], R, true)
			} else {
				kernels.Gemm(true, false, out, b, rows, dz, out, h, b, g, R, true)
			}
		}
		if A.RequiresGrad() || x.RequiresGrad() {
			dh := make([]float32, rows*b) // s·dz·B[:, :b]
			kernels.Gemm(false, false, rows, b, out, dz, out, bv, R, dh, b, false)
			fused.Scale(dh, s, dh, len(dh))
			if A.RequiresGrad() { // dA[:b] += dhᵀ·x
				g := A.GradBuf().Data
				if onlyLast {
					kernels.Gemm(true, false, 1, in, rows, dh[b-1:], b, xv, in, g[(b-1)*in:b*in], in, true)
				} else {
					kernels.Gemm(true, false, b, in, rows, dh, b, xv, in, g[:b*in], in, true)
				}
			}
			if x.RequiresGrad() { // dx += dh·A[:b]
				kernels.Gemm(false, false, rows, in, b, dh, b, av[:b*in], in, x.GradBuf().Data, in, true)
			}
		}
		if y.RequiresGrad() {
			fused.Axpy(y.GradBuf().Data, 1, dz, len(dz))
		}
	}, y, x, A, B)
}

// delta is (α/b)·B[:, :b]·A[:b].
func (ly *layer) delta(b int) []float32 {
	R, in, out := ly.m.Cfg.RMax, ly.linear.In(), ly.linear.Out()
	s := float32(ly.m.Cfg.LoraAlpha / float64(b))
	sb := make([]float32, out*b)
	for i := 0; i < out; i++ {
		for q := 0; q < b; q++ {
			sb[i*b+q] = s * ly.f.B.Value.Data[i*R+q]
		}
	}
	d := make([]float32, out*in)
	kernels.Gemm(false, false, out, in, b, sb, b, ly.f.A.Value.Data[:b*in], in, d, in, false)
	return d
}

// Merge implements peft.Merger at the rank SetRank chose.
func (m *Method) Merge(*peft.Adapter) error {
	if err := m.fold(m.Rank(), +1); err != nil {
		return err
	}
	m.merged = m.Rank()
	return nil
}

// Unmerge implements peft.Merger.
func (m *Method) Unmerge(*peft.Adapter) error {
	if err := m.fold(m.merged, -1); err != nil {
		return err
	}
	m.merged = 0
	return nil
}

func (m *Method) fold(b int, sign float32) error {
	for _, ly := range m.layers {
		if err := nn.MergeInto(ly.linear.Weight.Value, ly.delta(b), sign); err != nil {
			return err
		}
	}
	return nil
}
