package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/gopeft/gopeft/eval"
	"github.com/gopeft/gopeft/internal/atomicfile"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/pipeline"
)

// StageRecipe is one entry of a recipe's stages: list. It is kept as the
// YAML it was written in, and read over a copy of the top-level recipe
// (stageRecipe), so that every key a stage leaves out takes the top
// level's value.
type StageRecipe struct{ node yaml.Node }

// UnmarshalYAML keeps the stage's YAML.
func (s *StageRecipe) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a stage is a mapping of keys (name, method, peft, data, train, task, merge_before)", n.Line)
	}
	s.node = *n
	return nil
}

// MarshalYAML writes the stage as it was given.
func (s StageRecipe) MarshalYAML() (any, error) { return &s.node, nil }

// stageKeys are the keys a stage may set.
type stageKeys struct {
	Name        string         `yaml:"name"`
	Method      string         `yaml:"method"`
	MergeBefore bool           `yaml:"merge_before"`
	Task        string         `yaml:"task"`
	Peft        map[string]any `yaml:"peft"`
	Data        yaml.Node      `yaml:"data"`
	Train       yaml.Node      `yaml:"train"`
}

// decodeStrict decodes a node into v, refusing unknown keys.
func decodeStrict(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// stageRecipe is stage i as a recipe of its own: the top level's keys,
// with the stage's over them. A stage of another method than the top
// level's starts from an empty peft block; a stage that names its own data
// (data.path or task) takes none of the top level's data source or eval
// file.
func (r *Recipe) stageRecipe(i int) (*Recipe, bool, error) {
	var k stageKeys
	if err := decodeStrict(&r.Stages[i].node, &k); err != nil {
		return nil, false, fmt.Errorf("stages[%d]: %w", i, err)
	}
	named := func(err error) error { return fmt.Errorf("stage %q: %w", k.Name, err) }
	s := *r
	s.Stages, s.Continual = nil, nil
	s.Peft = maps.Clone(r.Peft)
	if s.Peft == nil {
		s.Peft = map[string]any{}
	}
	s.Output = filepath.Join(r.Output, k.Name)
	s.stage = &stageOrigin{index: i, set: map[string]bool{}}
	for section, n := range map[string]*yaml.Node{"data": &k.Data, "train": &k.Train} {
		if n.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(n.Content); j += 2 {
				s.stage.set[section+"."+n.Content[j].Value] = true
			}
		}
	}
	for key := range k.Peft {
		s.stage.set["peft."+key] = true
	}
	if k.Task != "" {
		s.stage.set["data.task"] = true
	}
	if k.Method != "" {
		reg, err := peft.Lookup(k.Method)
		if err != nil {
			return nil, false, named(fmt.Errorf("method: %w", err))
		}
		if top, err := peft.Lookup(r.Method); err != nil || top.Type != reg.Type {
			s.Peft = map[string]any{}
		}
		s.Method = reg.Type
	}
	maps.Copy(s.Peft, k.Peft)
	if k.Data.Kind != 0 {
		var keys map[string]any
		if err := k.Data.Decode(&keys); err != nil {
			return nil, false, named(fmt.Errorf("data: %w", err))
		}
		if _, ok := keys["path"]; ok {
			s.Data.Task, s.Data.EvalPath = "", ""
		}
		if _, ok := keys["task"]; ok {
			s.Data.Path, s.Data.EvalPath = "", ""
		}
		if err := decodeStrict(&k.Data, &s.Data); err != nil {
			return nil, false, named(fmt.Errorf("data: %w", err))
		}
	}
	if k.Task != "" {
		s.Data.Task, s.Data.Path, s.Data.EvalPath = k.Task, "", ""
	}
	if k.Train.Kind != 0 {
		if err := decodeStrict(&k.Train, &s.Train); err != nil {
			return nil, false, named(fmt.Errorf("train: %w", err))
		}
	}
	if k.Name == "" {
		return nil, false, fmt.Errorf("stages[%d]: name: every stage needs a name (it names the stage's folder)", i)
	}
	return &s, k.MergeBefore, nil
}

// stageName is the name stage i's YAML gives, for errors before it is read.
func (r *Recipe) stageName(i int) string {
	var k struct {
		Name string `yaml:"name"`
	}
	r.Stages[i].node.Decode(&k)
	return k.Name
}

// runPipeline carries out a recipe with stages: each stage's settings
// are checked and its data loaded before anything trains; the pipeline
// package does the rest.
func runPipeline(ctx context.Context, r *Recipe, resume, overwrite bool, out, progress io.Writer) (*pipeline.Result, error) {
	if len(r.Stages) == 0 {
		return nil, fmt.Errorf("continual: needs stages: a continual block applies to a pipeline (list them under stages:)")
	}
	if r.Model == "" || r.Output == "" {
		return nil, fmt.Errorf("a pipeline needs a model and an output directory (model:, output: or --model, --output)")
	}
	if resume && overwrite {
		return nil, fmt.Errorf("give --resume (continue the pipeline in %s) or --overwrite-output-dir (replace it), not both", r.Output)
	}
	recipes := make([]*Recipe, len(r.Stages))
	merge := make([]bool, len(r.Stages))
	for i := range r.Stages {
		s, mb, err := r.stageRecipe(i)
		if err != nil {
			return nil, err
		}
		if s.Data.Path == "" && s.Data.Task == "" {
			return nil, fmt.Errorf("stage %q: data: give data.path or task", r.stageName(i))
		}
		if s.Data.Path != "" && s.Data.Task != "" {
			return nil, fmt.Errorf("stage %q: data: give data.path or task, not both", r.stageName(i))
		}
		if err := s.validate(); err != nil {
			return nil, fmt.Errorf("stage %q: %w", r.stageName(i), err)
		}
		recipes[i], merge[i] = s, mb
	}
	if within(realPath(r.Model), realPath(r.Output)) {
		return nil, fmt.Errorf("--output %s holds the model %s: choose another directory", r.Output, r.Model)
	}
	if err := clearPipelineOutput(r, recipes, resume, overwrite, out); err != nil {
		return nil, err
	}
	base, err := loadModel(r.Model, llama.LoadOptions{BF16: r.BF16}, r.allowNonFinite)
	if err != nil {
		return nil, err
	}
	mf := modelFlags{model: r.Model, tokenizer: r.Tokenizer}
	tok, err := mf.loadTokenizer()
	if err != nil {
		return nil, err
	}
	if err := checkVocab(tok, base); err != nil {
		return nil, err
	}
	p := &pipeline.Pipeline{Base: base, BaseName: r.Model, Continual: r.Continual, OutputDir: r.Output, Resume: resume, Out: out, Progress: progress}
	for i, s := range recipes {
		name := r.stageName(i)
		if err := s.checkContext(base.Config); err != nil {
			return nil, fmt.Errorf("stage %q: %w", name, err)
		}
		st := pipeline.Stage{Name: name, NewMethod: s.newMethod, MergeBefore: merge[i], Config: s.Train}
		source := s.Data.Path
		if s.Data.Task != "" {
			st.Train, st.Eval, source, err = loadTaskData(s, tok)
			if err == nil {
				st.NumLabels, err = eval.NumClasses(s.Data.Task)
			}
		} else {
			st.Train, st.Eval, err = loadData(s, tok)
		}
		if err != nil {
			return nil, fmt.Errorf("stage %q: %w", name, err)
		}
		fmt.Fprintf(out, "stage %s data: %d training and %d eval sequences from %s\n", name, len(st.Train), len(st.Eval), source)
		if st.Fingerprint, err = s.fingerprint(); err != nil {
			return nil, err
		}
		if st.Recipe, err = s.yaml(); err != nil {
			return nil, err
		}
		p.Stages = append(p.Stages, st)
	}
	if err := p.Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(r.Output, 0o755); err != nil {
		return nil, err
	}
	recipe, err := r.yaml()
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(r.Output, "recipe.yaml"), recipe); err != nil {
		return nil, err
	}
	res, err := p.Run(ctx)
	if err != nil {
		return &res, err
	}
	fmt.Fprintf(out, "wrote %s: ", r.Output)
	for i, s := range res.Stages {
		if i > 0 {
			fmt.Fprint(out, ", ")
		}
		fmt.Fprint(out, filepath.Base(s.Dir)+"/")
	}
	if res.Report != nil {
		fmt.Fprintf(out, ", %s, %s, %s", pipeline.ReportFile, pipeline.ReportMDFile, pipeline.ReportPNG)
	}
	fmt.Fprintln(out)
	return &res, nil
}

// clearPipelineOutput refuses a new pipeline in a directory holding
// another run, and with --overwrite-output-dir removes that run's files
// (pipeline.json, the report, the recipe, and the folders of this
// recipe's stages) and nothing else.
func clearPipelineOutput(r *Recipe, stages []*Recipe, resume, overwrite bool, out io.Writer) error {
	state := filepath.Join(r.Output, pipeline.StateFile)
	_, err := os.Stat(state)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	switch {
	case resume && !exists:
		return fmt.Errorf("--resume: %s holds no pipeline run (%s) to continue; start one without --resume", r.Output, pipeline.StateFile)
	case resume:
		return nil
	}
	var found []string
	for _, name := range []string{pipeline.StateFile, pipeline.ReportFile, pipeline.ReportMDFile, pipeline.ReportPNG, "recipe.yaml"} {
		if _, err := os.Lstat(filepath.Join(r.Output, name)); err == nil {
			found = append(found, filepath.Join(r.Output, name))
		}
	}
	for _, s := range stages {
		if _, err := os.Lstat(s.Output); err == nil {
			found = append(found, s.Output)
		}
	}
	if len(found) == 0 {
		return nil
	}
	if !overwrite {
		return fmt.Errorf("--output %s already holds results (%s): continue that run with --resume, or replace them with --overwrite-output-dir",
			r.Output, strings.Join(found, ", "))
	}
	for _, f := range found {
		if err := os.RemoveAll(f); err != nil {
			return fmt.Errorf("--overwrite-output-dir: %w", err)
		}
	}
	fmt.Fprintf(out, "removed the previous results in %s (--overwrite-output-dir)\n", r.Output)
	return nil
}
