// Package full is full fine-tuning as a PEFT method: every base tensor
// trains. It is the degenerate case that lets the trainer, checkpoints and
// the CLI treat full fine-tuning like any adapter; the result is saved as a
// whole model, not an adapter.
//
// With trainable_modules, layers_to_transform or trainable_heads it is
// "specification-based" delta tuning (Ding et al.; OpenDelta's
// unfrozen_modules): only the chosen Linear weights, or the rows and
// columns of the chosen attention heads, train, and the result is a sparse
// delta adapter (package sparse) holding only those entries.
package full

import (
	"fmt"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/sparse"
	"github.com/gopeft/gopeft/tensor"
)

// PeftType names full fine-tuning in recipes (PEFT has no such type).
const PeftType = "FULL"

func init() {
	peft.Register(peft.Registration{Type: PeftType, New: func() peft.Method { return New() },
		Flags: []peft.Flag{
			{Name: "trainable-modules", Key: "trainable_modules", Kind: peft.ModulesFlag,
				Usage: "train only these Linear modules of the base (a comma list, a regex or all-linear); saves a sparse delta adapter"},
			{Name: "layers-to-transform", Key: "layers_to_transform", Kind: peft.IntsFlag,
				Usage: "train only the trainable modules (default all-linear) of these layers, a comma list"},
			{Name: "trainable-heads", Key: "trainable_heads", Kind: peft.StringFlag,
				Usage: "train only these attention heads, LAYER:HEAD,...: their rows of q/k/v (GQA: the kv head serving the query head) and columns of o"},
		}})
}

// Config is FULL's configuration: empty for full fine-tuning, or the
// chosen modules and heads.
type Config struct {
	peft.BaseConfig
	// TrainableModules selects the Linear modules that train whole (with
	// exclude_modules, layers_to_transform and layers_pattern, as
	// target_modules does for other methods).
	TrainableModules peft.Modules `json:"trainable_modules"`
	// TrainableHeads are attention heads (layer, query head) whose slices
	// of q, k, v and o train.
	TrainableHeads Heads `json:"trainable_heads,omitempty"`
	// Density is the fraction of the base the saved delta changes; written
	// with the adapter.
	Density float64 `json:"density,omitempty"`
}

// Chosen reports whether only chosen modules or heads train.
func (c *Config) Chosen() bool {
	return c.TrainableModules.IsSet() || len(c.LayersToTransform) > 0 || len(c.TrainableHeads) > 0
}

// Validate implements peft.Config.
func (c *Config) Validate() error {
	if c.TargetModules.IsSet() {
		return &peft.KeyError{Method: PeftType, Key: "target_modules", Value: targetsText(c.TargetModules), Allowed: "full fine-tuning adds no modules: use trainable_modules to train chosen ones"}
	}
	if c.TrainableModules.IsSet() && c.TrainableModules.Names != nil && len(c.TrainableModules.Names) == 0 {
		return &peft.KeyError{Method: PeftType, Key: "trainable_modules", Value: "[]", Allowed: "name at least one module"}
	}
	if c.Density < 0 || c.Density > 1 {
		return &peft.KeyError{Method: PeftType, Key: "density", Value: c.Density, Allowed: "must be in [0, 1]"}
	}
	for _, h := range c.TrainableHeads {
		if h.Layer < 0 || h.Head < 0 {
			return &peft.KeyError{Method: PeftType, Key: "trainable_heads", Value: h.String(), Allowed: "layers and heads count from 0"}
		}
	}
	return nil
}

func targetsText(m peft.Modules) string {
	b, _ := m.MarshalJSON()
	return string(b)
}

// Method is full fine-tuning, or with chosen modules the sparse delta of
// their entries.
type Method struct {
	Cfg    *Config
	chosen *sparse.Method
}

// New returns the full fine-tuning method.
func New() *Method {
	return &Method{Cfg: &Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM"}}}
}

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// Attach implements peft.Method: the base's own tensors, under their
// Hugging Face names, are the adapter's parameters; with chosen modules,
// nothing until Prepare (or LoadTensors) attaches their delta.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	if m.Cfg.Chosen() {
		return m.attachChosen(pm, a)
	}
	ps := pm.Base.Params()
	for _, p := range ps {
		if v := p.Var.Value; v.Quantized() {
			return nil, fmt.Errorf("full fine-tuning cannot train a quantized base: %s is %v (4- and 8-bit weights are frozen); load without --quant, or train an adapter such as LoRA over it (QLoRA)", p.Name, v.DType())
		}
		if p.Var.Value.DType() != tensor.F32 {
			return nil, fmt.Errorf("full fine-tuning needs float32 weights; %s is %v (load without --bf16)", p.Name, p.Var.Value.DType())
		}
	}
	return ps, nil
}

// Merge implements peft.Merger: the weights already are the model (with
// chosen modules: θ ← θ + δ at their entries).
func (m *Method) Merge(a *peft.Adapter) error {
	if m.chosen != nil {
		return m.chosen.Merge(a)
	}
	return nil
}

// Unmerge implements peft.Merger.
func (m *Method) Unmerge(a *peft.Adapter) error {
	if m.chosen != nil {
		return m.chosen.Unmerge(a)
	}
	return nil
}

// IsWhole implements peft.WholeModel: only full fine-tuning of every
// tensor saves a model directory.
func (m *Method) IsWhole() bool { return m.chosen == nil }

// SaveModel implements peft.WholeModel: the result is a Hugging Face model
// directory.
func (m *Method) SaveModel(pm *peft.Model, dir string) error { return llama.SaveHF(pm.Base, dir) }

// Prepare implements peft.Preparer: with chosen modules it attaches a
// zero delta on their entries.
func (m *Method) Prepare(pm *peft.Model, a *peft.Adapter, obj peft.Objective) error {
	if m.chosen == nil {
		return nil
	}
	if err := m.chosen.Prepare(pm, a, obj); err != nil {
		return err
	}
	m.setDensity(pm)
	return nil
}

func (m *Method) setDensity(pm *peft.Model) {
	all, _ := pm.Base.Params().Count()
	m.Cfg.Density = float64(m.chosen.Changed()) / float64(all)
}

// ParamGroups implements peft.ParamGrouper: the chosen entries' delta
// takes no weight decay (see sparse.Method.ParamGroups); full fine-tuning
// keeps the run's settings.
func (m *Method) ParamGroups() []peft.ParamGroup {
	if m.chosen == nil {
		return nil
	}
	return m.chosen.ParamGroups()
}

// SaveTensors implements peft.TensorFile: the chosen entries' sparse delta.
func (m *Method) SaveTensors() ([]*format.Tensor, error) {
	if m.chosen == nil {
		return nil, fmt.Errorf("full fine-tuning saves a model directory, not an adapter")
	}
	return m.chosen.SaveTensors()
}

// LoadTensors implements peft.TensorFile.
func (m *Method) LoadTensors(pm *peft.Model, a *peft.Adapter, stored map[string]*format.Tensor, path string) error {
	if m.chosen == nil {
		return fmt.Errorf("%s: a FULL adapter names trainable_modules or trainable_heads (full fine-tuning saves a model directory)", path)
	}
	return m.chosen.LoadTensors(pm, a, stored, path)
}
