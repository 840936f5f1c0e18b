package peft_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// probe is a method defined here, outside the core packages, with a hook at
// every kind of site: an input scale and an output scale on the targeted
// Linears, a scale and shift after the targeted norms, virtual tokens, a
// key/value prefix in every attention, and a parallel branch beside every
// targeted sublayer. Its parameters are a few numbers each, so a gradient
// check covers all of the sites' plumbing.
type probe struct {
	cfg *probeConfig
	g   *tensor.RNG
	ps  nn.Params
}

type probeConfig struct{ peft.BaseConfig }

func (c *probeConfig) Validate() error { return nil }

func newProbe(targets ...string) *probe {
	return &probe{cfg: &probeConfig{peft.BaseConfig{PeftType: "PROBE", TargetModules: peft.ModuleList(targets...)}}, g: tensor.NewRNG(3)}
}

func (m *probe) Config() peft.Config { return m.cfg }

// param makes a trainable tensor ~ N(mean, std²).
func (m *probe) param(name string, mean, std float32, shape ...int) *autograd.Var {
	v := autograd.Param(peft.SavePrefix+name, tensor.New(shape...).Normal(m.g, mean, std), true)
	m.ps = append(m.ps, nn.Param{Name: v.Name, Var: v})
	return v
}

func (m *probe) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	own := nn.OwnedBy{Adapter: a.Name}
	sites := pm.Sites()
	c := &m.cfg.BaseConfig
	ls, err := pm.Targets(c)
	if err != nil {
		return nil, err
	}
	for _, l := range ls {
		l.Inputs = append(l.Inputs, &inScale{own, m.param(l.Name+".in", 1, 0.1, l.In())})
		l.Deltas = append(l.Deltas, &outScale{own, m.param(l.Name+".out", 1, 0.1, l.Out())})
	}
	norms, err := peft.Match(c, "RMSNorm", sites.Norms, func(n *nn.RMSNorm) (string, bool) { return n.Name, false })
	if err != nil {
		return nil, err
	}
	for _, n := range norms {
		n.Hooks = append(n.Hooks, &ssf{own, m.param(n.Name+".g", 1, 0.1, n.Weight.Value.Shape[0]), m.param(n.Name+".b", 0, 0.1, n.Weight.Value.Shape[0])})
	}
	embs, err := peft.Match(c, "Embedding", sites.Embeddings, func(e *nn.Embedding) (string, bool) { return e.Name, false })
	if err != nil {
		return nil, err
	}
	for _, e := range embs {
		e.Hooks = append(e.Hooks, &virtual{own, m.param("prompt", 0, 1, 2, e.Weight.Value.Cols())})
	}
	kv := pm.Base.Config.KVDim()
	for _, at := range sites.Attentions { // prefixes must cover every layer
		at.Hooks = append(at.Hooks, &prefix{own, m.param(at.Name+".pk", 0, 0.1, 2, kv), m.param(at.Name+".pv", 0, 0.1, 2, kv)})
	}
	subs, err := peft.Match(c, "sublayer", sites.Sublayers, func(s *nn.Sublayer) (string, bool) { return s.Name, false })
	if err != nil {
		return nil, err
	}
	for _, s := range subs {
		d := pm.Base.Config.HiddenSize
		s.Hooks = append(s.Hooks, &parallel{own, m.param(s.Name+".w", 0, 0.1, d), m.param(s.Name+".u", 0, 0.1, d)})
	}
	return m.ps, nil
}

type inScale struct {
	nn.OwnedBy
	s *autograd.Var
}

func (h *inScale) ApplyInput(p *nn.Pass, _ *nn.Linear, x *autograd.Var) *autograd.Var {
	return p.Tape.Mul(x, h.s)
}

type outScale struct {
	nn.OwnedBy
	s *autograd.Var
}

func (h *outScale) Apply(p *nn.Pass, _ *nn.Linear, _, y *autograd.Var) *autograd.Var {
	return p.Tape.Mul(y, h.s)
}

type ssf struct {
	nn.OwnedBy
	g, b *autograd.Var
}

func (h *ssf) ApplyNorm(p *nn.Pass, _ *nn.RMSNorm, y *autograd.Var) *autograd.Var {
	return p.Tape.Add(p.Tape.Mul(y, h.g), h.b)
}

type virtual struct {
	nn.OwnedBy
	e *autograd.Var
}

func (h *virtual) VirtualTokens(*nn.Pass, *nn.Embedding) *autograd.Var { return h.e }

type prefix struct {
	nn.OwnedBy
	k, v *autograd.Var
}

func (h *prefix) PrefixKV(*nn.Pass, *nn.Attention) (k, v *autograd.Var) { return h.k, h.v }

// parallel adds residual⊙w + normed⊙u beside the sublayer.
type parallel struct {
	nn.OwnedBy
	w, u *autograd.Var
}

func (h *parallel) ApplySublayer(p *nn.Pass, _ *nn.Sublayer, residual, normed, out *autograd.Var) *autograd.Var {
	return p.Tape.Add(p.Tape.Add(out, p.Tape.Mul(residual, h.w)), p.Tape.Mul(normed, h.u))
}

// A method defined outside the core attaches at every kind of site, its
// gradients at each pass the finite-difference check in a padded batch
// that mixes its adapter with the plain base, and the sequence without the
// adapter computes exactly as the base alone.
func TestProbeMethodAtEverySite(t *testing.T) {
	base := tinyBase(t)
	in := llama.Input{IDs: []int{1, 4, 7, 3, 1, 9, 5, 0, 0, 1, 2, 6}, Batch: 3, T: 4,
		Mask: []bool{true, true, true, true, false, true, true, true, false, false, true, true}}
	plain, err := base.Forward(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	pm := peft.Wrap(base)
	m := newProbe("q_proj", "down_proj", "input_layernorm", "norm", "embed_tokens", "mlp", "model.layers.0.self_attn")
	a, err := pm.AddAdapter("probe", m)
	if err != nil {
		t.Fatal(err)
	}
	var inputs []*autograd.Var
	for _, p := range a.Params {
		inputs = append(inputs, p.Var)
	}
	if len(inputs) < 20 {
		t.Fatalf("the probe attached %d tensors; some site kinds are missing", len(inputs))
	}
	adapters := []string{"probe", "", "probe"}
	forward := func(tp *autograd.Tape) *autograd.Var {
		h, _, err := base.ForwardVirtual(&nn.Pass{Tape: tp, Training: true, Adapters: adapters}, in)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	worst, err := autograd.GradCheckModel(inputs, forward)
	if err != nil {
		t.Error(err)
	}
	t.Logf("worst error/tolerance %.3f", worst)
	for _, p := range a.Params {
		if p.Var.Grad == nil {
			t.Errorf("%s got no gradient", p.Name)
		}
	}

	// Sequence 1 runs without the adapter: its real rows are the base's.
	h, err := base.Forward(&nn.Pass{Adapters: adapters}, in)
	if err != nil {
		t.Fatal(err)
	}
	all, err := base.Forward(nil, in) // every sequence with the active adapter
	if err != nil {
		t.Fatal(err)
	}
	d := base.Config.HiddenSize
	for r := 0; r < in.T; r++ {
		if !in.Mask[in.T+r] {
			continue
		}
		row := h.Value.Data[(in.T+r)*d : (in.T+r+1)*d]
		for j, v := range row {
			if w := plain.Value.Data[(in.T+r)*d+j]; v != w {
				t.Fatalf("sequence without the adapter, row %d: %v, base alone %v", r, v, w)
			}
			if w := all.Value.Data[(in.T+r)*d+j]; v == w {
				t.Fatalf("sequence 1 row %d is the same with and without the adapter; the test proves nothing", r)
			}
		}
	}
	for r := 0; r < in.T*d; r++ { // sequence 0 as the adapter computes it
		if h.Value.Data[r] != all.Value.Data[r] {
			t.Fatalf("sequence 0, element %d: %v in the mixed batch, %v with the adapter everywhere", r, h.Value.Data[r], all.Value.Data[r])
		}
	}

	// Disabled, the model is the base again; removed, no hook is left.
	pm.DisableAdapters()
	off, err := base.Forward(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range off.Value.Data {
		if v != plain.Value.Data[i] {
			t.Fatalf("disabled adapters: element %d is %v, base %v", i, v, plain.Value.Data[i])
		}
	}
}

// A target pattern that matches no site of a kind names the pattern and
// lists the sites that exist.
func TestMatchNamesTheSites(t *testing.T) {
	pm := peft.Wrap(tinyBase(t))
	_, err := pm.AddAdapter("probe", newProbe("q_proj", "no_such_norm"))
	if err == nil || !strings.Contains(err.Error(), `target_modules ["q_proj","no_such_norm"] matches no RMSNorm module`) ||
		!strings.Contains(err.Error(), "input_layernorm, post_attention_layernorm, norm") {
		t.Errorf("err = %v", err)
	}
	// The failed attach left nothing behind.
	for _, l := range pm.Linears() {
		if len(l.Inputs)+len(l.Deltas) != 0 {
			t.Errorf("%s kept hooks of the failed adapter", l.Name)
		}
	}
}

// A method that puts a hook on a module its modules_to_save also names
// is refused, naming the module and the pair, and leaves nothing behind.
func TestExclusiveHooksRefusePartners(t *testing.T) {
	pm := peft.Wrap(tinyBase(t))
	m := newProbe("lm_head")
	m.cfg.ModulesToSave = []string{"lm_head"}
	_, err := pm.AddAdapter("probe", &headProbe{m})
	if err == nil || !strings.Contains(err.Error(), `lm_head: modules_to_save's trained copy of adapter "probe" cannot share the module with its`) {
		t.Errorf("err = %v", err)
	}
	if l := pm.Base.LMHead; len(l.Inputs)+len(l.Deltas) != 0 {
		t.Errorf("lm_head kept %d hooks of the refused adapter", len(l.Inputs)+len(l.Deltas))
	}
}

// headProbe scales the LM head's output, whatever modules_to_save says.
type headProbe struct{ *probe }

func (m *headProbe) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	l := pm.Base.LMHead
	l.Deltas = append(l.Deltas, &outScale{nn.OwnedBy{Adapter: a.Name}, m.param("lm_head.out", 1, 0.1, l.Out())})
	return m.ps, nil
}

// doubled trains a scale s on q_proj's output but saves 2·s under its own
// name, as prefix tuning trains an MLP and saves its output: SaveAdapter
// writes what SavedParams computes, LoadAdapter fills those tensors and
// Loaded turns them back into what the method computes with.
type doubled struct {
	*probe
	s, saved *autograd.Var
}

func (m *doubled) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	l := pm.Base.Layers[0].Q
	m.s = m.param(l.Name+".s", 1, 0.1, l.Out())
	l.Deltas = append(l.Deltas, &outScale{nn.OwnedBy{Adapter: a.Name}, m.s})
	m.saved = autograd.Param(peft.SavePrefix+l.Name+".s2", tensor.New(l.Out()), false)
	return m.ps, nil
}

func (m *doubled) SavedParams() (nn.Params, error) {
	for i, v := range m.s.Value.Data {
		m.saved.Value.Data[i] = 2 * v
	}
	return nn.Params{{Name: m.saved.Name, Var: m.saved}}, nil
}

func (m *doubled) Loaded() error {
	for i, v := range m.saved.Value.Data {
		m.s.Value.Data[i] = v / 2
	}
	return nil
}

func init() {
	peft.Register(peft.Registration{Type: "PROBE", New: func() peft.Method { return &doubled{probe: newProbe("q_proj")} }})
}

func TestSaverWritesWhatItComputes(t *testing.T) {
	pm := peft.Wrap(tinyBase(t))
	m := &doubled{probe: newProbe("q_proj")}
	if _, err := pm.AddAdapter("default", m); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, "default"); err != nil {
		t.Fatal(err)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[m.saved.Name] == nil {
		t.Fatalf("the file holds %d tensors, want only %s", len(ts), m.saved.Name)
	}
	// A fresh method of the same kind, loaded from the file, computes with
	// the trained values again.
	pm2 := peft.Wrap(tinyBase(t))
	b, err := pm2.LoadAdapter(dir, "default")
	if err != nil {
		t.Fatal(err)
	}
	got := b.Method.(*doubled).s.Value.Data
	for i, v := range m.s.Value.Data {
		if got[i] != v {
			t.Fatalf("s[%d] = %v after save → load, trained %v", i, got[i], v)
		}
	}
}
