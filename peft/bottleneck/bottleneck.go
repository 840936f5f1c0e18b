// Package bottleneck is the bottleneck adapters: a small module
// A(z) = W_up·σ(W_down·z + b_down) + b_up beside or after a block's
// sublayers (nn.Sublayer sites), with W_down [d/reduction_factor, d].
//
//   - double_seq_bn (Houlsby et al. 2019): after the attention and after
//     the FFN, serial: out + A(out), before each residual add.
//   - seq_bn (Pfeiffer et al. 2021): after the FFN only; with the Adapters
//     library's original_ln_before and residual_before_ln on LLaMA's
//     pre-norm block the adapter reads residual + out: out + A(residual + out).
//   - par_bn (He et al. 2022, "Towards a Unified View"): beside the FFN,
//     reading the residual stream: out + s·A(residual), s fixed (4 by
//     default) or learned (scaling "learned", starting at 1).
//
// Defaults follow the Adapters library (adapter-hub/adapters 88f18ebd,
// configuration/adapter_config.py, methods/bottleneck.py): reduction 16 with
// swish (double_seq_bn) or relu (seq_bn); par_bn reduction 2, relu,
// scaling 4. init_weights "bert" draws N(0, 0.02) weights; "mam_adapter"
// (par_bn's) Kaiming-uniform W_down and zero W_up, so the adapter starts
// as the identity; biases start at 0. Tensors are named as the Adapters
// library names them: model.layers.{i}.{attention_adapters|
// output_adapters}.adapters.{name}.{adapter_down.0|adapter_up}.{weight,bias}
// (and .scaling for a learned scale), inside gopeft's PEFT-style files
// (peft_type BOTTLENECK). Not mergeable: the activation is nonlinear.
package bottleneck

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// PeftType is the bottleneck adapters' peft_type (gopeft's own: PEFT has
// none).
const PeftType = "BOTTLENECK"

// The architectures.
const (
	DoubleSeq = "double_seq_bn" // Houlsby
	Seq       = "seq_bn"        // Pfeiffer
	Par       = "par_bn"        // parallel
)

// Config is the adapter's configuration, in the Adapters library's words.
type Config struct {
	peft.BaseConfig
	Architecture    string  `json:"architecture"`
	ReductionFactor int     `json:"reduction_factor"`
	NonLinearity    string  `json:"non_linearity"`
	Scaling         Scaling `json:"scaling"`
	InitWeights     string  `json:"init_weights"`
}

// Scaling is a number or "learned".
type Scaling struct {
	Value   float64
	Learned bool
}

// UnmarshalJSON accepts a number or "learned".
func (s *Scaling) UnmarshalJSON(b []byte) error {
	var x float64
	if err := json.Unmarshal(b, &x); err == nil {
		*s = Scaling{Value: x}
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("scaling: want a number or \"learned\", got %s", b)
	}
	if str == "learned" {
		*s = Scaling{Learned: true, Value: 1}
		return nil
	}
	x, err := strconv.ParseFloat(str, 64) // a command line's text
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return fmt.Errorf("scaling: want a number or \"learned\", got %s", b)
	}
	*s = Scaling{Value: x}
	return nil
}

// MarshalJSON writes a number or "learned".
func (s Scaling) MarshalJSON() ([]byte, error) {
	if s.Learned {
		return []byte(`"learned"`), nil
	}
	return json.Marshal(s.Value)
}

// NewConfig returns Houlsby's defaults.
func NewConfig() *Config {
	return &Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM"}, Architecture: DoubleSeq}
}

// MarshalJSON leaves out the target keys the sites make meaningless.
func (c *Config) MarshalJSON() ([]byte, error) {
	type plain Config
	b, err := json.Marshal((*plain)(c))
	if err != nil {
		return nil, err
	}
	return peft.DropKeys(b, "target_modules", "exclude_modules", "layers_pattern")
}

// fill sets the architecture's defaults for unset keys.
func (c *Config) fill() {
	rf, act, init := 16, "swish", "bert"
	switch c.Architecture {
	case Seq:
		act = "relu"
	case Par:
		rf, act, init = 2, "relu", "mam_adapter"
		if !c.Scaling.Learned && c.Scaling.Value == 0 {
			c.Scaling.Value = 4
		}
	}
	if c.ReductionFactor == 0 {
		c.ReductionFactor = rf
	}
	if c.NonLinearity == "" {
		c.NonLinearity = act
	}
	if c.InitWeights == "" {
		c.InitWeights = init
	}
	if c.Architecture != Par && c.Scaling.Value == 0 && !c.Scaling.Learned {
		c.Scaling.Value = 1
	}
}

// Validate checks the keys.
func (c *Config) Validate() error {
	switch c.Architecture {
	case DoubleSeq, Seq, Par:
	default:
		return &peft.KeyError{Method: PeftType, Key: "architecture", Value: fmt.Sprintf("%q", c.Architecture), Allowed: "must be double_seq_bn (Houlsby), seq_bn (Pfeiffer) or par_bn (parallel)"}
	}
	if c.ReductionFactor < 0 {
		return &peft.KeyError{Method: PeftType, Key: "reduction_factor", Value: c.ReductionFactor, Allowed: "must be at least 1"}
	}
	switch c.NonLinearity {
	case "", "swish", "silu", "relu", "tanh":
	default:
		return &peft.KeyError{Method: PeftType, Key: "non_linearity", Value: fmt.Sprintf("%q", c.NonLinearity), Allowed: "must be swish, relu or tanh"}
	}
	switch c.InitWeights {
	case "", "bert", "mam_adapter", "lora":
	default:
		return &peft.KeyError{Method: PeftType, Key: "init_weights", Value: fmt.Sprintf("%q", c.InitWeights), Allowed: "must be bert or mam_adapter"}
	}
	if c.Architecture != Par && (c.Scaling.Learned || (c.Scaling.Value != 0 && c.Scaling.Value != 1)) {
		return &peft.KeyError{Method: PeftType, Key: "scaling", Value: c.Scaling.Value, Allowed: "only par_bn has a scale"}
	}
	return nil
}

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "adapter-arch", Key: "architecture", Kind: peft.StringFlag, Usage: "double_seq_bn (Houlsby), seq_bn (Pfeiffer) or par_bn (parallel)"},
			{Name: "reduction-factor", Key: "reduction_factor", Kind: peft.IntFlag, Usage: "reduction_factor: the bottleneck is hidden/reduction_factor (default 16; par_bn 2)"},
			{Name: "adapter-scaling", Key: "scaling", Kind: peft.StringFlag, Usage: "par_bn's scale: a number (default 4) or learned"},
		},
	})
}

// Method is a bottleneck adapter.
type Method struct {
	Cfg *Config
}

// New returns a bottleneck adapter for a config.
func New(c *Config) *Method { return &Method{Cfg: c} }

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// Module is one bottleneck A with its placement.
type Module struct {
	nn.OwnedBy
	Down, DownB, Up, UpB *autograd.Var
	// Scale is par_bn's learned scale [1] (nil: Fixed).
	Scale *autograd.Var
	Fixed float32
	Act   string
	Arch  string
}

// Attach implements peft.Method.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	c := m.Cfg
	c.fill()
	g := tensor.NewRNG(c.Seed)
	var ps nn.Params
	for _, s := range pm.Sites().Sublayers {
		attn := len(s.Name) > 9 && s.Name[len(s.Name)-9:] == "self_attn"
		if attn && c.Architecture != DoubleSeq {
			continue
		}
		layer, ok := layerOf(s.Name)
		if !ok || !c.selectsLayer(layer) {
			continue
		}
		where := "output_adapters"
		if attn {
			where = "attention_adapters"
		}
		prefix := fmt.Sprintf("model.layers.%d.%s.adapters.%s.", layer, where, a.Name)
		mod, mps := NewModule(prefix, pm.Base.Config.HiddenSize, c.ReductionFactor, c.NonLinearity, c.InitWeights, c.Architecture, c.Scaling, g)
		mod.OwnedBy = nn.OwnedBy{Adapter: a.Name}
		s.Hooks = append(s.Hooks, mod)
		ps = append(ps, mps...)
	}
	if len(ps) == 0 {
		return nil, &peft.KeyError{Method: PeftType, Key: "layers_to_transform", Value: c.LayersToTransform, Allowed: fmt.Sprintf("selects none of the model's %d layers", pm.Base.Config.NumHiddenLayers)}
	}
	return ps, nil
}

func (c *Config) selectsLayer(i int) bool {
	if len(c.LayersToTransform) == 0 {
		return true
	}
	for _, l := range c.LayersToTransform {
		if l == i {
			return true
		}
	}
	return false
}

func layerOf(name string) (int, bool) {
	var i int
	var rest string
	if n, _ := fmt.Sscanf(name, "model.layers.%d.%s", &i, &rest); n == 2 {
		return i, true
	}
	return 0, false
}

// NewModule makes a bottleneck of width d/rf with its tensors named
// prefix + adapter_down.0.weight etc. (the hybrids build theirs with it).
func NewModule(prefix string, d, rf int, act, init, arch string, scaling Scaling, g *tensor.RNG) (*Module, nn.Params) {
	m := max(d/rf, 1)
	down, up := tensor.New(m, d), tensor.New(d, m)
	switch init {
	case "mam_adapter", "lora":
		down.KaimingUniform(g)
	default: // bert
		down.Normal(g, 0, 0.02)
		up.Normal(g, 0, 0.02)
	}
	mod := &Module{
		Down:  autograd.Param(prefix+"adapter_down.0.weight", down, true),
		DownB: autograd.Param(prefix+"adapter_down.0.bias", tensor.New(m), true),
		Up:    autograd.Param(prefix+"adapter_up.weight", up, true),
		UpB:   autograd.Param(prefix+"adapter_up.bias", tensor.New(d), true),
		Fixed: float32(scaling.Value), Act: act, Arch: arch,
	}
	ps := nn.Params{{Name: mod.Down.Name, Var: mod.Down}, {Name: mod.DownB.Name, Var: mod.DownB}, {Name: mod.Up.Name, Var: mod.Up}, {Name: mod.UpB.Name, Var: mod.UpB}}
	if scaling.Learned {
		mod.Scale = autograd.Param(prefix+"scaling", tensor.FromData([]float32{1}, 1), true)
		ps = append(ps, nn.Param{Name: mod.Scale.Name, Var: mod.Scale})
	}
	return mod, ps
}

// Forward is A(z), scaled for par_bn.
func (b *Module) Forward(p *nn.Pass, z *autograd.Var) *autograd.Var {
	tp := p.Tape
	h := tp.Add(tp.Linear(z, b.Down), b.DownB)
	switch b.Act {
	case "relu":
		h = Relu(tp, h)
	case "tanh":
		h = Tanh(tp, h)
	default:
		h = tp.SiLU(h)
	}
	y := tp.Add(tp.Linear(h, b.Up), b.UpB)
	if b.Scale != nil {
		return ScaleBy(tp, y, b.Scale)
	}
	if b.Fixed != 1 {
		return tp.Scale(y, b.Fixed)
	}
	return y
}

// ApplySublayer implements nn.SublayerHook.
func (b *Module) ApplySublayer(p *nn.Pass, _ *nn.Sublayer, residual, _, out *autograd.Var) *autograd.Var {
	switch b.Arch {
	case Seq:
		return p.Tape.Add(out, b.Forward(p, p.Tape.Add(residual, out)))
	case Par:
		return p.Tape.Add(out, b.Forward(p, residual))
	}
	return p.Tape.Add(out, b.Forward(p, out))
}

// ScaleBy is x·s for a trainable scalar s [1].
func ScaleBy(tp *autograd.Tape, x, s *autograd.Var) *autograd.Var {
	out := tensor.New(x.Value.Shape...)
	k := s.Value.Data[0]
	xs := x.Value.F32()
	for i, v := range xs {
		out.Data[i] = k * v
	}
	return tp.Result(out, func(o *autograd.Var) {
		if x.RequiresGrad() {
			g := x.GradBuf().Data
			for i := range g {
				g[i] += k * o.Grad.Data[i]
			}
		}
		if s.RequiresGrad() {
			var sum float64
			for i, v := range xs {
				sum += float64(v * o.Grad.Data[i])
			}
			s.GradBuf().Data[0] += float32(sum)
		}
	}, x, s)
}
