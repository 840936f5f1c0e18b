package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/dist"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// Config is a training run's hyper-parameters, used as given: start from
// DefaultConfig, and Validate says what each field allows.
type Config struct {
	Steps       int     `json:"steps" yaml:"steps"`               // optimizer updates (required)
	BatchSize   int     `json:"batch_size" yaml:"batch_size"`     // sequences per micro-batch
	GradAccum   int     `json:"grad_accum" yaml:"grad_accum"`     // micro-batches per update
	LR          float64 `json:"lr" yaml:"lr"`                     // peak learning rate
	Schedule    string  `json:"schedule" yaml:"schedule"`         // constant, linear or cosine
	Warmup      int     `json:"warmup_steps" yaml:"warmup_steps"` // linear warm-up steps
	MinLRRatio  float64 `json:"min_lr_ratio" yaml:"min_lr_ratio"` // cosine floor as a fraction of LR
	Optimizer   string  `json:"optimizer" yaml:"optimizer"`       // adamw, adamw_8bit or sgd
	WeightDecay float64 `json:"weight_decay" yaml:"weight_decay"` // decoupled for AdamW, L2 for SGD
	Momentum    float64 `json:"momentum" yaml:"momentum"`         // SGD only
	MaxGradNorm float64 `json:"max_grad_norm" yaml:"max_grad_norm"`
	Seed        uint64  `json:"seed" yaml:"seed"` // data order and dropout masks

	EvalEvery int `json:"-" yaml:"eval_every"`       // steps between evaluations (0: start and end only)
	SaveEvery int `json:"-" yaml:"save_every"`       // steps between checkpoints (0: end only)
	Keep      int `json:"-" yaml:"keep_checkpoints"` // newest checkpoints kept (0: all)
	LogEvery  int `json:"-" yaml:"log_every"`        // steps between metric lines
}

// Run is one training job: a PEFT model (its active adapter, or full
// fine-tuning, is what trains), the data, and where results go.
type Run struct {
	Model  *peft.Model
	Train  []data.Example
	Eval   []data.Example
	Config Config
	// OutputDir receives checkpoints, metrics.jsonl and loss.png.
	OutputDir string
	// Fingerprint identifies the run for resuming: everything that makes
	// it the same run (model, method, data, hyper-parameters).
	Fingerprint string
	// Resume continues from the latest checkpoint in OutputDir.
	Resume bool
	// Progress receives the progress line (nil: none).
	Progress io.Writer
	// ParamLine, when set, receives PEFT's trainable-parameters line once
	// the method's parameters exist (after a peft.Preparer chose them).
	ParamLine io.Writer
	// Meta is stored in every checkpoint (the recipe).
	Meta []byte
	// AfterStep, when set, is called after each update with its record
	// (tests use it to compare runs step by step).
	AfterStep func(Record)
	// Classify trains sequence classification instead of next-token
	// prediction: the loss is the cross-entropy of the base's
	// classification head (llama.Model.ClassifyLogits) against each
	// example's Class, and evaluation also reports accuracy.
	Classify bool
	// Terms are losses added to every micro-batch's beside the objective
	// and the method's LossTerm (continual learning's EWC and LwF).
	Terms []Term
	// State is the run's own state beside the method's (EWC's Fisher and
	// anchors): saved in every checkpoint (Checkpoint.Extra) and restored
	// on resume.
	State peft.Stateful
	// Replay fills the first ReplaySlots sequences of every micro-batch
	// (see replayExample); the others come from Train.
	Replay      []data.Example
	ReplaySlots int
	replayOrder []int
	replayEpoch int
	// Comm is the group of ranks training together (data-parallel, see
	// dist.go); nil trains alone.
	Comm dist.Communicator

	dp *dataParallel
}

// Summary reports a finished run.
type Summary struct {
	Steps               int
	FirstEval, LastEval float64 // mean eval loss before and after (NaN without eval data)
	// FirstEvalAcc and LastEvalAcc are the eval accuracy before and after
	// a classification run (NaN otherwise).
	FirstEvalAcc, LastEvalAcc float64
	FirstLoss, LastLoss       float64 // training loss of the first and last step run here
	Tokens                    int     // trained target tokens
	Elapsed                   time.Duration
	TokensPerSec              float64
	LastCheckpoint            string
	MetricsPath, PlotPath     string
}

// ErrFinished is returned (wrapped) when a resumed run has no steps left.
var ErrFinished = errors.New("the run already finished")

// ErrNonFinite reports a NaN or infinite loss or gradient.
var ErrNonFinite = errors.New("non-finite loss or gradient")

// Execute trains until Config.Steps updates are done or ctx ends (then it
// saves a checkpoint and returns ctx's error).
func (r *Run) Execute(ctx context.Context) (Summary, error) {
	cfg := r.Config
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	if len(r.Train) == 0 {
		return Summary{}, fmt.Errorf("train: the training set is empty")
	}
	if err := r.checkReplay(cfg); err != nil {
		return Summary{}, err
	}
	if a := r.Model.Active(); a != nil {
		if p, ok := a.Method.(peft.Preparer); ok {
			if err := p.Prepare(r.Model, a, objective{r}); err != nil {
				return Summary{}, err
			}
		}
	}
	if r.ParamLine != nil {
		fmt.Fprintln(r.ParamLine, r.Model.ParamLine())
	}
	params := Trainable(r.Model.TrainableParams())
	if len(params) == 0 {
		return Summary{}, fmt.Errorf("train: nothing is trainable (no active adapter)")
	}
	method := r.Model.Active().Method
	opt, err := r.newOptimizer(cfg)
	if err != nil {
		return Summary{}, err
	}
	if g, ok := method.(peft.ParamGrouper); ok {
		if err := opt.SetGroups(g.ParamGroups()); err != nil {
			return Summary{}, err
		}
	}
	sched, err := NewSchedule(cfg.Schedule, cfg.LR, cfg.Warmup, cfg.Steps, cfg.MinLRRatio)
	if err != nil {
		return Summary{}, err
	}
	if r.dp, err = r.newDataParallel(cfg, params); err != nil {
		return Summary{}, err
	}
	if r.dp.writes() {
		if err := os.MkdirAll(r.OutputDir, 0o755); err != nil {
			return Summary{}, err
		}
	}
	sum := Summary{FirstEval: math.NaN(), LastEval: math.NaN(), FirstEvalAcc: math.NaN(), LastEvalAcc: math.NaN(), MetricsPath: filepath.Join(r.OutputDir, "metrics.jsonl"), PlotPath: filepath.Join(r.OutputDir, "loss.png")}

	step, pos := 0, int64(0)
	var log *MetricsLog
	if r.Resume {
		ck, dir, err := r.dp.latestCheckpoint(r.OutputDir)
		if err != nil {
			return sum, err
		}
		if err := ck.Restore(r.Fingerprint, params, opt); err != nil {
			return sum, fmt.Errorf("%s: %w", dir, err)
		}
		if err := restoreMethodState(method, ck); err != nil {
			return sum, fmt.Errorf("%s: %w", dir, err)
		}
		if err := restoreExtra(r.State, ck); err != nil {
			return sum, fmt.Errorf("%s: %w", dir, err)
		}
		step, pos = ck.Step, ck.DataPos
		if step >= cfg.Steps {
			// Resuming would write an empty metrics log over the
			// finished run's: change nothing.
			return sum, fmt.Errorf("train: %w: %s is at step %d of %d; nothing to resume", ErrFinished, dir, step, cfg.Steps)
		}
		if log, err = r.dp.resumeLog(sum.MetricsPath, step); err != nil {
			return sum, err
		}
	} else if log, err = r.dp.createLog(sum.MetricsPath); err != nil {
		return sum, err
	}
	defer log.Close()

	if len(r.Eval) > 0 {
		if sum.FirstEval, sum.FirstEvalAcc, err = r.evalLoss(cfg); err != nil {
			return sum, err
		}
	}
	prog := NewProgress(r.dp.progress(r.Progress), step, cfg.Steps)
	start := time.Now()
	first := true
	var order []int
	orderEpoch := -1
	for step < cfg.Steps {
		if err := r.dp.stopped(ctx); err != nil {
			dir, serr := r.save(cfg, step, pos, params, opt)
			if serr != nil {
				return sum, serr
			}
			if dir != "" { // the writing rank says where to continue from
				return sum, fmt.Errorf("interrupted at step %d of %d (%w): checkpoint %s written; continue with --resume", step, cfg.Steps, err, dir)
			}
			return sum, fmt.Errorf("interrupted at step %d of %d: %w", step, cfg.Steps, err)
		}
		var lossSum float64
		tokens := 0
		t0 := time.Now()
		for micro := 0; micro < cfg.GradAccum; micro++ {
			batch := make([]data.Example, cfg.BatchSize)
			for i := range batch {
				if i < r.ReplaySlots {
					batch[i] = r.replayExample(cfg, step, micro, i)
					continue
				}
				n := int64(len(r.Train))
				epoch := int(pos / n)
				if epoch != orderEpoch {
					order, orderEpoch = data.Order(len(r.Train), cfg.Seed, epoch), epoch
				}
				batch[i] = r.Train[order[pos%n]]
				pos++
			}
			tp := autograd.NewTape()
			pass := &nn.Pass{Tape: tp, Training: true, Seed: MicroBatchSeed(cfg.Seed, step, micro)}
			shard := r.dp.shard(batch, micro)
			var bl batchResult
			if len(shard) > 0 {
				if bl, err = r.batchLoss(pass, shard); err != nil {
					return sum, err
				}
			}
			w, all := r.dp.share(batch, bl.n) // (1, bl.n) alone
			if all == 0 {
				continue
			}
			var loss *autograd.Var
			if bl.n > 0 {
				tokens += bl.tokens
				if loss = bl.loss; w != 1 {
					loss = tp.Scale(loss, float32(w))
				}
			}
			// The method's and the run's regularisers count once over the
			// ranks, and appear in the logged loss.
			add := func(extra *autograd.Var) {
				switch {
				case extra == nil:
				case loss == nil:
					loss = extra
				default:
					loss = tp.Add(loss, extra)
				}
			}
			if lt, ok := method.(peft.LossTerm); ok && r.dp.writes() {
				extra, err := lt.ExtraLoss(pass)
				if err != nil {
					return sum, err
				}
				add(extra)
			}
			if r.dp.writes() { // on the whole batch
				for _, t := range r.Terms {
					extra, err := t.TermLoss(pass, batch)
					if err != nil {
						return sum, err
					}
					add(extra)
				}
			}
			if loss != nil {
				lossSum += float64(loss.Value.Data[0])
				tp.Backward(tp.Scale(loss, 1/float32(cfg.GradAccum)))
			}
		}
		if err := r.dp.sumGrads(ctx, &lossSum, &tokens); err != nil {
			return sum, err
		}
		lossVal := lossSum / float64(cfg.GradAccum)
		var norm float64
		if cfg.MaxGradNorm > 0 {
			norm = ClipGradNorm(params, cfg.MaxGradNorm)
		} else {
			norm = GradNorm(params)
		}
		if !IsFinite(lossVal) || !IsFinite(norm) {
			last, ok, _ := LatestCheckpoint(r.OutputDir)
			if !ok {
				last = "none saved yet"
			}
			return sum, fmt.Errorf("%w at step %d (loss %v, gradient norm %v); stopped without updating; last good checkpoint: %s",
				ErrNonFinite, step+1, lossVal, norm, last)
		}
		if h, ok := method.(peft.GradHook); ok {
			if err := h.BeforeUpdate(step); err != nil {
				return sum, err
			}
		}
		lr := sched.At(step)
		opt.Step(lr)
		if h, ok := method.(peft.StepHook); ok { // before the gradients are zeroed
			if err := h.AfterUpdate(step); err != nil {
				return sum, err
			}
		}
		if mv, ok := method.(peft.EntryMover); ok {
			for name, from := range mv.MovedEntries() {
				if err := opt.MoveEntries(name, from); err != nil {
					return sum, err
				}
			}
		}
		opt.ZeroGrad()
		step++
		dt := time.Since(t0).Seconds()
		sum.Tokens += tokens
		tps := float64(tokens) / dt
		if first {
			sum.FirstLoss, first = lossVal, false
		}
		sum.LastLoss = lossVal
		rec := Record{Step: step, Epoch: float64(pos) / float64(len(r.Train)), Loss: lossVal, LR: lr, GradNorm: norm,
			TokensPerSec: tps, Elapsed: time.Since(start).Seconds()}
		if len(r.Eval) > 0 && (step == cfg.Steps || (cfg.EvalEvery > 0 && step%cfg.EvalEvery == 0)) {
			ev, acc, err := r.evalLoss(cfg)
			if err != nil {
				return sum, err
			}
			rec.EvalLoss = &ev
			sum.LastEval, sum.LastEvalAcc = ev, acc
			if r.Classify {
				prog.Printf("step %d: eval loss %.4f, accuracy %.4f", step, ev, acc)
			} else {
				prog.Printf("step %d: eval loss %.4f (perplexity %.2f)", step, ev, math.Exp(ev))
			}
		}
		if step%cfg.LogEvery == 0 || rec.EvalLoss != nil || step == cfg.Steps {
			if err := log.Write(rec); err != nil {
				return sum, err
			}
		}
		prog.Update(step, lossVal, tps)
		if r.AfterStep != nil {
			r.AfterStep(rec)
		}
		if (cfg.SaveEvery > 0 && step%cfg.SaveEvery == 0) || step == cfg.Steps {
			if sum.LastCheckpoint, err = r.save(cfg, step, pos, params, opt); err != nil {
				return sum, err
			}
		}
	}
	prog.Done()
	sum.Steps = step
	sum.Elapsed = time.Since(start)
	sum.TokensPerSec = float64(sum.Tokens) / sum.Elapsed.Seconds()
	if err := log.Close(); err != nil {
		return sum, err
	}
	if !r.dp.writes() {
		return sum, nil
	}
	if recs, err := ReadMetricsFile(sum.MetricsPath); err == nil && len(recs) > 0 {
		if err := PlotLoss(sum.PlotPath, recs, "gopeft training loss"); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func (r *Run) newOptimizer(cfg Config) (Optimizer, error) {
	ps := r.Model.TrainableParams()
	switch cfg.Optimizer {
	case "adamw", "adamw_8bit":
		c := DefaultAdamW()
		c.WeightDecay = cfg.WeightDecay
		if cfg.Optimizer == "adamw_8bit" {
			return NewAdamW8bit(ps, c)
		}
		return NewAdamW(ps, c)
	case "sgd":
		return NewSGD(ps, SGDConfig{Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay})
	}
	return nil, fmt.Errorf("train: unknown optimizer %q (adamw, adamw_8bit, sgd)", cfg.Optimizer)
}

func (r *Run) save(cfg Config, step int, pos int64, params nn.Params, opt Optimizer) (string, error) {
	if err := r.dp.checkSame(step); err != nil || !r.dp.writes() {
		return "", err
	}
	ck := &Checkpoint{Step: step, DataPos: pos, Epoch: int(pos / int64(len(r.Train))), Fingerprint: r.Fingerprint, Meta: r.Meta}
	ck.Capture(params, opt)
	if s, ok := r.Model.Active().Method.(peft.Stateful); ok {
		st := s.TrainState()
		ck.Method = &st
	}
	if r.State != nil {
		st := r.State.TrainState()
		ck.Extra = &st
	}
	return SaveRotating(r.OutputDir, ck, cfg.Keep)
}

// batchResult is one batch's mean loss, how many targets it averages
// (tokens for a language model, sequences for a classifier), the tokens
// it trained on (for throughput), and for a classifier how many
// predictions were right.
type batchResult struct {
	loss      *autograd.Var
	n, tokens int
	correct   int
}

// MicroBatchSeed is the pass seed of one micro-batch of a run: every
// micro-batch of every update draws its own dropout masks, and a resumed
// run draws the same ones again.
func MicroBatchSeed(runSeed uint64, step, micro int) uint64 {
	return runSeed ^ (uint64(step)*0x9E3779B97F4A7C15 + uint64(micro)*0xD1B54A32D192ED03 + 1)
}

// restoreMethodState hands a checkpoint's method state back to a stateful
// method; a checkpoint must carry state exactly when the method keeps some.
func restoreMethodState(method peft.Method, ck *Checkpoint) error {
	s, ok := method.(peft.Stateful)
	switch {
	case ok && ck.Method == nil:
		return fmt.Errorf("checkpoint has no state for the %s method", method.Config().Base().PeftType)
	case !ok && ck.Method != nil:
		return fmt.Errorf("checkpoint has method state, but the %s method keeps none", method.Config().Base().PeftType)
	case ok:
		return s.RestoreTrainState(*ck.Method)
	}
	return nil
}

// objective is the run's loss on its training examples, for a
// peft.Preparer.
type objective struct{ r *Run }

func (o objective) Len() int { return len(o.r.Train) }

// Loss is the mean loss of the examples, or nil when none of them has a
// target.
func (o objective) Loss(p *nn.Pass, idx []int) (*autograd.Var, error) {
	batch := make([]data.Example, len(idx))
	for i, j := range idx {
		if j < 0 || j >= len(o.r.Train) {
			return nil, fmt.Errorf("train: objective asked for example %d of %d", j, len(o.r.Train))
		}
		batch[i] = o.r.Train[j]
	}
	bl, err := o.r.batchLoss(p, batch)
	if err != nil || bl.n == 0 {
		return nil, err
	}
	return bl.loss, nil
}

// batchLoss is the mean loss of a batch under the run's objective.
func (r *Run) batchLoss(p *nn.Pass, batch []data.Example) (batchResult, error) {
	ids, labels, mask, T := data.Batch(batch, 0)
	in := llama.Input{IDs: ids, Batch: len(batch), T: T, Mask: mask, Segments: data.SegmentIDs(batch, T)}
	if r.Classify {
		return r.classifyLoss(p, in, batch)
	}
	n := 0
	for i, l := range labels { // the rows that predict a label
		if l != autograd.IgnoreIndex && i%T != 0 {
			n++
		}
	}
	if n == 0 {
		return batchResult{}, nil
	}
	loss, err := r.Model.Base.Loss(p, in, labels)
	return batchResult{loss: loss, n: n, tokens: n}, err
}

// classifyLoss is the classification head's mean cross-entropy over the
// batch's sequences.
func (r *Run) classifyLoss(p *nn.Pass, in llama.Input, batch []data.Example) (batchResult, error) {
	classes := make([]int, len(batch))
	res := batchResult{n: len(batch)}
	for i, e := range batch {
		classes[i] = e.Class
		res.tokens += len(e.IDs)
	}
	m := r.Model.Base
	logits, err := m.ClassifyLogits(p, in)
	if err != nil {
		return res, err
	}
	for i, c := range classes {
		if c < 0 || c >= m.NumLabels() {
			return res, fmt.Errorf("train: example %s has class %d, the classification head has %d labels", batch[i].Source, c, m.NumLabels())
		}
		if tensor.Argmax(logits.Value.Row(i)) == c {
			res.correct++
		}
	}
	res.loss = p.Tape.CrossEntropy(logits, classes)
	return res, nil
}

// evalLoss is the target-weighted mean loss over the eval set, without a
// tape (dropout off), and for a classifier its accuracy (NaN otherwise).
func (r *Run) evalLoss(cfg Config) (loss, acc float64, err error) {
	var total float64
	var count, correct int
	for i := 0; i < len(r.Eval); i += cfg.BatchSize {
		if !r.dp.evalBatch(i / cfg.BatchSize) {
			continue
		}
		batch := r.Eval[i:min(i+cfg.BatchSize, len(r.Eval))]
		bl, err := r.batchLoss(&nn.Pass{}, batch)
		if err != nil {
			return 0, 0, err
		}
		if bl.n > 0 {
			total += float64(bl.loss.Value.Data[0]) * float64(bl.n)
			count += bl.n
			correct += bl.correct
		}
	}
	if err := r.dp.sumEval(&total, &count, &correct); err != nil {
		return 0, 0, err
	}
	if count == 0 {
		return math.NaN(), math.NaN(), nil
	}
	acc = math.NaN()
	if r.Classify {
		acc = float64(correct) / float64(count)
	}
	return total / float64(count), acc, nil
}
