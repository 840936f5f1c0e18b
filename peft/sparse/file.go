package sparse

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// The sparse delta file. adapter_model.safetensors holds, for each changed
// weight W (Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight):
//
//	base_model.model.W.delta_indices   I64 [k]  flat indices, strictly increasing
//	base_model.model.W.delta_values    F32 [k]  θ − θ₀ at those entries
//	base_model.model.W.delta_shape     I64 [2]  W's shape in the base
//	base_model.model.W.delta_base      I64 [1]  FNV-1a of the base's entries there
//
// and adapter_config.json names the method (peft_type) and its density.
// Reference implementations save whole models (FishMask, child-tuning) or
// θ₀, w and α dense (diff pruning, whose paper describes positions plus
// values without implementing it); this layout is ours. The base hash is
// taken over the entries rounded to bfloat16, so a float32 base and its
// bf16 copy both match, and a different base with the same shapes does not.
const (
	SuffixIndices = ".delta_indices"
	SuffixValues  = ".delta_values"
	SuffixShape   = ".delta_shape"
	SuffixBase    = ".delta_base"
)

func weightName(l *nn.Linear) string { return peft.SavePrefix + l.Name + ".weight" }

func valuesName(l *nn.Linear) string { return weightName(l) + SuffixValues }

// baseHash is FNV-1a over the bf16 bits of the base's entries at idx.
func baseHash(l *nn.Linear, idx []int32) int64 {
	h := fnv.New64a()
	w := l.Weight.Value
	var b [2]byte
	for _, ix := range idx {
		var v kernels.BF16
		if w.Half != nil {
			v = w.Half[ix]
		} else {
			v = kernels.ToBF16(w.Data[ix])
		}
		binary.LittleEndian.PutUint16(b[:], uint16(v))
		h.Write(b[:])
	}
	return int64(h.Sum64())
}

func i64Tensor(name string, vs []int64) *format.Tensor {
	b := make([]byte, 8*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
	}
	return &format.Tensor{Name: name, DType: "I64", Shape: []int{len(vs)}, Data: b}
}

// SaveTensors implements peft.TensorFile. A merged adapter cannot be
// saved: its base hash would be the merged weights'.
func (m *Method) SaveTensors() ([]*format.Tensor, error) {
	var ts []*format.Tensor
	for _, d := range m.Deltas {
		ts = append(ts, DeltaTensors(d.Module, d.Index, d.Values.Value.Data)...)
	}
	return ts, nil
}

// DeltaTensors are one changed weight's four tensors in the file: sorted
// indices, the values there, its shape and the base's hash (the base must
// not hold the change merged).
func DeltaTensors(l *nn.Linear, index []int32, values []float32) []*format.Tensor {
	name := weightName(l)
	idx := make([]int64, len(index))
	for e, ix := range index {
		idx[e] = int64(ix)
	}
	return []*format.Tensor{
		i64Tensor(name+SuffixIndices, idx),
		format.TensorFromF32(name+SuffixValues, []int{len(idx)}, values),
		i64Tensor(name+SuffixShape, []int64{int64(l.Out()), int64(l.In())}),
		i64Tensor(name+SuffixBase, []int64{baseHash(l, index)})}
}

// ints reads an I64 tensor of n values (n < 0: any).
func ints(path, name string, t *format.Tensor, n int) ([]int64, error) {
	if t == nil {
		return nil, fmt.Errorf("%s: missing tensor %s", path, name)
	}
	if t.DType != "I64" || len(t.Shape) != 1 || (n >= 0 && t.Shape[0] != n) || len(t.Data) != 8*t.Shape[0] {
		want := "I64 [k]"
		if n >= 0 {
			want = fmt.Sprintf("I64 [%d]", n)
		}
		return nil, fmt.Errorf("%s: tensor %s is %s %v, want %s", path, name, t.DType, t.Shape, want)
	}
	out := make([]int64, t.Shape[0])
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return out, nil
}

// LoadTensors implements peft.TensorFile: every changed weight in the file
// must be a target module of this base with the recorded shape, its
// indices strictly increasing inside it, and its base entries the ones it
// was trained from. Nothing is attached unless all of it holds.
func (m *Method) LoadTensors(pm *peft.Model, a *peft.Adapter, stored map[string]*format.Tensor, path string) error {
	byName := map[string]int{}
	for t, l := range m.targets {
		byName[weightName(l)] = t
	}
	var names []string
	for name := range stored {
		if w, ok := strings.CutSuffix(name, SuffixIndices); ok {
			names = append(names, w)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return fmt.Errorf("%s: holds no sparse delta (no tensor named *%s): an adapter that changes nothing is not one this method writes", path, SuffixIndices)
	}
	idx := make([][]int32, len(m.targets))
	vals := make([][]float32, len(m.targets))
	for _, w := range names {
		t, ok := byName[w]
		if !ok {
			return fmt.Errorf("%s: %s changes %s, which is not one of the adapter's target modules in this base (target_modules %s)",
				path, w+SuffixIndices, strings.TrimPrefix(w, peft.SavePrefix), targetsText(m.sc))
		}
		l := m.targets[t]
		shape, err := ints(path, w+SuffixShape, stored[w+SuffixShape], 2)
		if err != nil {
			return err
		}
		if shape[0] != int64(l.Out()) || shape[1] != int64(l.In()) {
			return fmt.Errorf("%s: %s was trained on a weight of shape %v, this base's is [%d %d] (an adapter for another model?)",
				path, strings.TrimPrefix(w, peft.SavePrefix), shape, l.Out(), l.In())
		}
		raw, err := ints(path, w+SuffixIndices, stored[w+SuffixIndices], -1)
		if err != nil {
			return err
		}
		numel := int64(l.Out()) * int64(l.In())
		ix := make([]int32, len(raw))
		for e, v := range raw {
			if v < 0 || v >= numel {
				return fmt.Errorf("%s: %s[%d] is %d, outside the tensor's %d entries", path, w+SuffixIndices, e, v, numel)
			}
			if e > 0 && v <= raw[e-1] {
				return fmt.Errorf("%s: %s[%d] is %d after %d: indices must be strictly increasing", path, w+SuffixIndices, e, v, raw[e-1])
			}
			ix[e] = int32(v)
		}
		vt := stored[w+SuffixValues]
		if vt == nil {
			return fmt.Errorf("%s: missing tensor %s", path, w+SuffixValues)
		}
		if len(vt.Shape) != 1 || vt.Shape[0] != len(ix) {
			return fmt.Errorf("%s: tensor %s has shape %v, want [%d] (one value per index)", path, w+SuffixValues, vt.Shape, len(ix))
		}
		v, err := vt.Float32()
		if err != nil {
			return fmt.Errorf("%s: tensor %s: %w", path, w+SuffixValues, err)
		}
		hash, err := ints(path, w+SuffixBase, stored[w+SuffixBase], 1)
		if err != nil {
			return err
		}
		if got := baseHash(l, ix); got != hash[0] {
			return fmt.Errorf("%s: %s: the base's entries at the changed indices differ from those the delta was trained on (base hash %x, file %x): a delta for another base",
				path, strings.TrimPrefix(w, peft.SavePrefix), uint64(got), uint64(hash[0]))
		}
		idx[t], vals[t] = ix, v
		for _, s := range []string{SuffixIndices, SuffixValues, SuffixShape, SuffixBase} {
			delete(stored, w+s)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(stored)) { // the same error every run
		for _, s := range []string{SuffixValues, SuffixShape, SuffixBase} {
			if strings.HasSuffix(name, s) {
				return fmt.Errorf("%s: tensor %s has no %s beside it", path, name, strings.TrimSuffix(name, s)+SuffixIndices)
			}
		}
	}
	if err := m.Build(pm, a, idx, vals); err != nil {
		return err
	}
	if n, all, d := m.Changed(), Budget(pm, 1), max(m.sc.Density, m.sc.ChangedDensity); float64(n) > d*float64(all)+0.5 {
		return fmt.Errorf("%s: the file changes %d entries, more than density %v allows on this base (%d of %d)",
			path, n, d, int(math.Floor(d*float64(all))), all)
	}
	return nil
}

func targetsText(c *Config) string {
	b, _ := c.TargetModules.MarshalJSON()
	return string(b)
}
