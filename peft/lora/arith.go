package lora

// Adapter arithmetic: PEFT's add_weighted_adapter with the intended maths
// (METHODS.md §23), not the flaws of the pinned snapshot:
//
//   - the new adapter's scale is 1 (r = lora_alpha = the new rank, and
//     use_rslora off whatever the first adapter says);
//   - linear and cat give exactly Σ w_i·s_i·B_i·A_i: cat by stacking the
//     factors, linear by the thin SVD of that sum at rank min(Σ r_i, out,
//     in) — no cross terms;
//   - the "_svd" types combine ΔW_i = s_i·B_i·A_i with weights w_i (s
//     applied once), then keep the top svd_rank singular triplets;
//   - ties, dare_linear, dare_ties and magnitude_prune combine the factors
//     as PEFT does, A_i with sign(w_i s_i)·√|w_i s_i| and B_i with
//     √|w_i s_i|; they need equal ranks;
//   - DoRA adapters are refused (their magnitudes do not combine), as are
//     adapters of other types and of other base models.

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// WeightedAdapter is one input of AddWeighted: a LoRA adapter's config and
// tensors (by save name) with its weight.
type WeightedAdapter struct {
	Name    string // for errors: the directory
	Cfg     *Config
	Tensors map[string]*tensor.Tensor
	Weight  float64
}

// CombineOptions are add_weighted_adapter's other arguments
// (peft.CombineOptions): Combination is one of Combinations().
type CombineOptions = peft.CombineOptions

// Combine implements peft.Combiner: AddWeighted over LoRA adapters.
func (m *Method) Combine(ins []peft.WeightedAdapter, o peft.CombineOptions) (peft.Config, nn.Params, error) {
	ws := make([]WeightedAdapter, len(ins))
	for i, in := range ins {
		c, ok := in.Method.Config().(*Config)
		if !ok {
			return nil, nil, fmt.Errorf("%s is a %s adapter, %s a LORA one: adapters of different types do not combine", in.Dir, in.Method.Config().Base().PeftType, ins[0].Dir)
		}
		ws[i] = WeightedAdapter{Name: in.Dir, Cfg: c, Tensors: in.Tensors, Weight: in.Weight}
	}
	c, ps, err := AddWeighted(ws, o)
	if err != nil {
		return nil, nil, err
	}
	return c, ps, nil
}

// Combinations lists the combination types.
func Combinations() []string {
	return []string{"linear", "cat", "svd", "ties", "ties_svd", "dare_linear", "dare_ties", "dare_linear_svd", "dare_ties_svd", "magnitude_prune", "magnitude_prune_svd"}
}

// module is one targeted module of one input.
type module struct {
	A, B  *tensor.Tensor // [r, in], [out, r]
	scale float64
}

const (
	suffixA = ".lora_A.weight"
	suffixB = ".lora_B.weight"
)

// modules reads an input's modules by name (model.layers.0.self_attn.q_proj).
func (w WeightedAdapter) modules() (map[string]module, error) {
	c := w.Cfg
	if c.PeftType != PeftType {
		return nil, fmt.Errorf("%s is a %s adapter: only LORA adapters combine (PEFT refuses AdaLoRA too)", w.Name, c.PeftType)
	}
	if c.UseDoRA {
		return nil, fmt.Errorf("%s is a DoRA adapter: its lora_magnitude_vector does not combine linearly (the row norm depends on the combined direction); merge it into the base model instead", w.Name)
	}
	if c.InitLoraWeights.ChangesBase() {
		return nil, fmt.Errorf("%s was initialised with %s and applies to a residual base; save it in its converted (LoRA) form first", w.Name, string(c.InitLoraWeights))
	}
	out := map[string]module{}
	for _, name := range slices.Sorted(maps.Keys(w.Tensors)) { // the same error every run
		a := w.Tensors[name]
		mod, ok := strings.CutSuffix(name, suffixA)
		if !ok {
			if !strings.HasSuffix(name, suffixB) {
				return nil, fmt.Errorf("%s: tensor %s is not a LoRA factor (modules_to_save and lora_bias do not combine)", w.Name, name)
			}
			continue
		}
		b, ok := w.Tensors[mod+suffixB]
		if !ok {
			return nil, fmt.Errorf("%s: %s has no %s", w.Name, name, mod+suffixB)
		}
		if len(a.Shape) != 2 || len(b.Shape) != 2 || a.Shape[0] != b.Shape[1] {
			return nil, fmt.Errorf("%s: %s %v and its lora_B %v are not factors of one rank", w.Name, name, a.Shape, b.Shape)
		}
		mod = strings.TrimPrefix(mod, peft.SavePrefix)
		r, alpha := c.rankAlpha(mod)
		if r != a.Shape[0] {
			return nil, fmt.Errorf("%s: %s has rank %d, its config says %d", w.Name, name, a.Shape[0], r)
		}
		out[mod] = module{A: a, B: b, scale: c.Scale(r, alpha)}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no LoRA factors", w.Name)
	}
	return out, nil
}

// AddWeighted combines LoRA adapters into a new one (its config and
// tensors by save name).
func AddWeighted(ins []WeightedAdapter, o CombineOptions) (*Config, nn.Params, error) {
	if len(ins) == 0 {
		return nil, nil, fmt.Errorf("no adapters to combine")
	}
	kind := o.Combination
	if !slices.Contains(Combinations(), kind) {
		return nil, nil, fmt.Errorf("combination %q: want one of %s", kind, strings.Join(Combinations(), ", "))
	}
	if len(ins) == 1 {
		kind = "linear" // as PEFT: one adapter is only scaled
	}
	if o.MajoritySign == "" {
		o.MajoritySign = string(SignTotal)
	}
	if kind != "linear" && kind != "cat" && kind != "svd" {
		if err := checkDensity(o.Density); err != nil {
			return nil, nil, fmt.Errorf("--density: %w", err)
		}
	}
	mods := make([]map[string]module, len(ins))
	names := map[string]bool{}
	for i, in := range ins {
		if math.IsNaN(in.Weight) || math.IsInf(in.Weight, 0) {
			return nil, nil, fmt.Errorf("%s: weight %v must be a finite number", in.Name, in.Weight)
		}
		if b0, b := ins[0].Cfg.BaseModelNameOrPath, in.Cfg.BaseModelNameOrPath; b0 != "" && b != "" && baseName(b0) != baseName(b) {
			return nil, nil, fmt.Errorf("base_model_name_or_path: %s is for %q, %s for %q: adapters of different bases do not combine", ins[0].Name, b0, in.Name, b)
		}
		m, err := in.modules()
		if err != nil {
			return nil, nil, err
		}
		mods[i] = m
		for k := range m {
			names[k] = true
		}
	}
	order := slices.Sorted(maps.Keys(names))
	// Shapes agree across inputs; factor-space types need one rank.
	maxRank := 0
	for _, name := range order {
		var first *module
		var firstIn string
		for i, m := range mods {
			md, ok := m[name]
			if !ok {
				continue
			}
			maxRank = max(maxRank, md.A.Shape[0])
			if first == nil {
				first, firstIn = &md, ins[i].Name
				continue
			}
			if md.A.Shape[1] != first.A.Shape[1] || md.B.Shape[0] != first.B.Shape[0] {
				return nil, nil, fmt.Errorf("%s: module %s is %d×%d in %s but %d×%d in %s: adapters of different bases do not combine",
					ins[i].Name, name, md.B.Shape[0], md.A.Shape[1], ins[i].Name, first.B.Shape[0], first.A.Shape[1], firstIn)
			}
			if factorSpace(kind) && md.A.Shape[0] != first.A.Shape[0] {
				return nil, nil, fmt.Errorf("combination %s needs equal ranks: module %s has rank %d in %s but %d in %s (use cat, linear or an _svd type)",
					kind, name, first.A.Shape[0], firstIn, md.A.Shape[0], ins[i].Name)
			}
		}
	}
	newRank := maxRank
	switch {
	case kind == "cat" || kind == "linear":
		newRank = 0
		for _, name := range order {
			sum, in, out := 0, 0, 0
			for _, m := range mods {
				if md, ok := m[name]; ok {
					sum += md.A.Shape[0]
					in, out = md.A.Shape[1], md.B.Shape[0]
				}
			}
			if kind == "linear" {
				sum = min(sum, in, out)
			}
			newRank = max(newRank, sum)
		}
	case strings.HasSuffix(kind, "svd") && o.SVDRank > 0:
		newRank = o.SVDRank
	}
	g := tensor.NewRNG(o.Seed)
	var ps nn.Params
	for _, name := range order {
		var present []module
		var w []float64
		for i, m := range mods {
			if md, ok := m[name]; ok {
				present = append(present, md)
				w = append(w, ins[i].Weight)
			}
		}
		A, B, err := combineModule(kind, present, w, newRank, o, g)
		if err != nil {
			return nil, nil, fmt.Errorf("module %s: %w", name, err)
		}
		ps = append(ps,
			nn.Param{Name: peft.SavePrefix + name + suffixA, Var: autograd.Const(A)},
			nn.Param{Name: peft.SavePrefix + name + suffixB, Var: autograd.Const(B)})
	}
	c := *ins[0].Cfg
	c.R, c.LoraAlpha, c.UseRSLoRA = newRank, float64(newRank), false // s = 1
	c.RankPattern, c.AlphaPattern = map[string]int{}, map[string]float64{}
	c.InitLoraWeights = InitDefault
	c.TargetModules = unionTargets(ins, order)
	return &c, ps, nil
}

// baseName reduces base_model_name_or_path to the model's name: a path's
// last element without its extension, in lower case (stories260K,
// ../models/stories260K.bin and hf/stories260K are one model).
func baseName(s string) string {
	s = strings.TrimRight(strings.ReplaceAll(s, "\\", "/"), "/")
	s = s[strings.LastIndex(s, "/")+1:]
	if i := strings.LastIndex(s, "."); i > 0 {
		s = s[:i]
	}
	return strings.ToLower(s)
}

func factorSpace(kind string) bool {
	switch kind {
	case "ties", "dare_linear", "dare_ties", "magnitude_prune":
		return true
	}
	return false
}

// unionTargets is the union of the inputs' target_modules lists when they
// all are lists (PEFT's rule), or else the combined modules' full names.
func unionTargets(ins []WeightedAdapter, modules []string) peft.Modules {
	set := map[string]bool{}
	for _, in := range ins {
		t := in.Cfg.TargetModules
		if t.Names == nil || len(in.Cfg.LayersToTransform) > 0 || in.Cfg.ExcludeModules.IsSet() {
			return peft.ModuleList(modules...)
		}
		for _, n := range t.Names {
			set[n] = true
		}
	}
	return peft.ModuleList(slices.Sorted(maps.Keys(set))...)
}

// combineModule makes one module's A [newRank, in] and B [out, newRank].
func combineModule(kind string, ms []module, w []float64, newRank int, o CombineOptions, g *tensor.RNG) (*tensor.Tensor, *tensor.Tensor, error) {
	in, out := ms[0].A.Shape[1], ms[0].B.Shape[0]
	A, B := tensor.New(newRank, in), tensor.New(out, newRank)
	switch {
	case kind == "cat": // A = [w_i·s_i·A_i], B = [B_i]
		row := 0
		for i, m := range ms {
			r := m.A.Shape[0]
			for q := 0; q < r; q++ {
				for k := 0; k < in; k++ {
					A.Data[(row+q)*in+k] = float32(w[i] * m.scale * float64(m.A.Data[q*in+k]))
				}
				for j := 0; j < out; j++ {
					B.Data[j*newRank+row+q] = m.B.Data[j*r+q]
				}
			}
			row += r
		}
		return A, B, nil
	case factorSpace(kind):
		var as, bs [][]float32
		var ca, cb []float64
		for i, m := range ms {
			ws := w[i] * m.scale
			root := math.Sqrt(math.Abs(ws))
			sign := 1.0
			if ws < 0 {
				sign = -1
			}
			as, bs = append(as, m.A.Data), append(bs, m.B.Data)
			ca, cb = append(ca, sign*root), append(cb, root)
		}
		a, err := Combine(kind, as, ca, o.Density, MajoritySign(o.MajoritySign), g)
		if err != nil {
			return nil, nil, err
		}
		b, err := Combine(kind, bs, cb, o.Density, MajoritySign(o.MajoritySign), g)
		if err != nil {
			return nil, nil, err
		}
		copy(A.Data, a)
		copy(B.Data, b)
		return A, B, nil
	}
	// linear and the svd types: the dense change, then its SVD.
	deltas := make([][]float32, len(ms))
	for i, m := range ms {
		f := &lowrankView{A: m.A, B: m.B, s: m.scale}
		deltas[i] = f.delta()
	}
	combine := strings.TrimSuffix(kind, "_svd")
	if kind == "svd" {
		combine = "linear"
	}
	d, err := Combine(combine, deltas, w, o.Density, MajoritySign(o.MajoritySign), g)
	if err != nil {
		return nil, nil, err
	}
	k := min(newRank, in, out)
	D := mat.NewDense(out, in, nil)
	for i, v := range d {
		D.RawMatrix().Data[i] = float64(v)
	}
	var svd mat.SVD
	if !svd.Factorize(D, mat.SVDThin) {
		return nil, nil, fmt.Errorf("the SVD of the combined change did not converge")
	}
	var U, V mat.Dense
	svd.UTo(&U)
	svd.VTo(&V)
	S := svd.Values(nil)
	for q := 0; q < k; q++ {
		for j := 0; j < out; j++ {
			B.Data[j*newRank+q] = float32(U.At(j, q) * S[q])
		}
		for c := 0; c < in; c++ {
			A.Data[q*in+c] = float32(V.At(c, q))
		}
	}
	if o.SVDClamp > 0 && kind != "linear" {
		clampQuantile(A.Data, B.Data, o.SVDClamp)
	}
	return A, B, nil
}

// clampQuantile clamps both factors to ±(the q-quantile of their entries
// together), as torch.quantile interpolates it.
func clampQuantile(a, b []float32, q float64) {
	all := append(slices.Clone(a), b...)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	pos := q * float64(len(all)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(all)-1)
	v := float64(all[lo]) + (pos-float64(lo))*(float64(all[hi])-float64(all[lo]))
	for _, t := range [][]float32{a, b} {
		for i, x := range t {
			t[i] = float32(math.Max(-v, math.Min(v, float64(x))))
		}
	}
}

// lowrankView is s·B·A of stored factors.
type lowrankView struct {
	A, B *tensor.Tensor
	s    float64
}

func (f *lowrankView) delta() []float32 {
	r, in, out := f.A.Shape[0], f.A.Shape[1], f.B.Shape[0]
	d := make([]float32, out*in)
	for j := 0; j < out; j++ {
		for c := 0; c < in; c++ {
			var s float64
			for q := 0; q < r; q++ {
				s += float64(f.B.Data[j*r+q]) * float64(f.A.Data[q*in+c])
			}
			d[j*in+c] = float32(f.s * s)
		}
	}
	return d
}
