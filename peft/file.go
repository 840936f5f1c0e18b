package peft

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/gopeft/gopeft/internal/atomicfile"
	"github.com/gopeft/gopeft/internal/safefile"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// The files of a PEFT adapter directory.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// SaveAdapter writes an adapter in Hugging Face PEFT's layout. Each file is
// written to a temporary name and renamed.
func (m *Model) SaveAdapter(dir, name string) error {
	a, ok := m.adapters[name]
	if !ok {
		return fmt.Errorf("no adapter %q (have %v)", name, m.order)
	}
	config := a.Method.Config()
	saved, err := savedParams(a)
	if err != nil {
		return err
	}
	if c, ok := a.Method.(Converter); ok {
		cc, ps, converted, err := c.Convert()
		if err != nil {
			return fmt.Errorf("adapter %q: %w", name, err)
		}
		if converted {
			config, saved = cc, append(ps, saved[len(saved)-a.extra:]...)
		}
	}
	var own []*format.Tensor
	if tf, ok := a.Method.(TensorFile); ok {
		if own, err = tf.SaveTensors(); err != nil {
			return fmt.Errorf("adapter %q: %w", a.Name, err)
		}
	}
	return WriteAdapter(dir, config, saved, own...)
}

// WriteAdapter writes a config and tensors (by save name, plus any
// tensors already in file form) as a PEFT adapter directory, each file to
// a temporary name and renamed: what SaveAdapter writes, and what adapter
// arithmetic writes for an adapter made without a model. As PEFT's
// save_pretrained, it writes inference_mode true: a saved adapter is
// loaded for inference unless asked otherwise.
func WriteAdapter(dir string, config Config, saved nn.Params, own ...*format.Tensor) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	bc := config.Base()
	mode := bc.InferenceMode
	bc.InferenceMode = true
	cfg, err := MarshalConfig(config)
	bc.InferenceMode = mode
	if err != nil {
		return err
	}
	ts := append(make([]*format.Tensor, 0, len(saved)+len(own)), own...)
	for _, p := range saved {
		v := p.Var.Value.ToF32()
		ts = append(ts, format.TensorFromF32(p.Name, v.Shape, v.Data))
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	if err := format.WriteSafetensors(filepath.Join(dir, WeightsFile), ts, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ConfigFile), append(cfg, '\n'))
}

// savedParams are the tensors an adapter file holds: the trained ones, or
// what a Saver computes from them.
func savedParams(a *Adapter) (nn.Params, error) {
	if _, ok := a.Method.(TensorFile); ok { // the method writes its own
		return a.Params[len(a.Params)-a.extra:], nil
	}
	if s, ok := a.Method.(Saver); ok {
		ps, err := s.SavedParams()
		if err != nil {
			return nil, fmt.Errorf("adapter %q: %w", a.Name, err)
		}
		return append(ps, a.Params[len(a.Params)-a.extra:]...), nil
	}
	return a.Params, nil
}

// ReadMethod reads an adapter_config.json into the method its peft_type
// names. Keys the method does not know are kept (PEFT versions add keys
// often) and listed by the config's ExtraKeys.
func ReadMethod(dir string) (Method, error) {
	path := filepath.Join(dir, ConfigFile)
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var head struct {
		PeftType string `json:"peft_type"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if head.PeftType == "" {
		return nil, fmt.Errorf("%s: missing required key \"peft_type\"", path)
	}
	reg, err := Lookup(head.PeftType)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if reg.AliasOf != "" {
		return nil, fmt.Errorf("%s: peft_type %q is gopeft's name for a %s setting, not a peft_type PEFT writes: the file should say %q",
			path, head.PeftType, reg.AliasOf, reg.AliasOf)
	}
	method := reg.New()
	if err := DecodeConfig(data, method.Config(), path, false); err != nil {
		return nil, err
	}
	return method, nil
}

// loadingFile is an adapter file's tensor shapes while LoadAdapter
// attaches its method.
type loadingFile struct {
	path   string
	method Method
	shapes map[string][]int
}

// ExpectTensor is for a method's Attach, before it allocates a tensor that
// an adapter file holds under name: while LoadAdapter attaches the method,
// it returns LoadAdapter's own error when the file lacks the tensor or
// holds another shape; otherwise nil. LoadAdapter compares every tensor
// after attaching anyway; asking first refuses a config that disagrees with
// its weights (a corrupt or hostile rank: r = 10⁹ would ask for terabytes)
// before it costs any memory.
func (m *Model) ExpectTensor(name string, shape ...int) error {
	f := m.loading
	if f == nil {
		return nil
	}
	got, ok := f.shapes[name]
	return shapeError(f.path, f.method, name, got, ok, shape, true)
}

// shapeError is LoadAdapter's error for tensor name of the file at path
// (nil when the file holds it with shape want): missing, or of another
// shape, explained by the method where it can (ShapeExplainer). Asked
// before the method is attached, the sizes come from the config and the
// base; after, a difference the method cannot explain is the base's.
func shapeError(path string, method Method, name string, got []int, present bool, want []int, beforeAttach bool) error {
	switch {
	case !present:
		return fmt.Errorf("%s: missing tensor %s (shape %v)", path, name, want)
	case tensor.SameShape(got, want):
		return nil
	}
	if e, ok := method.(ShapeExplainer); ok {
		if why := e.ExplainShape(name, got, want); why != "" {
			return fmt.Errorf("%s: tensor %s has shape %v, but %s: it needs %v", path, name, got, why, want)
		}
	}
	if beforeAttach {
		return fmt.Errorf("%s: tensor %s has shape %v, but the adapter's config and this base model need %v", path, name, got, want)
	}
	return fmt.Errorf("%s: tensor %s has shape %v, this base model needs %v (an adapter for another model?)", path, name, got, want)
}

// LoadingFile reports whether the method being attached will be filled from
// an adapter file (LoadAdapter). A method that trains more than its file
// holds builds only what the file holds then: a prompt encoder's file holds
// the table it computes (PEFT's get_prompt_embedding_to_save), so loading
// builds the table, not an encoder whose size (encoder_hidden_size) nothing
// in the file checks and whose output the loaded table would replace.
func (m *Model) LoadingFile() bool { return m.loading != nil }

// LoadAdapter reads a PEFT adapter directory and attaches it under name.
// An adapter that carries a classification head (a SEQ_CLS adapter's
// base_model.model.score.weight) gives a base without one a head of that
// shape first.
// Every tensor the adapter needs must be in the file with its shape, and the
// file may hold nothing else: a mismatch means an adapter for another base.
func (m *Model) LoadAdapter(dir, name string) (*Adapter, error) {
	method, err := ReadMethod(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, WeightsFile)
	stored, _, err := format.ReadSafetensors(path)
	if err != nil {
		return nil, err
	}
	madeHead, err := m.ensureScoreHead(stored, path)
	if err != nil {
		return nil, err
	}
	if method.Config().Base().TaskType == TaskSeqCls && m.Base.Score == nil {
		return nil, fmt.Errorf("%s: task_type is %s but %s holds no classification head (%s), and the base model has none: the adapter is incomplete",
			dir, TaskSeqCls, path, scoreSaveName)
	}
	dropHead := func() {
		if madeHead { // leave the base as it was
			m.Base.Score = nil
		}
	}
	shapes := make(map[string][]int, len(stored))
	for n, t := range stored {
		shapes[n] = t.Shape
	}
	a, err := func() (*Adapter, error) {
		m.loading = &loadingFile{path: path, method: method, shapes: shapes}
		defer func() { m.loading = nil }() // even if Attach panics
		return m.AddAdapter(name, method)
	}()
	if err != nil {
		dropHead()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	fail := func(err error) (*Adapter, error) {
		m.removeAdapter(a)
		dropHead()
		return nil, err
	}
	if tf, ok := a.Method.(TensorFile); ok {
		if err := tf.LoadTensors(m, a, stored, path); err != nil {
			return fail(err)
		}
	}
	want, err := savedParams(a)
	if err != nil {
		return fail(err)
	}
	for _, p := range want {
		t, ok := stored[p.Name]
		var got []int
		if ok {
			got = t.Shape
		}
		if err := shapeError(path, a.Method, p.Name, got, ok, p.Var.Value.Shape, false); err != nil {
			return fail(err)
		}
		vals, err := t.Float32()
		if err != nil {
			return fail(fmt.Errorf("%s: tensor %s: %w", path, p.Name, err))
		}
		copy(p.Var.Value.Data, vals)
		delete(stored, p.Name)
	}
	if len(stored) > 0 {
		extra := slices.Sorted(maps.Keys(stored))
		more := ""
		if len(extra) > 1 {
			more = fmt.Sprintf(" (and %d more)", len(extra)-1)
		}
		return fail(fmt.Errorf("%s: unexpected tensor %s%s: it matches no module of this base model", path, extra[0], more))
	}
	if s, ok := a.Method.(Saver); ok {
		if err := s.Loaded(); err != nil {
			return fail(fmt.Errorf("%s: %w", dir, err))
		}
	}
	return a, nil
}

// Save writes the active adapter's result to dir: the adapter in PEFT's
// layout, or for a WholeModel method the model directory.
func (m *Model) Save(dir string) error {
	a := m.Active()
	if a == nil {
		return fmt.Errorf("no active adapter to save")
	}
	if SavesModel(a.Method) {
		return a.Method.(WholeModel).SaveModel(m, dir)
	}
	return m.SaveAdapter(dir, a.Name)
}

// ReadAdapter reads an adapter directory without a model: its method (with
// the config) and its tensors by save name, as float32.
func ReadAdapter(dir string) (Method, map[string]*tensor.Tensor, error) {
	method, err := ReadMethod(dir)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, WeightsFile)
	stored, _, err := format.ReadSafetensors(path)
	if err != nil {
		return nil, nil, err
	}
	ts := map[string]*tensor.Tensor{}
	for _, name := range slices.Sorted(maps.Keys(stored)) { // the same error every run
		t := stored[name]
		vals, err := t.Float32()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: tensor %s: %w", path, name, err)
		}
		ts[name] = tensor.FromData(vals, t.Shape...)
	}
	return method, ts, nil
}
