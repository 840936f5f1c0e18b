package full

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/sparse"
)

// Head is one attention head: a layer and a query head, counted from 0.
type Head struct{ Layer, Head int }

func (h Head) String() string { return fmt.Sprintf("%d:%d", h.Layer, h.Head) }

// Heads is trainable_heads: "L:H,L:H" or a list of "L:H" strings.
type Heads []Head

// ParseHeads reads "L:H,L:H,...".
func ParseHeads(s string) (Heads, error) {
	var hs Heads
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		h, err := parseHead(part)
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

func parseHead(s string) (Head, error) {
	l, h, ok := strings.Cut(strings.TrimSpace(s), ":")
	li, err1 := strconv.Atoi(strings.TrimSpace(l))
	hi, err2 := strconv.Atoi(strings.TrimSpace(h))
	if !ok || err1 != nil || err2 != nil {
		return Head{}, &peft.KeyError{Method: PeftType, Key: "trainable_heads", Value: strconv.Quote(s), Allowed: "want LAYER:HEAD, e.g. 0:3"}
	}
	return Head{li, hi}, nil
}

// UnmarshalJSON accepts "L:H,..." or ["L:H", ...].
func (hs *Heads) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		v, err := ParseHeads(one)
		*hs = v
		return err
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("trainable_heads: want \"L:H,...\" or a list of \"L:H\", got %s", b)
	}
	*hs = nil
	for _, s := range many {
		h, err := parseHead(s)
		if err != nil {
			return err
		}
		*hs = append(*hs, h)
	}
	return nil
}

// MarshalJSON writes a list of "L:H".
func (hs Heads) MarshalJSON() ([]byte, error) {
	ss := make([]string, len(hs))
	for i, h := range hs {
		ss[i] = h.String()
	}
	return json.Marshal(ss)
}

// span is a half-open range of rows or columns.
type span struct{ lo, hi int }

// choice is what trains in one Linear: all of it, or some rows and columns.
type choice struct {
	whole      bool
	rows, cols []span
}

// attachChosen finds the Linears that train and which entries of each,
// and attaches the shared sparse method over them.
func (m *Method) attachChosen(pm *peft.Model, a *peft.Adapter) (nn.Params, error) {
	c := m.Cfg
	base := pm.Base
	chosen := map[*nn.Linear]*choice{}
	get := func(l *nn.Linear) *choice {
		if chosen[l] == nil {
			chosen[l] = &choice{}
		}
		return chosen[l]
	}
	if c.TrainableModules.IsSet() || len(c.LayersToTransform) > 0 {
		bc := peft.BaseConfig{TargetModules: c.TrainableModules, ExcludeModules: c.ExcludeModules,
			LayersToTransform: c.LayersToTransform, LayersPattern: c.LayersPattern, ModulesToSave: c.ModulesToSave}
		if !bc.TargetModules.IsSet() {
			bc.TargetModules = peft.ModuleRegex("all-linear")
		}
		ls, err := pm.Targets(&bc)
		if err != nil {
			return nil, fmt.Errorf("full: trainable_modules: %s", strings.Replace(err.Error(), "target_modules ", "", 1))
		}
		for _, l := range ls {
			get(l).whole = true
		}
	}
	cfg := &base.Config
	hd, nH, nKV := cfg.HeadSize(), cfg.NumAttentionHeads, cfg.NumKeyValueHeads
	if nKV == 0 {
		nKV = nH
	}
	for _, h := range c.TrainableHeads {
		if h.Layer >= len(base.Layers) || h.Head >= nH {
			return nil, &peft.KeyError{Method: PeftType, Key: "trainable_heads", Value: h.String(),
				Allowed: fmt.Sprintf("this base has %d layers of %d heads", len(base.Layers), nH)}
		}
		b := base.Layers[h.Layer]
		q := span{h.Head * hd, (h.Head + 1) * hd}
		// Query head h reads kv head h/(heads/kv_heads), as the model's
		// attention (and HF's repeat_kv) maps them.
		kv := h.Head / (nH / nKV)
		k := span{kv * hd, (kv + 1) * hd}
		get(b.Q).rows = append(get(b.Q).rows, q)
		get(b.K).rows = append(get(b.K).rows, k)
		get(b.V).rows = append(get(b.V).rows, k)
		get(b.O).cols = append(get(b.O).cols, q)
	}
	var targets []*nn.Linear
	var names []string
	for _, l := range pm.Linears() { // model order
		if chosen[l] == nil {
			continue
		}
		if l == base.LMHead && cfg.TieWordEmbeddings {
			return nil, fmt.Errorf("full: trainable_modules selects %s, which is tied to the input embeddings (tie_word_embeddings): its delta would change both", l.Name)
		}
		targets = append(targets, l)
		names = append(names, l.Name)
	}
	sc := &sparse.Config{BaseConfig: peft.BaseConfig{PeftType: PeftType, TaskType: c.TaskType,
		TargetModules: peft.ModuleList(names...)}, Density: 1}
	sel := func(_ *peft.Model, ts []*nn.Linear, _ int, _ peft.Objective) ([][]int32, error) {
		out := make([][]int32, len(ts))
		for t, l := range ts {
			ch := chosen[l]
			if ch == nil {
				return nil, fmt.Errorf("%s was not chosen", l.Name)
			}
			out[t] = ch.indices(l.Out(), l.In())
		}
		return out, nil
	}
	m.chosen = sparse.NewMethod(c, sc, sel)
	return m.chosen.Attach(pm, a)
}

// indices lists the chosen entries of an [out, in] weight, sorted.
func (ch *choice) indices(out, in int) []int32 {
	rows := make([]bool, out)
	cols := make([]bool, in)
	for _, s := range ch.rows {
		for r := s.lo; r < s.hi; r++ {
			rows[r] = true
		}
	}
	for _, s := range ch.cols {
		for j := s.lo; j < s.hi; j++ {
			cols[j] = true
		}
	}
	var idx []int32
	for r := 0; r < out; r++ {
		for j := 0; j < in; j++ {
			if ch.whole || rows[r] || cols[j] {
				idx = append(idx, int32(r*in+j))
			}
		}
	}
	return slices.Clip(idx)
}
