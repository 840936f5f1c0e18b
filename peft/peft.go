package peft

import (
	"fmt"
	"strings"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
)

// DefaultAdapter is the name PEFT gives the first adapter.
const DefaultAdapter = "default"

// SavePrefix starts every tensor name in adapter_model.safetensors: PEFT's
// PeftModel wraps LlamaForCausalLM as base_model.model.
const SavePrefix = "base_model.model."

// Method is one PEFT method's way of changing a model. A method value
// belongs to one adapter: Attach is called once.
type Method interface {
	// Config is the method's configuration.
	Config() Config
	// Attach adds the adapter's hooks to the model's sites (see Model.Sites
	// and Match), each owned by a.Name (nn.OwnedBy{Adapter: a.Name}), and
	// returns its trainable tensors under their PEFT save names (SavePrefix
	// + module name + the method's suffix, e.g. ".lora_A.weight").
	Attach(m *Model, a *Adapter) (nn.Params, error)
}

// Merger is a Method whose change can be folded into the base weights.
type Merger interface {
	Merge(a *Adapter) error
	Unmerge(a *Adapter) error
}

// Adapter is one named set of changes to the base model.
type Adapter struct {
	Name   string
	Method Method
	// Params are the trainable tensors by PEFT save name: the method's,
	// then modules_to_save's copies (the last extra).
	Params nn.Params
	extra  int
	merged bool
}

// SetParams replaces the method's own parameters (a Preparer's or a
// TensorFile's, made after Attach), keeping modules_to_save's copies, and
// makes only the active adapter's trainable.
func (a *Adapter) SetParams(m *Model, ps nn.Params) {
	a.Params = append(ps, a.Params[len(a.Params)-a.extra:]...)
	m.refresh()
}

// Merged reports whether the adapter lives in the base weights now.
func (a *Adapter) Merged() bool { return a.merged }

// Model is a base model with named adapters. One adapter is active: the
// one a pass runs when it names none, and the one that trains. A pass may
// name another adapter for each sequence (nn.Pass.Adapters).
type Model struct {
	Base     *llama.Model
	adapters map[string]*Adapter
	order    []string
	current  string
	disabled bool
	// loading is the adapter file LoadAdapter is attaching (ExpectTensor).
	loading *loadingFile
}

// Wrap starts a PEFT model over a base whose weights all stay frozen.
func Wrap(base *llama.Model) *Model {
	for _, p := range base.Params() {
		p.Var.SetTrainable(false)
	}
	return &Model{Base: base, adapters: map[string]*Adapter{}}
}

// Sites lists the base's hook sites.
func (m *Model) Sites() nn.Sites { return m.Base.Sites() }

// Linears lists the base's Linear modules.
func (m *Model) Linears() []*nn.Linear { return m.Base.Linears() }

// IsOutput reports whether a module is an output layer: the LM head or
// the classification head.
func (m *Model) IsOutput(l *nn.Linear) bool { return m.Base.IsOutput(l) }

// Targets returns the Linear modules a config selects, or an error listing
// what exists when nothing matches. As in PEFT, a module listed in
// modules_to_save is trained whole and never also targeted.
func (m *Model) Targets(c *BaseConfig) ([]*nn.Linear, error) {
	var ls []*nn.Linear
	for _, l := range m.Linears() {
		if !matchesModulesToSave(c.ModulesToSave, l.Name) {
			ls = append(ls, l)
		}
	}
	return Match(c, "Linear", ls, func(l *nn.Linear) (string, bool) { return l.Name, m.IsOutput(l) })
}

// Match returns the sites of one kind (nn.Sites' Norms, Attentions, ...)
// that a config's target_modules, exclude_modules, layers_to_transform and
// layers_pattern select. name gives a site's module name and whether it is
// an output layer (which "all-linear" leaves out). When nothing matches,
// the error names the pattern and lists the model's sites of that kind.
func Match[S any](c *BaseConfig, kind string, sites []S, name func(S) (string, bool)) ([]S, error) {
	if !c.TargetModules.IsSet() || (c.TargetModules.Names != nil && len(c.TargetModules.Names) == 0) {
		return nil, fmt.Errorf("target_modules is empty: name modules (e.g. [\"q_proj\", \"v_proj\"]) or use \"all-linear\"; the model's %s modules are %s",
			kind, siteSummary(sites, name))
	}
	var out []S
	for _, s := range sites {
		if n, isOutput := name(s); c.Selects(n, isOutput) {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("target_modules %s matches no %s module; the model's %s modules are %s",
			targetsString(c.TargetModules), kind, kind, siteSummary(sites, name))
	}
	return out, nil
}

// siteSummary names each distinct module kind once, with an example.
func siteSummary[S any](sites []S, name func(S) (string, bool)) string {
	if len(sites) == 0 {
		return "none"
	}
	seen := map[string]bool{}
	var kinds []string
	for _, s := range sites {
		n, _ := name(s)
		k := n[strings.LastIndex(n, ".")+1:]
		if !seen[k] {
			seen[k] = true
			kinds = append(kinds, k)
		}
	}
	first, _ := name(sites[0])
	return strings.Join(kinds, ", ") + " (e.g. " + first + ")"
}

// AddAdapter attaches a method's adapter under name and makes it active.
func (m *Model) AddAdapter(name string, method Method) (*Adapter, error) {
	if _, ok := m.adapters[name]; ok {
		return nil, fmt.Errorf("adapter %q already exists", name)
	}
	if name == "" {
		return nil, fmt.Errorf("an adapter needs a name")
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
		m.Sites().Remove(name)
		return nil, err
	}
	extra := m.attachModulesToSave(a, ps)
	if err := m.Sites().Check(name); err != nil {
		m.Sites().Remove(name)
		return nil, err
	}
	a.Params, a.extra = append(ps, extra...), len(extra)
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

// refresh makes the active, unmerged adapter the base's default and its
// tensors (alone) trainable.
func (m *Model) refresh() {
	m.Base.Adapter = ""
	for _, name := range m.order {
		a := m.adapters[name]
		live := a == m.Active() && !a.merged
		if live {
			m.Base.Adapter = name
		}
		for _, p := range a.Params {
			p.Var.SetTrainable(live)
		}
	}
}

// TrainableParams are the active adapter's tensors by save name.
func (m *Model) TrainableParams() nn.Params {
	if a := m.Active(); a != nil && !a.merged {
		return a.Params
	}
	return nil
}

// ParamLine is PEFT's print_trainable_parameters line for the model with
// its active adapter. A tensor counts once however many names it has (a
// tied head, full fine-tuning's base weights).
func (m *Model) ParamLine() string {
	ps := m.Base.Params()
	for _, name := range m.order {
		ps = append(ps, m.adapters[name].Params...)
	}
	all, _ := ps.Count()
	trainable, _ := m.TrainableParams().Count()
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
	m.bakeModulesToSave(m.Active())
	for _, name := range m.order {
		m.Sites().Remove(name)
	}
	m.adapters, m.order, m.current = map[string]*Adapter{}, nil, ""
	m.refresh()
	return m.Base, nil
}

// removeAdapter takes a half-loaded adapter back out.
func (m *Model) removeAdapter(a *Adapter) {
	m.Sites().Remove(a.Name)
	delete(m.adapters, a.Name)
	for i, n := range m.order {
		if n == a.Name {
			m.order = append(m.order[:i], m.order[i+1:]...)
			break
		}
	}
	if m.current == a.Name {
		m.current = ""
		if len(m.order) > 0 {
			m.current = m.order[len(m.order)-1]
		}
	}
	m.refresh()
}

// targetsString renders target_modules as it appears in adapter_config.json.
func targetsString(m Modules) string {
	b, err := m.MarshalJSON()
	if err != nil {
		return fmt.Sprint(m)
	}
	return string(b)
}

// DeleteAdapter detaches the named adapter from every site and forgets it
// (PEFT's delete_adapter), so its tensors can be collected. A merged
// adapter must be unmerged first: its change lives in the base weights.
func (m *Model) DeleteAdapter(name string) error {
	a, ok := m.adapters[name]
	if !ok {
		return fmt.Errorf("no adapter %q (have %v)", name, m.order)
	}
	if a.merged {
		return fmt.Errorf("adapter %q is merged into the base weights: unmerge it before deleting it", name)
	}
	m.removeAdapter(a)
	return nil
}
