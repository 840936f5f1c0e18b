package peft

import (
	"encoding/json"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// The trainer's lifecycle. A Method implements only the parts it needs;
// train.Run calls each at its point of every optimizer update:
//
//	for each micro-batch: loss = task loss + LossTerm.ExtraLoss; backward
//	clip the gradients' global norm
//	GradHook.BeforeUpdate   (gradient masks: child-tuning, FishMask)
//	optimizer step, with the learning rate and weight decay of ParamGrouper's groups
//	StepHook.AfterUpdate    (rank budgets, mask refresh)
//	checkpoint: the parameters, the optimizer and Stateful.TrainState
//
// and Saver decides what an adapter file holds.

// LossTerm adds a regulariser to every micro-batch's loss (AdaLoRA's
// orthogonality, diff pruning's L0 penalty). The term is built on the
// pass's tape and is scaled with the task loss by gradient accumulation.
type LossTerm interface {
	ExtraLoss(p *nn.Pass) (*autograd.Var, error)
}

// GradHook runs when the update's gradients are complete (accumulated over
// its micro-batches and clipped), before the optimizer reads them. step is
// the update about to happen, counted from 0.
type GradHook interface {
	BeforeUpdate(step int) error
}

// StepHook runs after the optimizer's update step (counted from 0).
type StepHook interface {
	AfterUpdate(step int) error
}

// State is what a method keeps across updates besides its parameters
// (importance scores, masks, a budget's position): tensors by name and
// JSON for the rest. It is written into every checkpoint and handed back
// on --resume, so a resumed run continues bitwise.
type State struct {
	Tensors map[string]*tensor.Tensor
	JSON    json.RawMessage
}

// Stateful is a method with State. TrainState may return the live tensors:
// the checkpoint is written before the next update.
type Stateful interface {
	TrainState() State
	RestoreTrainState(State) error
}

// ParamGroup gives some of an adapter's parameters (by save name) their
// own learning rate (LRScale times the schedule's) and weight decay (nil:
// the run's). A parameter in no group takes the run's settings.
type ParamGroup struct {
	Name        string
	Params      []string
	LRScale     float64
	WeightDecay *float64
}

// ParamGrouper is a method whose parameters train at different rates
// (diff pruning's gates, LoRA+'s B).
type ParamGrouper interface {
	ParamGroups() []ParamGroup
}

// Saver is a method whose adapter file holds other tensors than it trains
// (prefix tuning's MLP trains, its output is saved; AdaLoRA's tensors are
// sliced to their ranks). SavedParams returns the tensors to write, computed
// from the trained ones, under their save names; LoadAdapter fills the same
// tensors from a file and then calls Loaded.
type Saver interface {
	SavedParams() (nn.Params, error)
	Loaded() error
}

// WholeModel is a method whose result is the base model itself (full
// fine-tuning): Model.Save writes a model directory instead of an adapter.
type WholeModel interface {
	SaveModel(m *Model, dir string) error
}

// Objective is a training run's loss, handed to a Preparer: how many
// training examples there are and the run's mean loss (next-token or
// classification) on a batch of them, built on the pass's tape.
type Objective interface {
	Len() int
	Loss(p *nn.Pass, examples []int) (*autograd.Var, error)
}

// Preparer is a method that looks at the training data before its
// parameters exist (FishMask's Fisher information, PaFi's smallest
// weights): train.Run calls Prepare before it builds the optimizer, on a
// fresh run and again on resume (so Prepare must be deterministic; state
// that changes during training comes back through Stateful). Prepare may
// set the adapter's parameters (Adapter.SetParams). The objective stays
// valid for the whole run.
type Preparer interface {
	Prepare(m *Model, a *Adapter, obj Objective) error
}

// TensorFile is a method whose adapter_model.safetensors holds more than
// float32 copies of its parameters (a sparse delta's int64 indices):
// SaveTensors returns what the file holds besides modules_to_save's
// copies, and LoadTensors takes its tensors out of stored (deleting the
// names it used) and builds the adapter from them; path names the file in
// errors.
type TensorFile interface {
	SaveTensors() ([]*format.Tensor, error)
	LoadTensors(m *Model, a *Adapter, stored map[string]*format.Tensor, path string) error
}
