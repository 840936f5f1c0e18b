package quant

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// QuantState is the non-tensor part of bitsandbytes' QuantState for a 4-bit
// weight: what QuantState.as_dict(packed=True) serializes as JSON into the
// uint8 tensor weight.quant_state.bitsandbytes__nf4 (or __fp4).
type QuantState struct {
	Type      Type
	BlockSize int
	DType     string // dtype of the original weight: float32, bfloat16 or float16
	Shape     []int
	// Nested is set with double quantization; the other Nested* fields are
	// only meaningful then.
	Nested          bool
	NestedBlockSize int
	NestedDType     string
	NestedOffset    float32
}

// State returns the quant state of q.
func (q *Tensor4) State() QuantState {
	s := QuantState{Type: q.Type, BlockSize: BlockSize, DType: q.DType, Shape: q.Shape}
	if q.Nested != nil {
		s.Nested, s.NestedBlockSize, s.NestedDType, s.NestedOffset = true, q.Nested.BlockSize, "float32", q.Offset
	}
	return s
}

// Key is the state-dict key suffix of the JSON tensor:
// "quant_state.bitsandbytes__nf4" or "quant_state.bitsandbytes__fp4".
func (s *QuantState) Key() string { return "quant_state.bitsandbytes__" + s.Type.String() }

// JSON returns the exact bytes bitsandbytes writes: Python's json.dumps
// with its default separators (", " and ": ") of the keys quant_type,
// blocksize, dtype, shape and, with double quantization, nested_blocksize,
// nested_dtype and nested_offset, in that order (as_dict's insertion order),
// nested_offset being the float32 offset widened to a Python float and
// printed by repr.
func (s *QuantState) JSON() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"quant_type": %q, "blocksize": %d, "dtype": %q, "shape": [`, s.Type.String(), s.BlockSize, s.DType)
	for i, d := range s.Shape {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(d))
	}
	b.WriteString("]")
	if s.Nested {
		fmt.Fprintf(&b, `, "nested_blocksize": %d, "nested_dtype": %q, "nested_offset": %s`,
			s.NestedBlockSize, s.NestedDType, pyFloat(float64(s.NestedOffset)))
	}
	b.WriteString("}")
	return b.Bytes()
}

// pyFloat formats f as Python's repr does (and so json.dumps): the shortest
// digits that read back as f, in positional notation when the decimal
// exponent is in [-4, 16), with ".0" on integers, else as d.ddde±XX;
// non-finite values as json.dumps spells them.
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX
	mant, exps, _ := strings.Cut(e, "e")
	exp, _ := strconv.Atoi(exps)
	sign := ""
	if mant[0] == '-' {
		sign, mant = "-", mant[1:]
	}
	digits := strings.Replace(mant, ".", "", 1)
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		return fmt.Sprintf("%s%se%s%02d", sign, m, es, exp)
	}
	if exp < 0 {
		return sign + "0." + strings.Repeat("0", -exp-1) + digits
	}
	if len(digits) <= exp+1 {
		return sign + digits + strings.Repeat("0", exp+1-len(digits)) + ".0"
	}
	return sign + digits[:exp+1] + "." + digits[exp+1:]
}

// qsKeys are the keys QuantState.from_dict accepts in the JSON.
var qsKeys = map[string]bool{
	"quant_type": true, "blocksize": true, "dtype": true, "shape": true,
	"nested_blocksize": true, "nested_dtype": true, "nested_offset": true,
}

// maxDims and maxDim bound what a quant state may claim, so that a hostile
// file cannot make the loader size an allocation from it.
const (
	maxDims = 8
	maxDim  = 1 << 40
)

// ParseQuantState reads the JSON of a weight.quant_state.bitsandbytes__*
// tensor. name (the tensor's full name) and key (its suffix, whose quant
// type must agree with the JSON's) appear in every error. It accepts what
// bitsandbytes writes and refuses, naming what it found: malformed JSON,
// keys bitsandbytes does not know, a quant_type other than nf4/fp4, a
// blocksize other than 64, a nested_blocksize other than 256, dtypes other
// than float32/bfloat16/float16 (nested: float32), a missing or invalid
// shape, and an incomplete or non-finite nested part.
func ParseQuantState(name string, data []byte) (*QuantState, error) {
	fail := func(format string, a ...any) (*QuantState, error) {
		return nil, fmt.Errorf("quant state %s: %s", name, fmt.Sprintf(format, a...))
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return fail("invalid JSON: %v", err)
	}
	if d.More() {
		return fail("trailing data after the JSON object")
	}
	for k := range m {
		if !qsKeys[k] {
			return fail("unknown key %q", k)
		}
	}
	str := func(k string) (string, bool) { s, ok := m[k].(string); return s, ok }
	integer := func(k string) (int64, bool) {
		n, ok := m[k].(json.Number)
		if !ok {
			return 0, false
		}
		v, err := n.Int64()
		return v, err == nil
	}
	var s QuantState
	qt, ok := str("quant_type")
	if !ok {
		return fail("quant_type missing or not a string (found %v)", m["quant_type"])
	}
	t, err := ParseType(qt)
	if err != nil {
		return fail("%v", err)
	}
	s.Type = t
	if i := strings.LastIndex(name, "bitsandbytes__"); i >= 0 && name[i+len("bitsandbytes__"):] != qt {
		return fail("quant_type %q in a tensor named for %q", qt, name[i+len("bitsandbytes__"):])
	}
	bs, ok := integer("blocksize")
	if !ok {
		return fail("blocksize missing or not an integer (found %v)", m["blocksize"])
	}
	if bs != BlockSize {
		return fail("blocksize %d: only %d is supported for 4-bit weights", bs, BlockSize)
	}
	s.BlockSize = int(bs)
	if s.DType, ok = str("dtype"); !ok || !floatDType(s.DType) {
		return fail("dtype %v: want float32, bfloat16 or float16", m["dtype"])
	}
	shape, ok := m["shape"].([]any)
	if !ok {
		return fail("shape missing or not a list (found %v)", m["shape"])
	}
	if len(shape) == 0 || len(shape) > maxDims {
		return fail("shape %v: want 1 to %d dimensions", shape, maxDims)
	}
	total := int64(1)
	for _, v := range shape {
		n, ok := v.(json.Number)
		d, err := n.Int64()
		if !ok || err != nil || d < 0 || d > maxDim {
			return fail("shape %v: dimension %v is not an integer in [0, 2^40]", shape, v)
		}
		if d > 0 && total > maxDim/d {
			return fail("shape %v: more than 2^40 elements", shape)
		}
		total *= d
		s.Shape = append(s.Shape, int(d))
	}
	_, hasBS := m["nested_blocksize"]
	_, hasDT := m["nested_dtype"]
	_, hasOff := m["nested_offset"]
	if hasBS || hasDT || hasOff {
		if !hasBS || !hasDT || !hasOff {
			return fail("incomplete double quantization: needs nested_blocksize, nested_dtype and nested_offset")
		}
		s.Nested = true
		nbs, ok := integer("nested_blocksize")
		if !ok || nbs != NestedBlockSize {
			return fail("nested_blocksize %v: only %d is supported", m["nested_blocksize"], NestedBlockSize)
		}
		s.NestedBlockSize = int(nbs)
		if s.NestedDType, ok = str("nested_dtype"); !ok || s.NestedDType != "float32" {
			return fail("nested_dtype %v: want float32", m["nested_dtype"])
		}
		n, ok := m["nested_offset"].(json.Number)
		f, err := n.Float64()
		if !ok || err != nil || math.IsInf(float64(float32(f)), 0) {
			return fail("nested_offset %v is not a finite float32", m["nested_offset"])
		}
		s.NestedOffset = float32(f) // Python widened a float32; this narrows it back exactly
	}
	return &s, nil
}

func floatDType(s string) bool { return s == "float32" || s == "bfloat16" || s == "float16" }

// Raw is one tensor as a checkpoint stores it: a safetensors dtype name
// ("U8", "F32", "I8"), a shape and the little-endian bytes.
type Raw struct {
	DType string
	Shape []int
	Data  []byte
}

func rawF32(v []float32, shape ...int) Raw {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return Raw{DType: "F32", Shape: shape, Data: b}
}

// f32 decodes an F32 tensor of n elements, naming it in errors.
func (r Raw) f32(name string, n int) ([]float32, error) {
	if err := r.check(name, "F32", n); err != nil {
		return nil, err
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.Data[4*i:]))
	}
	return v, nil
}

// check verifies dtype, element count and byte length.
func (r Raw) check(name, dtype string, n int) error {
	if r.DType != dtype {
		return fmt.Errorf("tensor %s: dtype %s, want %s", name, r.DType, dtype)
	}
	if numel(r.Shape) != n || anyNegative(r.Shape) {
		return fmt.Errorf("tensor %s: shape %v, want %d elements", name, r.Shape, n)
	}
	size := map[string]int{"U8": 1, "I8": 1, "F32": 4}[dtype]
	if len(r.Data) != size*n {
		return fmt.Errorf("tensor %s: %d bytes for %d elements of %s", name, len(r.Data), n, dtype)
	}
	return nil
}

func anyNegative(s []int) bool {
	for _, d := range s {
		if d < 0 {
			return true
		}
	}
	return false
}

// StateDict returns the tensors bitsandbytes' Linear4bit saves for this
// weight, keyed by their names after the module prefix: "weight" (U8
// [(n+1)/2, 1]), "weight.absmax" (F32, or U8 codes with double
// quantization), "weight.quant_map" (F32 [16]), with double quantization
// "weight.nested_absmax" (F32) and "weight.nested_quant_map" (F32 [256]),
// and "weight.quant_state.bitsandbytes__<type>" (U8: the JSON bytes).
func (q *Tensor4) StateDict() map[string]Raw {
	st := q.State()
	code := q.Type.Code()
	sd := map[string]Raw{
		"weight":           {DType: "U8", Shape: []int{len(q.Packed), 1}, Data: q.Packed},
		"weight.quant_map": rawF32(code[:], 16),
	}
	js := st.JSON()
	sd["weight."+st.Key()] = Raw{DType: "U8", Shape: []int{len(js)}, Data: js}
	if q.Nested == nil {
		sd["weight.absmax"] = rawF32(q.Absmax, len(q.Absmax))
		return sd
	}
	sd["weight.absmax"] = Raw{DType: "U8", Shape: []int{len(q.Nested.Codes)}, Data: q.Nested.Codes}
	sd["weight.nested_absmax"] = rawF32(q.Nested.Absmax, len(q.Nested.Absmax))
	sd["weight.nested_quant_map"] = rawF32(q.Nested.Map[:], 256)
	return sd
}

// FromStateDict assembles a Tensor4 from the tensors of one 4-bit weight,
// keyed as StateDict writes them; name is the module (or weight) name put
// in errors. It is bitsandbytes' QuantState.from_dict plus the checks
// from_dict leaves to later failures: exactly one quant_state tensor, its
// JSON valid (ParseQuantState), the packed weight holding (n+1)/2 bytes for
// the n elements of the shape, one absmax per block (U8 codes with double
// quantization, F32 without), one nested absmax per 256 blocks, finite
// scales, and quant_map equal to the type's code book (bitsandbytes
// dequantizes with its own book and ignores the stored one, so a file whose
// book differs was not written by these rules). The stored
// nested_quant_map is used as stored, as bitsandbytes does, and must be
// sorted.
func FromStateDict(name string, sd map[string]Raw) (*Tensor4, error) {
	var stKey string
	for _, k := range slices.Sorted(maps.Keys(sd)) {
		if strings.HasPrefix(k, "weight.quant_state.") {
			if stKey != "" {
				return nil, fmt.Errorf("%s: two quant states, %s and %s", name, stKey, k)
			}
			stKey = k
		}
	}
	if stKey == "" {
		return nil, fmt.Errorf("%s: no weight.quant_state.bitsandbytes__nf4 or __fp4 tensor", name)
	}
	full := name + "." + stKey
	raw := sd[stKey]
	if raw.DType != "U8" {
		return nil, fmt.Errorf("tensor %s: dtype %s, want U8 (JSON bytes)", full, raw.DType)
	}
	suffix := strings.TrimPrefix(stKey, "weight.quant_state.")
	if suffix != "bitsandbytes__nf4" && suffix != "bitsandbytes__fp4" {
		return nil, fmt.Errorf("tensor %s: unknown quant state %q (want bitsandbytes__nf4 or bitsandbytes__fp4)", full, suffix)
	}
	st, err := ParseQuantState(full, raw.Data)
	if err != nil {
		return nil, err
	}
	n := numel(st.Shape)
	blocks := (n + BlockSize - 1) / BlockSize
	get := func(k string) (Raw, error) {
		r, ok := sd[k]
		if !ok {
			return r, fmt.Errorf("%s: missing tensor %s.%s", name, name, k)
		}
		return r, nil
	}
	q := &Tensor4{Type: st.Type, Shape: st.Shape, DType: st.DType}
	w, err := get("weight")
	if err != nil {
		return nil, err
	}
	if err := w.check(name+".weight", "U8", (n+1)/2); err != nil {
		return nil, fmt.Errorf("%w (quant state shape %v)", err, st.Shape)
	}
	q.Packed = w.Data
	qm, err := get("weight.quant_map")
	if err != nil {
		return nil, err
	}
	book, err := qm.f32(name+".weight.quant_map", 16)
	if err != nil {
		return nil, err
	}
	want := st.Type.Code()
	for i := range book {
		if book[i] != want[i] {
			return nil, fmt.Errorf("tensor %s.weight.quant_map: entry %d is %g, bitsandbytes' %s book has %g", name, i, book[i], st.Type, want[i])
		}
	}
	am, err := get("weight.absmax")
	if err != nil {
		return nil, err
	}
	if !st.Nested {
		for _, k := range []string{"weight.nested_absmax", "weight.nested_quant_map"} {
			if _, ok := sd[k]; ok {
				return nil, fmt.Errorf("%s: tensor %s.%s present but the quant state has no double quantization", name, name, k)
			}
		}
		if q.Absmax, err = am.f32(name+".weight.absmax", blocks); err != nil {
			return nil, fmt.Errorf("%w (quant state shape %v)", err, st.Shape)
		}
		if err := finite(name+".weight.absmax", q.Absmax); err != nil {
			return nil, err
		}
		return q, nil
	}
	if err := am.check(name+".weight.absmax", "U8", blocks); err != nil {
		return nil, fmt.Errorf("%w (double quantization of quant state shape %v)", err, st.Shape)
	}
	nb := &Blockwise8{Codes: am.Data, BlockSize: st.NestedBlockSize}
	na, err := get("weight.nested_absmax")
	if err != nil {
		return nil, err
	}
	if nb.Absmax, err = na.f32(name+".weight.nested_absmax", (blocks+NestedBlockSize-1)/NestedBlockSize); err != nil {
		return nil, err
	}
	if err := finite(name+".weight.nested_absmax", nb.Absmax); err != nil {
		return nil, err
	}
	nm, err := get("weight.nested_quant_map")
	if err != nil {
		return nil, err
	}
	m, err := nm.f32(name+".weight.nested_quant_map", 256)
	if err != nil {
		return nil, err
	}
	if err := finite(name+".weight.nested_quant_map", m); err != nil {
		return nil, err
	}
	for i := 1; i < len(m); i++ {
		if m[i] < m[i-1] {
			return nil, fmt.Errorf("tensor %s.weight.nested_quant_map: not sorted at entry %d", name, i)
		}
	}
	copy(nb.Map[:], m)
	q.Nested, q.Offset = nb, st.NestedOffset
	return q, nil
}

func finite(name string, v []float32) error {
	for i, f := range v {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return fmt.Errorf("tensor %s: element %d is %v", name, i, f)
		}
	}
	return nil
}
