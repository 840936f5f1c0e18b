package peft

import (
	"encoding/json"
	"fmt"

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
//	StepHook.AfterUpdate    (rank budgets, mask refresh), then the gradients are zeroed
//	checkpoint: the parameters, the optimizer and Stateful.TrainState
//
// and Saver decides what an adapter file holds.

// LossTerm adds a regulariser to every micro-batch's loss (AdaLoRA's
// orthogonality, diff pruning's L0 penalty). The term is built on the
// pass's tape and is scaled with the task loss by gradient accumulation;
// the logged training loss includes it. A nil term adds nothing.
type LossTerm interface {
	ExtraLoss(p *nn.Pass) (*autograd.Var, error)
}

// GradHook runs when the update's gradients are complete (accumulated over
// its micro-batches and clipped), before the optimizer reads them. step is
// the update about to happen, counted from 0.
type GradHook interface {
	BeforeUpdate(step int) error
}

// StepHook runs after the optimizer's update step (counted from 0), while
// the parameters' gradients still hold the update's (clipped) values:
// they are zeroed after it, as PEFT's AdaLoRA update_and_allocate expects.
type StepHook interface {
	AfterUpdate(step int) error
}

// EntryMover is a StepHook whose AfterUpdate can give a trained tensor's
// entries new meanings (Fish-Dip moves its trained slots to the entries of
// a refreshed mask). After each AfterUpdate the trainer asks MovedEntries:
// per parameter save name, from[i] is the entry whose optimizer state
// entry i takes over, −1 for fresh (zero) state; nil when nothing moved.
type EntryMover interface {
	MovedEntries() map[string][]int32
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

// ShapeExplainer is a method whose tensors' shapes follow from its config
// (AdaLoRA's rank_pattern): when a file's tensor has shape got where the
// config implies want, ExplainShape says which key implies it ("" when
// none does: another base model, say), for the load error.
type ShapeExplainer interface {
	ExplainShape(tensor string, got, want []int) string
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

// RankSelector is a method whose one adapter runs at any of several ranks
// (DyLoRA): Ranks gives the range, SetRank the rank that inference,
// evaluation and merging use from then on.
type RankSelector interface {
	Ranks() (lo, hi int)
	SetRank(b int) error
}

// Converter is a method that changed the base weights when it initialised
// (PiSSA, OLoRA). Convert returns the config and tensors of an adapter of
// the same type that gives the same model on the original base, and
// SaveAdapter writes those (PEFT's path_initial_model_for_weight_conversion);
// ok is false when nothing needs converting.
type Converter interface {
	Convert() (cfg Config, params nn.Params, ok bool, err error)
}

// WeightedAdapter is one input of adapter arithmetic: an adapter read from
// its directory (ReadAdapter) and its weight.
type WeightedAdapter struct {
	Dir     string
	Method  Method
	Tensors map[string]*tensor.Tensor
	Weight  float64
}

// CombineOptions are the settings of adapter arithmetic (PEFT's
// add_weighted_adapter arguments).
type CombineOptions struct {
	Combination  string  // linear, cat, svd, ties, ... (the method's list)
	Density      float64 // the pruning types' kept fraction (≥ 1: none pruned)
	MajoritySign string  // ties and dare_ties: total (default) or frequency
	SVDRank      int     // the svd types' rank (0: the largest input rank)
	SVDClamp     float64 // the svd types: clamp to this quantile (0: none)
	Seed         uint64  // DARE's random drops
}

// Combiner is a method whose adapters combine into a new adapter of its
// type (LoRA's add_weighted_adapter). Combine receives every input, the
// first of them of this method, and returns the new adapter's config and
// tensors by save name.
type Combiner interface {
	Combine(ins []WeightedAdapter, o CombineOptions) (Config, nn.Params, error)
}

// CombineAdapters combines adapters through their method's Combiner.
func CombineAdapters(ins []WeightedAdapter, o CombineOptions) (Config, nn.Params, error) {
	if len(ins) == 0 {
		return nil, nil, fmt.Errorf("no adapters to combine")
	}
	c, ok := ins[0].Method.(Combiner)
	if !ok {
		return nil, nil, fmt.Errorf("%s: %s adapters cannot be combined", ins[0].Dir, ins[0].Method.Config().Base().PeftType)
	}
	return c.Combine(ins, o)
}
