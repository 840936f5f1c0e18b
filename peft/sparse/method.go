package sparse

import (
	"fmt"
	"math"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
)

// Config holds the keys every selective method shares.
type Config struct {
	peft.BaseConfig
	// Density is the fraction of the base's parameters that may change.
	Density float64 `json:"density"`
	// ChangedDensity, when set, is the fraction the saved delta changes,
	// which can exceed Density when a method's mask moved while it trained
	// (Fish-Dip keeps what each past mask trained).
	ChangedDensity float64 `json:"changed_density,omitempty"`
}

// NewConfig returns a selective method's config: every Linear but the
// output layers is a candidate.
func NewConfig(peftType string, density float64) Config {
	return Config{BaseConfig: peft.BaseConfig{PeftType: peftType, TaskType: "CAUSAL_LM",
		TargetModules: peft.ModuleRegex("all-linear")}, Density: density}
}

// Validate checks the density.
func (c *Config) Validate() error {
	if !(c.Density > 0 && c.Density <= 1) {
		return &peft.KeyError{Method: c.PeftType, Key: "density", Value: c.Density, Allowed: "must be in (0, 1]"}
	}
	return nil
}

// Selection is what a selective method decides before training: the
// indices to train in each target weight, given at most k of them.
type Selection func(pm *peft.Model, targets []*nn.Linear, k int, obj peft.Objective) ([][]int32, error)

// Method is the part every selective method shares: it attaches nothing
// until Prepare selects entries (or LoadTensors reads them), then trains
// one Delta per changed weight; it merges, saves and loads the sparse
// delta file. A selective method is a Method with its config and its
// Selection.
type Method struct {
	cfg     peft.Config
	sc      *Config
	sel     Selection
	adapter string
	targets []*nn.Linear
	Deltas  []*Delta
}

// NewMethod returns the shared part for a method's config (cfg, whose
// selective keys are sc) and its selection rule.
func NewMethod(cfg peft.Config, sc *Config, sel Selection) *Method {
	return &Method{cfg: cfg, sc: sc, sel: sel}
}

// Config implements peft.Method.
func (m *Method) Config() peft.Config { return m.cfg }

// Attach implements peft.Method: it finds the candidate weights; the
// trained tensors come with Prepare or LoadTensors.
func (m *Method) Attach(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	ts, err := pm.Targets(&m.sc.BaseConfig)
	if err != nil {
		return nil, err
	}
	m.targets, m.adapter = ts, a.Name
	return nil, nil
}

// Targets are the candidate weights' layers.
func (m *Method) Targets() []*nn.Linear { return m.targets }

// Prepare implements peft.Preparer: it selects at most Budget entries
// with the method's rule and attaches a zero delta on them.
func (m *Method) Prepare(pm *peft.Model, a *peft.Adapter, obj peft.Objective) error {
	if len(m.Deltas) > 0 {
		return fmt.Errorf("%s adapter %q already holds its entries (loaded from a file?): train a new one", m.sc.PeftType, a.Name)
	}
	k := Budget(pm, m.sc.Density)
	if k == 0 {
		return &peft.KeyError{Method: m.sc.PeftType, Key: "density", Value: m.sc.Density, Allowed: "selects no entry of this base: raise it"}
	}
	idx, err := m.sel(pm, m.targets, k, obj)
	if err != nil {
		return fmt.Errorf("%s: %w", m.sc.PeftType, err)
	}
	if len(idx) != len(m.targets) {
		return fmt.Errorf("%s: selection covers %d of %d weights", m.sc.PeftType, len(idx), len(m.targets))
	}
	n := 0
	for _, ix := range idx {
		n += len(ix)
	}
	if n > k {
		return fmt.Errorf("%s: selection picked %d entries, the density allows %d", m.sc.PeftType, n, k)
	}
	return m.Build(pm, a, idx, nil)
}

// Build attaches deltas on the target weights for the indices (one sorted
// list per target; empty ones skipped), with values (nil: zeros), and
// makes them the adapter's parameters.
func (m *Method) Build(pm *peft.Model, a *peft.Adapter, idx [][]int32, values [][]float32) error {
	var ps nn.Params
	for t, l := range m.targets {
		if len(idx[t]) == 0 {
			continue
		}
		var v []float32
		if values != nil {
			v = values[t]
		}
		d := NewDelta(a.Name, l, idx[t], v, valuesName(l), true)
		l.Deltas = append(l.Deltas, d)
		m.Deltas = append(m.Deltas, d)
		ps = append(ps, nn.Param{Name: d.Values.Name, Var: d.Values})
	}
	a.SetParams(pm, ps)
	return nil
}

// Changed is the number of entries the adapter may change.
func (m *Method) Changed() int {
	n := 0
	for _, d := range m.Deltas {
		n += len(d.Index)
	}
	return n
}

// Merge implements peft.Merger: θ ← θ + δ at the selected entries.
func (m *Method) Merge(*peft.Adapter) error { m.fold(+1); return nil }

// Unmerge implements peft.Merger.
func (m *Method) Unmerge(*peft.Adapter) error { m.fold(-1); return nil }

func (m *Method) fold(sign float32) {
	for _, d := range m.Deltas {
		d.Fold(sign)
	}
}

// ParamGroups implements peft.ParamGrouper: no weight decay on δ. AdamW's
// decoupled decay would shrink δ toward the base, not θ toward zero as
// decay on the weight does, and FishMask's reference turns decay off.
func (m *Method) ParamGroups() []peft.ParamGroup {
	zero := 0.0
	g := peft.ParamGroup{Name: "sparse delta", LRScale: 1, WeightDecay: &zero}
	for _, d := range m.Deltas {
		g.Params = append(g.Params, d.Values.Name)
	}
	return []peft.ParamGroup{g}
}

// finite reports the first non-finite value.
func finite(v []float32) int {
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return i
		}
	}
	return -1
}
