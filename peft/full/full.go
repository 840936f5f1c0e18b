// Package full is full fine-tuning as a PEFT method: every base tensor
// trains. It is the degenerate case that lets the trainer, checkpoints and
// the CLI treat full fine-tuning like any adapter; the result is saved as a
// whole model, not an adapter.
package full

import (
	"fmt"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// PeftType names full fine-tuning in recipes (PEFT has no such type).
const PeftType = "FULL"

func init() {
	peft.Register(peft.Registration{Type: PeftType, New: func() peft.Method { return New() }})
}

// Config has no keys of its own.
type Config struct{ peft.BaseConfig }

// Validate implements peft.Config.
func (c *Config) Validate() error { return nil }

// Method marks every base parameter trainable.
type Method struct{ Cfg *Config }

// New returns the full fine-tuning method.
func New() *Method {
	return &Method{Cfg: &Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: "CAUSAL_LM"}}}
}

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.Cfg }

// Attach implements peft.Method: the base's own tensors, under their
// Hugging Face names, are the adapter's parameters.
func (m *Method) Attach(pm *peft.Model, _ *peft.Adapter) (nn.Params, error) {
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

// Merge implements peft.Merger: the weights already are the model.
func (m *Method) Merge(*peft.Adapter) error { return nil }

// Unmerge implements peft.Merger.
func (m *Method) Unmerge(*peft.Adapter) error { return nil }

// SaveModel implements peft.WholeModel: the result is a Hugging Face model
// directory.
func (m *Method) SaveModel(pm *peft.Model, dir string) error { return llama.SaveHF(pm.Base, dir) }
