// Package pipeline trains a model through several stages, each a training
// run of its own (train.Run) that starts from the previous stage's result:
// the multi-stage, continual, domain-adaptive and instruction regimes of
// fine-tuning. A full fine-tuning stage's model is the next stage's base;
// a PEFT stage's adapter is continued by a next stage of the same method
// and settings, or merged into the base first (MergeBefore) for a stage of
// another method. Each stage writes its own folder under the output (the
// model or adapter, metrics.jsonl, loss.png, its checkpoints), and
// pipeline.json records the finished stages, so a killed run resumes at
// the stage and step where it stopped.
//
// With a Continual block the pipeline also guards the earlier stages
// against forgetting (replay, EWC, LwF) and evaluates every stage's
// held-out set after every stage (Report: continual.json, .md, .png).
package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/internal/atomicfile"
	"github.com/gopeft/gopeft/internal/safefile"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

// Stage is one training run of a pipeline.
type Stage struct {
	// Name names the stage's folder under the output: letters, digits,
	// '.', '_' and '-', unique in the pipeline.
	Name string
	// NewMethod makes the stage's method, its config read (a new value
	// at each call).
	NewMethod func() (peft.Method, error)
	// MergeBefore merges the previous stage's adapter into the base
	// before this stage attaches its own.
	MergeBefore bool
	Train, Eval []data.Example
	Config      train.Config
	// NumLabels > 0 makes a classification stage: it trains the base's
	// classification head (added with this many labels, seeded by the
	// stage's seed, when the base has none) and scores accuracy.
	NumLabels int
	// Fingerprint is what makes the stage the same stage (method, data,
	// hyper-parameters); a resumed pipeline refuses a changed stage.
	Fingerprint string
	// Recipe, when set, is written to the stage's folder as recipe.yaml.
	Recipe []byte
}

// Pipeline is a sequence of stages over one base model.
type Pipeline struct {
	Base *llama.Model
	// BaseName is the adapters' base_model_name_or_path.
	BaseName  string
	Stages    []Stage
	Continual *Continual // nil: no continual strategy and no matrix
	OutputDir string
	// Resume continues the pipeline in OutputDir (from pipeline.json and
	// the stages' checkpoints).
	Resume bool
	// Out receives a few lines per stage, Progress the progress lines
	// (nil: none).
	Out, Progress io.Writer
	// AfterStep, when set, sees every update's record of every stage
	// trained here.
	AfterStep func(stage int, rec train.Record)
	// AfterStage, when set, is called with the model after each stage
	// (trained or restored), before the next begins.
	AfterStage func(stage int, pm *peft.Model) error
}

// StateFile records a pipeline's progress in its output directory.
const StateFile = "pipeline.json"

// The continual report's files in the output directory.
const (
	ReportFile   = "continual.json"
	ReportMDFile = "continual.md"
	ReportPNG    = "continual.png"
)

// StageResult is one stage's outcome.
type StageResult struct {
	Name, Dir string
	Summary   train.Summary
	// Restored says the stage had finished before this run (a resume)
	// and was rebuilt from its last checkpoint, not trained.
	Restored bool
}

// Result is a finished pipeline.
type Result struct {
	Stages []StageResult
	Report *Report // nil without a Continual block
}

// transition is how a stage starts from the previous stage's result.
type transition int

const (
	fresh     transition = iota // attach a new adapter to the base as it is
	continue_                   // keep training the previous stage's adapter
	merge                       // merge the previous adapter into the base, then attach
)

var stageName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Check validates the pipeline without training: names, how each stage
// continues the one before, classification heads, the continual block.
// Errors are *FieldError naming the stage and the key.
func (p *Pipeline) Check() error {
	_, err := p.plan()
	return err
}

// plan checks the pipeline and says how each stage starts.
func (p *Pipeline) plan() ([]transition, error) {
	if len(p.Stages) == 0 {
		if p.Continual != nil {
			return nil, &FieldError{Key: "continual", Msg: "needs stages: list them under stages:"}
		}
		return nil, &FieldError{Key: "stages", Msg: "the pipeline has no stages"}
	}
	if p.Continual != nil {
		if err := p.Continual.Validate(); err != nil {
			return nil, err
		}
	}
	seen := map[string]int{}
	plan := make([]transition, len(p.Stages))
	methods := make([]peft.Method, len(p.Stages))
	labels := 0
	for i, s := range p.Stages {
		bad := func(key, format string, args ...any) error {
			return &FieldError{Stage: s.Name, Key: key, Msg: fmt.Sprintf(format, args...)}
		}
		if !stageName.MatchString(s.Name) {
			return nil, &FieldError{Stage: s.Name, Key: "name", Msg: fmt.Sprintf("stage %d needs a name of letters, digits, '.', '_' and '-' (it names the stage's folder)", i+1)}
		}
		if j, ok := seen[s.Name]; ok {
			return nil, bad("name", "used twice (stages %d and %d)", j+1, i+1)
		}
		seen[s.Name] = i
		if err := s.Config.Validate(); err != nil {
			var fe *train.FieldError
			if errors.As(err, &fe) {
				return nil, bad("train."+fe.Key, "%v: %s", fe.Value, fe.Allowed)
			}
			return nil, bad("train", "%v", err)
		}
		if len(s.Train) == 0 {
			return nil, bad("data", "no training examples")
		}
		if p.Continual != nil && len(s.Eval) == 0 {
			return nil, bad("data.eval_path", "continual learning evaluates every stage's held-out set: give data.eval_path or data.eval_fraction")
		}
		if s.NumLabels > 0 {
			if labels > 0 && labels != s.NumLabels {
				return nil, bad("task", "has %d classes, and an earlier stage's classification head has %d", s.NumLabels, labels)
			}
			labels = s.NumLabels
		}
		m, err := s.NewMethod()
		if err != nil {
			return nil, bad("method", "%v", err)
		}
		methods[i] = m
		if i == 0 {
			if s.MergeBefore {
				return nil, bad("merge_before", "the first stage has no previous adapter to merge")
			}
			continue
		}
		prev, prevName := methods[i-1], p.Stages[i-1].Name
		pt, mt := prev.Config().Base().PeftType, m.Config().Base().PeftType
		switch {
		case isWholeModel(prev):
			plan[i] = fresh // the model itself is the result: the base as it stands
		case s.MergeBefore:
			if _, ok := prev.(peft.Merger); !ok {
				return nil, bad("merge_before", "stage %q's %s adapter cannot be merged into the base weights", prevName, pt)
			}
			plan[i] = merge
		case pt != mt:
			hint := "set merge_before: true to merge it into the base first"
			if _, ok := prev.(peft.Merger); !ok {
				hint = "and " + pt + " adapters cannot be merged into the base"
			}
			return nil, bad("method", "%s cannot continue stage %q's %s adapter: %s", mt, prevName, pt, hint)
		default:
			a, _ := peft.MarshalConfig(stageConfig(prev, p.Stages[i-1], p.BaseName))
			b, _ := peft.MarshalConfig(stageConfig(m, s, p.BaseName))
			if string(a) != string(b) {
				return nil, bad("peft", "continuing stage %q's %s adapter needs the same peft settings and task (its adapter_config.json is %s, this stage's %s); or set merge_before: true", prevName, pt, a, b)
			}
			plan[i] = continue_
		}
	}
	return plan, nil
}

func isWholeModel(m peft.Method) bool { return peft.SavesModel(m) }

// stageConfig fills in what the pipeline decides of a method's config:
// its seed, base model name and task type.
func stageConfig(m peft.Method, s Stage, baseName string) peft.Config {
	bc := m.Config().Base()
	bc.Seed = s.Config.Seed
	bc.BaseModelNameOrPath = baseName
	if s.NumLabels > 0 {
		bc.TaskType = peft.TaskSeqCls
	}
	return m.Config()
}

// state is pipeline.json.
type state struct {
	Fingerprint string   `json:"fingerprint"`
	Stages      []string `json:"stages"`
	Done        []string `json:"done"`
	Before      []Num    `json:"before,omitempty"`
	Matrix      [][]Num  `json:"matrix,omitempty"`
}

// fingerprint identifies the whole pipeline: every stage's fingerprint,
// name and transition, and the continual block.
func (p *Pipeline) fingerprint() (string, error) {
	type st struct {
		Name, Fingerprint string
		MergeBefore       bool
		NumLabels         int
	}
	v := struct {
		Base      string
		Stages    []st
		Continual *Continual
	}{Base: p.BaseName, Continual: p.Continual}
	for _, s := range p.Stages {
		v.Stages = append(v.Stages, st{s.Name, s.Fingerprint, s.MergeBefore, s.NumLabels})
	}
	return train.Fingerprint(v)
}

// Run trains the stages in order (or, resuming, rebuilds the finished
// ones and continues the rest) and writes the continual report.
func (p *Pipeline) Run(ctx context.Context) (Result, error) {
	var res Result
	plan, err := p.plan()
	if err != nil {
		return res, err
	}
	fp, err := p.fingerprint()
	if err != nil {
		return res, err
	}
	out, prog := orDiscard(p.Out), p.Progress
	st, err := p.openState(fp)
	if err != nil {
		return res, err
	}
	pm := peft.Wrap(p.Base)
	baseName := p.BaseName // an adapter's base: the last FULL stage's model
	if p.Continual != nil && st.Before == nil {
		if st.Before, err = p.evaluateAll(pm); err != nil {
			return res, err
		}
		if err := p.writeState(st); err != nil {
			return res, err
		}
	}
	for i, s := range p.Stages {
		dir := filepath.Join(p.OutputDir, s.Name)
		fmt.Fprintf(out, "== stage %d/%d %s: %s, %d steps on %d sequences\n", i+1, len(p.Stages), s.Name, methodName(s), s.Config.Steps, len(s.Train))
		switch plan[i] {
		case merge:
			if _, err := pm.MergeAndUnload(); err != nil {
				return res, &FieldError{Stage: s.Name, Key: "merge_before", Msg: err.Error()}
			}
			pm = peft.Wrap(p.Base)
		case fresh:
			pm = peft.Wrap(p.Base) // after a FULL stage: the base freezes again
		}
		continued := plan[i] == continue_
		if !continued {
			if err := p.attach(pm, s, baseName); err != nil {
				return res, err
			}
		}
		run := &train.Run{Model: pm, Train: s.Train, Eval: s.Eval, Config: s.Config, OutputDir: filepath.Join(dir, "checkpoints"), ParamLine: out,
			Progress: prog, Classify: s.NumLabels > 0}
		if run.Fingerprint, err = train.Fingerprint(struct {
			Pipeline string
			Stage    int
		}{fp, i}); err != nil {
			return res, err
		}
		if p.AfterStep != nil {
			run.AfterStep = func(rec train.Record) { p.AfterStep(i, rec) }
		}
		sr := StageResult{Name: s.Name, Dir: dir}
		done := i < len(st.Done)
		ckDir, haveCk, err := train.LatestCheckpoint(run.OutputDir)
		if err != nil {
			return res, err
		}
		finished := false
		if haveCk {
			step, _, err := train.PeekCheckpoint(ckDir)
			if err != nil {
				return res, err
			}
			finished = step >= s.Config.Steps
		}
		switch {
		case done || finished:
			if err := run.RestoreFinished(); err != nil {
				return res, fmt.Errorf("stage %q: %w", s.Name, err)
			}
			sr.Restored = true
			fmt.Fprintf(out, "stage %s finished before: restored from %s\n", s.Name, run.OutputDir)
		default:
			run.Resume = haveCk
			if p.Continual != nil && i > 0 {
				if err := p.guard(run, i, continued); err != nil {
					return res, err
				}
			}
			if sr.Summary, err = run.Execute(ctx); err != nil {
				return res, fmt.Errorf("stage %q: %w", s.Name, err)
			}
		}
		if !done {
			if err := p.saveStage(pm, s, dir, run); err != nil {
				return res, fmt.Errorf("stage %q: %w", s.Name, err)
			}
			switch sum := sr.Summary; {
			case !math.IsNaN(sum.FirstEvalAcc):
				fmt.Fprintf(out, "stage %s: eval loss %.4f → %.4f, accuracy %.4f → %.4f\n", s.Name, sum.FirstEval, sum.LastEval, sum.FirstEvalAcc, sum.LastEvalAcc)
			case !math.IsNaN(sum.FirstEval):
				fmt.Fprintf(out, "stage %s: eval loss %.4f → %.4f (perplexity %.2f → %.2f)\n", s.Name, sum.FirstEval, sum.LastEval, math.Exp(sum.FirstEval), math.Exp(sum.LastEval))
			}
			if p.Continual != nil {
				row, err := p.evaluateAll(pm)
				if err != nil {
					return res, err
				}
				st.Matrix = append(st.Matrix, row)
			}
			st.Done = append(st.Done, s.Name)
			if err := p.writeState(st); err != nil {
				return res, err
			}
		}
		res.Stages = append(res.Stages, sr)
		if isWholeModel(pm.Active().Method) {
			baseName = dir
		}
		if p.AfterStage != nil {
			if err := p.AfterStage(i, pm); err != nil {
				return res, err
			}
		}
	}
	if p.Continual != nil {
		rep := p.report(st)
		res.Report = rep
		if err := writeReport(p.OutputDir, rep); err != nil {
			return res, err
		}
		fmt.Fprint(out, "\n"+rep.Markdown())
	}
	return res, nil
}

func methodName(s Stage) string {
	m, err := s.NewMethod()
	if err != nil {
		return "?"
	}
	return m.Config().Base().PeftType
}

// attach adds the stage's new adapter (and, for a classification stage, a
// head when the base has none).
func (p *Pipeline) attach(pm *peft.Model, s Stage, baseName string) error {
	if s.NumLabels > 0 && p.Base.Score == nil {
		if err := p.Base.AddScoreHead(s.NumLabels, s.Config.Seed); err != nil {
			return &FieldError{Stage: s.Name, Key: "task", Msg: err.Error()}
		}
	}
	m, err := s.NewMethod()
	if err != nil {
		return &FieldError{Stage: s.Name, Key: "method", Msg: err.Error()}
	}
	stageConfig(m, s, baseName)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		return &FieldError{Stage: s.Name, Key: "peft", Msg: err.Error()}
	}
	return nil
}

// guard adds the continual strategy to stage i's run.
func (p *Pipeline) guard(run *train.Run, i int, continued bool) error {
	c := p.Continual
	s := p.Stages[i]
	switch c.Strategy {
	case StrategyReplay:
		for _, e := range p.Stages[:i] {
			if e.NumLabels == s.NumLabels { // the same objective
				run.Replay = append(run.Replay, e.Train...)
			}
		}
		if len(run.Replay) > 0 {
			run.ReplaySlots = int(math.Round(c.ReplayFraction * float64(s.Config.BatchSize)))
			run.ReplaySlots = max(1, min(run.ReplaySlots, s.Config.BatchSize-1))
		}
	case StrategyEWC:
		params := train.Trainable(run.Model.TrainableParams())
		var total []*tensor.Tensor
		if !run.Resume { // a resumed run's checkpoint holds them
			n := c.FisherSamples
			if n == 0 {
				n = 64
			}
			for _, e := range p.Stages[:i] {
				fr := &train.Run{Model: run.Model, Config: e.Config, Classify: e.NumLabels > 0}
				order := data.Order(len(e.Train), e.Config.Seed, 0)
				exs := make([]data.Example, 0, n)
				for _, k := range order[:min(n, len(order))] {
					exs = append(exs, e.Train[k])
				}
				f, err := Fisher(fr, params, exs)
				if err != nil {
					return fmt.Errorf("stage %q: the Fisher of stage %q: %w", s.Name, e.Name, err)
				}
				total = addFisher(total, f)
			}
		}
		ewc, err := NewEWC(c.EWCLambda, params, total)
		if err != nil {
			return err
		}
		run.Terms = append(run.Terms, ewc)
		run.State = ewc
	case StrategyLwF:
		lambda, temp := c.LwFLambda, c.LwFTemperature
		if lambda == 0 {
			lambda = 1
		}
		if temp == 0 {
			temp = 2
		}
		run.Terms = append(run.Terms, NewLwF(run.Model, lambda, temp, continued))
	}
	return nil
}

// saveStage writes the stage's result, recipe, metrics and plot to dir.
func (p *Pipeline) saveStage(pm *peft.Model, s Stage, dir string, run *train.Run) error {
	if err := pm.Save(dir); err != nil {
		return err
	}
	if s.Recipe != nil {
		if err := atomicfile.WriteFile(filepath.Join(dir, "recipe.yaml"), s.Recipe); err != nil {
			return err
		}
	}
	for _, f := range []string{"metrics.jsonl", "loss.png"} {
		src := filepath.Join(run.OutputDir, f)
		if _, err := os.Stat(src); err == nil {
			if err := os.Rename(src, filepath.Join(dir, f)); err != nil {
				return err
			}
		}
	}
	return nil
}

// evaluateAll scores every stage's held-out set on the model as it is:
// perplexity for language-model stages, accuracy for classification
// stages (NaN while the base has no head of the stage's size).
func (p *Pipeline) evaluateAll(pm *peft.Model) ([]Num, error) {
	row := make([]Num, len(p.Stages))
	for j, s := range p.Stages {
		classify := s.NumLabels > 0
		if classify && (p.Base.Score == nil || p.Base.NumLabels() != s.NumLabels) {
			row[j] = Num(math.NaN())
			continue
		}
		r := &train.Run{Model: pm, Eval: s.Eval, Config: s.Config, Classify: classify}
		loss, acc, err := r.Evaluate()
		if err != nil {
			return nil, fmt.Errorf("stage %q: evaluating: %w", s.Name, err)
		}
		if classify {
			row[j] = Num(acc)
		} else {
			row[j] = Num(math.Exp(loss))
		}
	}
	return row, nil
}

// report builds the continual report from the recorded evaluations.
func (p *Pipeline) report(st *state) *Report {
	r := &Report{Strategy: p.Continual.Strategy, Before: st.Before, Matrix: st.Matrix}
	for _, s := range p.Stages {
		r.Stages = append(r.Stages, s.Name)
		m := MetricPerplexity
		if s.NumLabels > 0 {
			m = MetricAccuracy
		}
		r.Metrics = append(r.Metrics, m)
	}
	r.Metric = r.Metrics[0]
	for _, m := range r.Metrics {
		if m != r.Metric {
			r.Metric = "mixed"
		}
	}
	r.summarize()
	return r
}

// writeReport writes continual.json, continual.md and continual.png.
func writeReport(dir string, r *Report) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, ReportFile), append(js, '\n')); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, ReportMDFile), []byte(r.Markdown())); err != nil {
		return err
	}
	return r.WritePNG(filepath.Join(dir, ReportPNG))
}

// openState starts pipeline.json, or reads it to resume.
func (p *Pipeline) openState(fp string) (*state, error) {
	path := filepath.Join(p.OutputDir, StateFile)
	b, err := safefile.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		st := &state{Fingerprint: fp, Done: []string{}}
		for _, s := range p.Stages {
			st.Stages = append(st.Stages, s.Name)
		}
		if err := os.MkdirAll(p.OutputDir, 0o755); err != nil {
			return nil, err
		}
		return st, p.writeState(st)
	case err != nil:
		return nil, err
	case !p.Resume:
		return nil, fmt.Errorf("%s holds a pipeline run (%s): resume it, or start in another directory", p.OutputDir, StateFile)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Fingerprint != fp {
		return nil, fmt.Errorf("%s: %w: the recipe's stages, data or settings changed since the run began; resume with the same recipe, or start anew",
			path, train.ErrFingerprint)
	}
	if len(st.Done) > len(p.Stages) || (p.Continual != nil && len(st.Matrix) != len(st.Done)) {
		return nil, fmt.Errorf("%s: records %d finished stages of %d: the file is damaged", path, len(st.Done), len(p.Stages))
	}
	for i, name := range st.Done {
		if name != p.Stages[i].Name {
			return nil, fmt.Errorf("%s: finished stage %d is %q, the recipe's is %q", path, i+1, name, p.Stages[i].Name)
		}
	}
	return &st, nil
}

func (p *Pipeline) writeState(st *state) error {
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(p.OutputDir, StateFile), append(js, '\n'))
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// addFisher adds f into total (nil: a copy of f).
func addFisher(total, f []*tensor.Tensor) []*tensor.Tensor {
	if total == nil {
		return f
	}
	for i := range total {
		for k, v := range f[i].Data {
			total[i].Data[k] += v
		}
	}
	return total
}
