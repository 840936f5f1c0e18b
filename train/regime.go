package train

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
)

// What the training regimes (multi-stage pipelines, continual learning)
// need from a run besides Execute.

// Term is a loss added to every micro-batch's beside the run's objective
// and its method's peft.LossTerm. Unlike a LossTerm it sees the batch
// (learning without forgetting distils the previous model's outputs on
// it). The term is built on the pass's tape and scaled with the task loss
// by gradient accumulation.
type Term interface {
	TermLoss(p *nn.Pass, batch []data.Example) (*autograd.Var, error)
}

// replaySeed separates the replay draws' order from the training data's.
const replaySeed = 0x5EB1A7D0C0FFEE

// checkReplay refuses replay slots that leave no room for the training data.
func (r *Run) checkReplay(cfg Config) error {
	if r.ReplaySlots < 0 || (r.ReplaySlots > 0 && len(r.Replay) == 0) {
		return fmt.Errorf("train: %d replay slots with %d replay examples", r.ReplaySlots, len(r.Replay))
	}
	if r.ReplaySlots >= cfg.BatchSize {
		return fmt.Errorf("train: %d replay slots in a batch of %d leave no room for the training data", r.ReplaySlots, cfg.BatchSize)
	}
	return nil
}

// replayExample is the replay example of one slot of one micro-batch. The
// draws are numbered through the run (update, micro-batch, slot) and go
// through the replay set in a shuffled order per pass, so the choice is a
// function of the step alone and a resumed run draws the same examples
// without keeping a position in its checkpoint.
func (r *Run) replayExample(cfg Config, step, micro, slot int) data.Example {
	draw := ((step*cfg.GradAccum)+micro)*r.ReplaySlots + slot
	n := len(r.Replay)
	if epoch := draw / n; r.replayOrder == nil || epoch != r.replayEpoch {
		r.replayOrder, r.replayEpoch = data.Order(n, cfg.Seed^replaySeed, epoch), epoch
	}
	return r.Replay[r.replayOrder[draw%n]]
}

// restoreExtra hands a checkpoint's run state back to the run's State; a
// checkpoint must carry it exactly when the run keeps some.
func restoreExtra(s peft.Stateful, ck *Checkpoint) error {
	switch {
	case s == nil && ck.Extra != nil:
		return fmt.Errorf("checkpoint has run state (continual learning's), but this run keeps none")
	case s != nil && ck.Extra == nil:
		return fmt.Errorf("checkpoint has no run state, but this run keeps some (continual learning's)")
	case s != nil:
		return s.RestoreTrainState(*ck.Extra)
	}
	return nil
}

// BatchLoss is the mean loss of a batch under the run's objective (next
// token, or classification with Classify), built on p's tape; nil when the
// batch has nothing to predict.
func (r *Run) BatchLoss(p *nn.Pass, batch []data.Example) (*autograd.Var, error) {
	bl, err := r.batchLoss(p, batch)
	if err != nil || bl.n == 0 {
		return nil, err
	}
	return bl.loss, nil
}

// Evaluate is the run's evaluation on Eval as Execute does it (no tape, no
// dropout, batches of Config.BatchSize): the target-weighted mean loss and,
// for a classifier, the accuracy (NaN otherwise, and both NaN without
// targets).
func (r *Run) Evaluate() (loss, acc float64, err error) {
	if r.Config.BatchSize < 1 {
		return math.NaN(), math.NaN(), fmt.Errorf("train: batch size %d", r.Config.BatchSize)
	}
	return r.evalLoss(r.Config)
}

// RestoreFinished loads the run's finished result from its latest
// checkpoint in OutputDir (the trainable parameters and the method's
// state; not the optimizer): a pipeline resumed after this stage finished
// rebuilds it without training it again. The checkpoint must be at
// Config.Steps and carry the run's fingerprint.
func (r *Run) RestoreFinished() error {
	dir, ok, err := LatestCheckpoint(r.OutputDir)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("train: %s holds no checkpoint", r.OutputDir)
	}
	ck, err := LoadCheckpoint(dir)
	if err != nil {
		return err
	}
	if ck.Step != r.Config.Steps {
		return fmt.Errorf("train: %s is at step %d of %d, not finished", dir, ck.Step, r.Config.Steps)
	}
	if err := ck.Restore(r.Fingerprint, Trainable(r.Model.TrainableParams()), nil); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	if err := restoreMethodState(r.Model.Active().Method, ck); err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	return nil
}
