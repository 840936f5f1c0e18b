package pipeline

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

// The continual-learning strategies.
const (
	StrategyNone   = "none"   // train each stage as it comes
	StrategyReplay = "replay" // mix earlier stages' training data into every batch
	StrategyEWC    = "ewc"    // elastic weight consolidation
	StrategyLwF    = "lwf"    // learning without forgetting: distil the previous stage's outputs
)

// Continual is how a pipeline guards earlier stages against forgetting,
// and asks for the forgetting matrix (every stage's held-out set after
// every stage).
type Continual struct {
	Strategy string `yaml:"strategy" json:"strategy"`
	// ReplayFraction is the share of every batch drawn from earlier
	// stages' training data (replay): round(fraction × batch_size)
	// sequences of each micro-batch.
	ReplayFraction float64 `yaml:"replay_fraction,omitempty" json:"replay_fraction,omitempty"`
	// EWCLambda weighs the EWC penalty λ/2 Σ F (θ − θ*)².
	EWCLambda float64 `yaml:"ewc_lambda,omitempty" json:"ewc_lambda,omitempty"`
	// FisherSamples is how many training sequences of each earlier stage
	// estimate the Fisher (0: 64).
	FisherSamples int `yaml:"fisher_samples,omitempty" json:"fisher_samples,omitempty"`
	// LwFLambda weighs the distillation loss (0: 1) and LwFTemperature
	// softens both distributions (0: 2).
	LwFLambda      float64 `yaml:"lwf_lambda,omitempty" json:"lwf_lambda,omitempty"`
	LwFTemperature float64 `yaml:"lwf_temperature,omitempty" json:"lwf_temperature,omitempty"`
}

// FieldError is a setting of a pipeline outside what it allows: Stage is
// the stage's name ("" for the continual block or the pipeline), Key the
// recipe key.
type FieldError struct {
	Stage, Key string
	Msg        string
}

func (e *FieldError) Error() string {
	if e.Stage == "" {
		return fmt.Sprintf("%s: %s", e.Key, e.Msg)
	}
	return fmt.Sprintf("stage %q: %s: %s", e.Stage, e.Key, e.Msg)
}

// Validate checks the block's keys, naming the first one out of range.
func (c *Continual) Validate() error {
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	bad := func(key, msg string) error { return &FieldError{Key: "continual." + key, Msg: msg} }
	switch c.Strategy {
	case StrategyNone, StrategyReplay, StrategyEWC, StrategyLwF:
	default:
		return bad("strategy", fmt.Sprintf("%q: must be none, replay, ewc or lwf", c.Strategy))
	}
	if !finite(c.ReplayFraction) || c.ReplayFraction < 0 || c.ReplayFraction >= 1 {
		return bad("replay_fraction", fmt.Sprintf("%v: must be in [0, 1)", c.ReplayFraction))
	}
	if c.Strategy == StrategyReplay && c.ReplayFraction == 0 {
		return bad("replay_fraction", "strategy replay needs a fraction > 0")
	}
	if !finite(c.EWCLambda) || c.EWCLambda < 0 {
		return bad("ewc_lambda", fmt.Sprintf("%v: must be a finite number ≥ 0", c.EWCLambda))
	}
	if c.Strategy == StrategyEWC && c.EWCLambda == 0 {
		return bad("ewc_lambda", "strategy ewc needs a weight > 0")
	}
	if c.FisherSamples < 0 {
		return bad("fisher_samples", fmt.Sprintf("%d: must be ≥ 0 (0: 64)", c.FisherSamples))
	}
	if !finite(c.LwFLambda) || c.LwFLambda < 0 {
		return bad("lwf_lambda", fmt.Sprintf("%v: must be a finite number ≥ 0 (0: 1)", c.LwFLambda))
	}
	if !finite(c.LwFTemperature) || c.LwFTemperature < 0 {
		return bad("lwf_temperature", fmt.Sprintf("%v: must be a finite number ≥ 0 (0: 2)", c.LwFTemperature))
	}
	for key, set := range map[string]bool{"replay_fraction": c.ReplayFraction != 0, "ewc_lambda": c.EWCLambda != 0,
		"fisher_samples": c.FisherSamples != 0, "lwf_lambda": c.LwFLambda != 0, "lwf_temperature": c.LwFTemperature != 0} {
		owner := map[string]string{"replay_fraction": StrategyReplay, "ewc_lambda": StrategyEWC, "fisher_samples": StrategyEWC,
			"lwf_lambda": StrategyLwF, "lwf_temperature": StrategyLwF}[key]
		if set && owner != c.Strategy {
			return bad(key, fmt.Sprintf("is a setting of strategy %s, and the strategy is %s", owner, c.Strategy))
		}
	}
	return nil
}

// EWC is elastic weight consolidation (Kirkpatrick et al., 2017) over a
// run's trainable tensors: the loss λ/2 Σᵢ Fᵢ (θᵢ − θ*ᵢ)², with θ* the
// tensors' values when the stage starts (the previous stage's result, or
// a new adapter's initialisation) and F the diagonal empirical Fisher of
// the earlier stages' data there. Its Fisher and anchors are the run's
// State, kept in every checkpoint.
type EWC struct {
	Lambda float64
	params nn.Params
	fisher []*tensor.Tensor
	anchor []*tensor.Tensor
}

// NewEWC anchors params at their current values with the given Fisher
// (one tensor per parameter, same shapes; nil: zeros, for a resumed run
// whose checkpoint fills them).
func NewEWC(lambda float64, params nn.Params, fisher []*tensor.Tensor) (*EWC, error) {
	e := &EWC{Lambda: lambda, params: params}
	for i, p := range params {
		if p.Var.Value.DType() != tensor.F32 {
			return nil, fmt.Errorf("ewc: %s is %v, want float32", p.Name, p.Var.Value.DType())
		}
		e.anchor = append(e.anchor, p.Var.Value.Clone())
		f := tensor.New(p.Var.Value.Shape...)
		if fisher != nil {
			if !tensor.SameShape(fisher[i].Shape, f.Shape) {
				return nil, fmt.Errorf("ewc: Fisher of %s has shape %v, the tensor %v", p.Name, fisher[i].Shape, f.Shape)
			}
			copy(f.Data, fisher[i].Data)
		}
		e.fisher = append(e.fisher, f)
	}
	return e, nil
}

// TermLoss implements train.Term: the penalty as one op whose gradient is
// λ F (θ − θ*) for each tensor.
func (e *EWC) TermLoss(p *nn.Pass, _ []data.Example) (*autograd.Var, error) {
	var sum float64
	inputs := make([]*autograd.Var, len(e.params))
	for i, q := range e.params {
		inputs[i] = q.Var
		th, f, a := q.Var.Value.Data, e.fisher[i].Data, e.anchor[i].Data
		for k := range th {
			d := float64(th[k]) - float64(a[k])
			sum += float64(f[k]) * d * d
		}
	}
	out := tensor.FromData([]float32{float32(e.Lambda / 2 * sum)}, 1)
	return p.Tape.Result(out, func(o *autograd.Var) {
		g := float64(o.Grad.Data[0]) * e.Lambda
		for i, q := range e.params {
			if !q.Var.RequiresGrad() {
				continue
			}
			gb, th, f, a := q.Var.GradBuf().Data, q.Var.Value.Data, e.fisher[i].Data, e.anchor[i].Data
			for k := range th {
				gb[k] += float32(g * float64(f[k]) * (float64(th[k]) - float64(a[k])))
			}
		}
	}, inputs...), nil
}

// TrainState implements peft.Stateful: the Fisher and anchors by name.
func (e *EWC) TrainState() peft.State {
	ts := map[string]*tensor.Tensor{}
	for i, p := range e.params {
		ts["ewc.fisher."+p.Name] = e.fisher[i]
		ts["ewc.anchor."+p.Name] = e.anchor[i]
	}
	js, _ := json.Marshal(map[string]float64{"ewc_lambda": e.Lambda})
	return peft.State{Tensors: ts, JSON: js}
}

// RestoreTrainState implements peft.Stateful.
func (e *EWC) RestoreTrainState(s peft.State) error {
	if len(s.Tensors) != 2*len(e.params) {
		return fmt.Errorf("ewc: the checkpoint holds %d state tensors, this run needs %d", len(s.Tensors), 2*len(e.params))
	}
	for i, p := range e.params {
		for _, kv := range []struct {
			name string
			dst  *tensor.Tensor
		}{{"ewc.fisher." + p.Name, e.fisher[i]}, {"ewc.anchor." + p.Name, e.anchor[i]}} {
			t, ok := s.Tensors[kv.name]
			if !ok || !tensor.SameShape(t.Shape, kv.dst.Shape) {
				return fmt.Errorf("ewc: the checkpoint has no tensor %s of shape %v", kv.name, kv.dst.Shape)
			}
			copy(kv.dst.Data, t.Data)
		}
	}
	return nil
}

// Fisher is the diagonal empirical Fisher of params at their current
// values: the mean over examples of each example's squared loss gradient,
// every example alone, under run's objective (its Model and Classify).
// The passes record a tape but are not training passes, so dropout is
// off and the estimate does not depend on a seed. Gradients the params
// held before are cleared.
func Fisher(run *train.Run, params nn.Params, examples []data.Example) ([]*tensor.Tensor, error) {
	fisher := make([]*tensor.Tensor, len(params))
	for i, p := range params {
		fisher[i] = tensor.New(p.Var.Value.Shape...)
		p.Var.ZeroGrad()
	}
	n := 0
	for _, ex := range examples {
		tp := autograd.NewTape()
		loss, err := run.BatchLoss(&nn.Pass{Tape: tp}, []data.Example{ex})
		if err != nil {
			return nil, err
		}
		if loss == nil {
			continue
		}
		tp.Backward(loss)
		n++
		for i, p := range params {
			if p.Var.Grad == nil {
				continue
			}
			f := fisher[i].Data
			for k, g := range p.Var.Grad.Data {
				f[k] += g * g
			}
			p.Var.ZeroGrad()
		}
	}
	if n > 0 {
		for _, f := range fisher {
			for k := range f.Data {
				f.Data[k] /= float32(n)
			}
		}
	}
	return fisher, nil
}

// LwF is learning without forgetting (Li and Hoiem, 2017) for language
// models: every micro-batch adds λ T² KL(teacher ‖ student) over its real
// tokens' next-token distributions, both softened by the temperature T,
// the teacher being the model as the stage found it. The student's logits
// are computed again on the pass (a second forward and backward).
type LwF struct {
	Lambda, Temperature float64
	model               *peft.Model
	// A continued adapter's teacher is its tensors' values at the
	// stage's start, swapped in for the teacher's pass; a new adapter's
	// teacher is the base without it.
	params   nn.Params
	snapshot []*tensor.Tensor
}

// NewLwF makes the term for pm's active adapter; continued says whether
// the adapter carries the previous stage's result (its current values are
// the teacher's) or is new (the teacher is the model without it).
func NewLwF(pm *peft.Model, lambda, temperature float64, continued bool) *LwF {
	l := &LwF{Lambda: lambda, Temperature: temperature, model: pm}
	if continued {
		l.params = train.Trainable(pm.TrainableParams())
		for _, p := range l.params {
			l.snapshot = append(l.snapshot, p.Var.Value.Clone())
		}
	}
	return l
}

// TermLoss implements train.Term.
func (l *LwF) TermLoss(p *nn.Pass, batch []data.Example) (*autograd.Var, error) {
	m := l.model.Base
	ids, _, mask, T := data.Batch(batch, 0)
	in := llama.Input{IDs: ids, Batch: len(batch), T: T, Mask: mask, Segments: data.SegmentIDs(batch, T)}
	teacher, err := l.teacherLogits(in)
	if err != nil {
		return nil, err
	}
	h, err := m.Forward(p, in)
	if err != nil {
		return nil, err
	}
	student := m.Logits(p, h)
	return SoftCrossEntropy(p.Tape, student, teacher, mask, l.Temperature, l.Lambda), nil
}

// teacherLogits runs the teacher without a tape.
func (l *LwF) teacherLogits(in llama.Input) (*tensor.Tensor, error) {
	m := l.model.Base
	pass := &nn.Pass{}
	if l.snapshot == nil {
		pass.Adapters = []string{""}
	} else {
		saved := make([]*tensor.Tensor, len(l.params))
		for i, p := range l.params {
			saved[i] = p.Var.Value
			p.Var.Value = l.snapshot[i]
		}
		defer func() {
			for i, p := range l.params {
				p.Var.Value = saved[i]
			}
		}()
	}
	h, err := m.Forward(pass, in)
	if err != nil {
		return nil, err
	}
	return m.Logits(pass, h).Value, nil
}

// SoftCrossEntropy is λ T² times the mean over the rows with mask true
// (all rows for a nil mask) of KL(softmax(teacher/T) ‖ softmax(student/T)),
// the distillation loss of Hinton et al. (2015). Its gradient with respect
// to a row of student logits is λ T (softmax(student/T) − softmax(teacher/T)) / rows.
func SoftCrossEntropy(tp *autograd.Tape, student *autograd.Var, teacher *tensor.Tensor, mask []bool, temperature, lambda float64) *autograd.Var {
	rows, cols := student.Value.Rows(), student.Value.Cols()
	sv := student.Value.F32()
	tv := teacher.F32()
	n := 0
	for r := 0; r < rows; r++ {
		if mask == nil || mask[r] {
			n++
		}
	}
	invT := 1 / temperature
	q := make([]float64, rows*cols) // the teacher's probabilities
	ps := make([]float64, rows*cols)
	var total float64
	for r := 0; r < rows; r++ {
		if mask != nil && !mask[r] {
			continue
		}
		softmax64(q[r*cols:(r+1)*cols], tv[r*cols:(r+1)*cols], invT)
		lse := softmax64(ps[r*cols:(r+1)*cols], sv[r*cols:(r+1)*cols], invT)
		tl := logSumExp64(tv[r*cols:(r+1)*cols], invT)
		for c := 0; c < cols; c++ {
			qc := q[r*cols+c]
			if qc > 0 {
				logq := float64(tv[r*cols+c])*invT - tl
				logp := float64(sv[r*cols+c])*invT - lse
				total += qc * (logq - logp)
			}
		}
	}
	scale := 0.0
	if n > 0 {
		scale = lambda * temperature * temperature / float64(n)
	}
	out := tensor.FromData([]float32{float32(scale * total)}, 1)
	return tp.Result(out, func(o *autograd.Var) {
		if n == 0 {
			return
		}
		g := student.GradBuf().Data
		k := float64(o.Grad.Data[0]) * scale * invT
		for r := 0; r < rows; r++ {
			if mask != nil && !mask[r] {
				continue
			}
			for c := 0; c < cols; c++ {
				i := r*cols + c
				g[i] += float32(k * (ps[i] - q[i]))
			}
		}
	}, student)
}

// softmax64 writes softmax(x·s) into dst and returns log Σ exp(x·s).
func softmax64(dst []float64, x []float32, s float64) float64 {
	lse := logSumExp64(x, s)
	for i, v := range x {
		dst[i] = math.Exp(float64(v)*s - lse)
	}
	return lse
}

func logSumExp64(x []float32, s float64) float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v)*s)
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v)*s - mx)
	}
	return mx + math.Log(sum)
}
