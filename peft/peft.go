package peft

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
)

// DefaultAdapter is the name PEFT gives the first adapter.
const DefaultAdapter = "default"

// SavePrefix starts every tensor name in adapter_model.safetensors: PEFT's
// PeftModel wraps LlamaForCausalLM as base_model.model.
const SavePrefix = "base_model.model."

// Method is one PEFT method's way of changing a model.
type Method interface {
	// Config is the method's configuration.
	Config() Config
	// Attach adds the adapter to the model's modules and returns its
	// trainable tensors under their PEFT save names (SavePrefix + module
	// name + the method's suffix, e.g. ".lora_A.weight").
	Attach(m *Model, a *Adapter) (nn.Params, error)
}

// Merger is a Method whose change can be folded into the base weights.
type Merger interface {
	Merge(a *Adapter) error
	Unmerge(a *Adapter) error
}

// Detacher removes an adapter's hooks from the model.
type Detacher interface {
	Detach(m *Model, a *Adapter)
}

var registry = map[string]func() Method{}

// Register makes a method loadable by its peft_type. Sub-packages call it
// from init.
func Register(peftType string, newMethod func() Method) { registry[peftType] = newMethod }

// NewMethod returns an empty method for a peft_type (in any case), ready
// to receive its config from a file.
func NewMethod(peftType string) (Method, error) {
	f, ok := registry[strings.ToUpper(peftType)]
	if !ok {
		known := make([]string, 0, len(registry))
		for k := range registry {
			known = append(known, k)
		}
		sort.Strings(known)
		return nil, fmt.Errorf("unsupported peft_type %q (supported: %s)", peftType, strings.Join(known, ", "))
	}
	return f(), nil
}

// Adapter is one named set of changes to the base model.
type Adapter struct {
	Name   string
	Method Method
	// Params are the trainable tensors by PEFT save name.
	Params nn.Params
	active bool
	merged bool
}

// Active reports whether the adapter takes part in the forward pass: it is
// the model's active adapter, adapters are enabled, and it is not merged
// (a merged adapter already lives in the base weights).
func (a *Adapter) Active() bool { return a.active && !a.merged }

// Model is a base model with named adapters, at most one active at a time.
type Model struct {
	Base     *llama.Model
	adapters map[string]*Adapter
	order    []string
	current  string
	disabled bool
	saved    *modulesToSave
	// Step is the training step, for methods whose forward draws random
	// numbers (dropout): masks depend on it, so a resumed run repeats them.
	Step uint64
}

// Wrap starts a PEFT model over a base whose weights all stay frozen.
func Wrap(base *llama.Model) *Model {
	for _, p := range base.Params() {
		p.Var.SetTrainable(false)
	}
	return &Model{Base: base, adapters: map[string]*Adapter{}}
}

// Linears lists the base's Linear modules with whether each is the output
// layer.
func (m *Model) Linears() []*nn.Linear { return m.Base.Linears() }

// IsOutput reports whether a module is an output layer: the LM head or
// the classification head.
func (m *Model) IsOutput(l *nn.Linear) bool { return m.Base.IsOutput(l) }

// Targets returns the Linear modules a config selects, or an error listing
// what exists when nothing matches. As in PEFT, a module listed in
// modules_to_save is trained whole and never also targeted.
func (m *Model) Targets(c *BaseConfig) ([]*nn.Linear, error) {
	if !c.TargetModules.IsSet() || (c.TargetModules.Names != nil && len(c.TargetModules.Names) == 0) {
		return nil, fmt.Errorf("target_modules is empty: name modules (e.g. [\"q_proj\", \"v_proj\"]) or use \"all-linear\"; the model's Linear modules are %s",
			m.moduleSummary())
	}
	var out []*nn.Linear
	for _, l := range m.Linears() {
		if matchesModulesToSave(c.ModulesToSave, l.Name) {
			continue
		}
		if c.Selects(l.Name, m.IsOutput(l)) {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("target_modules %s matches no module; the model's Linear modules are %s",
			targetsString(c.TargetModules), m.moduleSummary())
	}
	return out, nil
}

// moduleSummary names each distinct module kind once, with an example.
func (m *Model) moduleSummary() string {
	seen := map[string]bool{}
	var kinds []string
	for _, l := range m.Linears() {
		k := l.Name[strings.LastIndex(l.Name, ".")+1:]
		if !seen[k] {
			seen[k] = true
			kinds = append(kinds, k)
		}
	}
	return strings.Join(kinds, ", ") + " (e.g. " + m.Linears()[0].Name + ")"
}

// AddAdapter attaches a method's adapter under name and makes it active.
func (m *Model) AddAdapter(name string, method Method) (*Adapter, error) {
	if _, ok := m.adapters[name]; ok {
		return nil, fmt.Errorf("adapter %q already exists", name)
	}
	if err := method.Config().Validate(); err != nil {
		return nil, err
	}
	if err := m.prepareTask(method.Config().Base()); err != nil {
		return nil, err
	}
	a := &Adapter{Name: name, Method: method}
	ps, err := method.Attach(m, a)
	if err != nil {
		return nil, err
	}
	extra, err := m.attachModulesToSave(a)
	if err != nil {
		return nil, err
	}
	a.Params = append(ps, extra...)
	m.adapters[name] = a
	m.order = append(m.order, name)
	if err := m.SetAdapter(name); err != nil {
		return nil, err
	}
	return a, nil
}

// Adapter returns an adapter by name.
func (m *Model) Adapter(name string) (*Adapter, bool) {
	a, ok := m.adapters[name]
	return a, ok
}

// Adapters lists adapter names in the order they were added.
func (m *Model) Adapters() []string { return append([]string(nil), m.order...) }

// Active returns the active adapter, or nil when adapters are disabled or
// none exists.
func (m *Model) Active() *Adapter {
	if m.disabled {
		return nil
	}
	return m.adapters[m.current]
}

// SetAdapter makes name the active adapter; only its tensors are trainable.
func (m *Model) SetAdapter(name string) error {
	if _, ok := m.adapters[name]; !ok {
		return fmt.Errorf("no adapter %q (have %v)", name, m.order)
	}
	m.current = name
	m.refresh()
	return nil
}

// DisableAdapters runs the plain base model until EnableAdapters.
func (m *Model) DisableAdapters() { m.disabled = true; m.refresh() }

// EnableAdapters undoes DisableAdapters.
func (m *Model) EnableAdapters() { m.disabled = false; m.refresh() }

func (m *Model) refresh() {
	for name, a := range m.adapters {
		a.active = !m.disabled && name == m.current
		for _, p := range a.Params {
			p.Var.SetTrainable(a.active && !a.merged)
		}
	}
	m.applyModulesToSave()
}

// TrainableParams are the active adapter's tensors by save name.
func (m *Model) TrainableParams() nn.Params {
	if a := m.Active(); a != nil && !a.merged {
		return a.Params
	}
	return nil
}

// ParamLine is PEFT's print_trainable_parameters line for the model with
// its active adapter.
func (m *Model) ParamLine() string {
	all, _ := m.Base.Params().Count()
	trainable := 0
	for _, p := range m.TrainableParams() {
		trainable += p.Var.Value.Numel()
	}
	for _, name := range m.order {
		for _, p := range m.adapters[name].Params {
			all += p.Var.Value.Numel()
		}
	}
	return nn.TrainableLine(all, trainable)
}

// Merge folds the active adapter into the base weights.
func (m *Model) Merge() error {
	a := m.Active()
	if a == nil {
		return fmt.Errorf("no active adapter to merge")
	}
	mg, ok := a.Method.(Merger)
	if !ok {
		return fmt.Errorf("%s adapters cannot be merged into the base weights", a.Method.Config().Base().PeftType)
	}
	if a.merged {
		return nil
	}
	if err := mg.Merge(a); err != nil {
		return err
	}
	a.merged = true
	m.refresh()
	return nil
}

// Unmerge takes a merged adapter back out of the base weights.
func (m *Model) Unmerge() error {
	a := m.adapters[m.current]
	if a == nil || !a.merged {
		return fmt.Errorf("no merged adapter")
	}
	if err := a.Method.(Merger).Unmerge(a); err != nil {
		return err
	}
	a.merged = false
	m.refresh()
	return nil
}

// MergeAndUnload merges the active adapter, removes every adapter's hooks
// and returns the plain base model, as PEFT's merge_and_unload.
func (m *Model) MergeAndUnload() (*llama.Model, error) {
	if err := m.Merge(); err != nil {
		return nil, err
	}
	m.bakeModulesToSave()
	for _, name := range m.order {
		if d, ok := m.adapters[name].Method.(Detacher); ok {
			d.Detach(m, m.adapters[name])
		}
	}
	m.adapters, m.order, m.current = map[string]*Adapter{}, nil, ""
	return m.Base, nil
}

// targetsString renders target_modules as it appears in adapter_config.json.
func targetsString(m Modules) string {
	b, err := m.MarshalJSON()
	if err != nil {
		return fmt.Sprint(m)
	}
	return string(b)
}
