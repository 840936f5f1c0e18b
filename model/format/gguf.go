package format

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/gopeft/gopeft/internal/safefile"
)

// GGUF layout (versions 2 and 3, little-endian; llama.cpp's gguf.md):
//
//	magic "GGUF", version uint32, tensor_count uint64, kv_count uint64
//	kv_count × (key string, value_type uint32, value)
//	tensor_count × (name string, n_dims uint32, ne uint64[n_dims], ggml_type uint32, offset uint64)
//	padding to general.alignment (default 32), then the data section;
//	each tensor's offset is relative to the data section and aligned.
//
// A string is a uint64 byte length and the bytes (no NUL). An array is an
// element type uint32, a uint64 count and the elements. ne[0] is the
// innermost (contiguous) dimension, so a weight [rows, cols] is stored with
// ne = {cols, rows}.

// GGUFValueType is the type tag of a GGUF metadata value.
type GGUFValueType uint32

// GGUF metadata value types.
const (
	GGUFUint8 GGUFValueType = iota
	GGUFInt8
	GGUFUint16
	GGUFInt16
	GGUFUint32
	GGUFInt32
	GGUFFloat32
	GGUFBool
	GGUFString
	GGUFArray
	GGUFUint64
	GGUFInt64
	GGUFFloat64
)

// ggufFixedSize is the encoded size of the fixed-width value types.
var ggufFixedSize = map[GGUFValueType]int{
	GGUFUint8: 1, GGUFInt8: 1, GGUFUint16: 2, GGUFInt16: 2, GGUFUint32: 4, GGUFInt32: 4,
	GGUFFloat32: 4, GGUFBool: 1, GGUFUint64: 8, GGUFInt64: 8, GGUFFloat64: 8,
}

// GGMLType is a GGML tensor type id (ggml.h enum ggml_type).
type GGMLType uint32

// String returns the type's gguf-py name ("F32", "Q8_0", "Q4_K", ...).
func (t GGMLType) String() string {
	if d, ok := ggmlNames[t]; ok {
		return string(d)
	}
	return fmt.Sprintf("GGML_TYPE_%d", uint32(t))
}

// DType is the storage type under this package's names; "" if unknown.
func (t GGMLType) DType() DType { return ggmlNames[t] }

var ggmlNames = func() map[GGMLType]DType {
	m := make(map[GGMLType]DType)
	for d, info := range dtypes {
		if info.ggml >= 0 {
			m[GGMLType(info.ggml)] = d
		}
	}
	return m
}()

const (
	ggufMagic            = "GGUF"
	ggufDefaultAlignment = 32
	ggufMaxDims          = 4  // GGML_MAX_DIMS
	ggufMaxArrayDepth    = 16 // nesting limit for arrays of arrays
	ggufAlignmentKey     = "general.alignment"
)

// GGUFFile is a parsed GGUF file. Metadata values are Go values of the
// matching type: uint8, int8, uint16, int16, uint32, int32, float32, bool,
// string, uint64, int64, float64, a slice of one of those for an array
// ([]uint8, []string, ...), or []any for an array of arrays.
type GGUFFile struct {
	Name      string // the path or name it was parsed from, for messages
	Version   uint32
	Alignment int
	Keys      []string // metadata keys in file order
	Metadata  map[string]any
	Tensors   []GGUFTensorInfo // in file order

	index map[string]int
	data  []byte // the data section
}

// GGUFTensorInfo describes one tensor of a GGUF file.
type GGUFTensorInfo struct {
	Name   string
	Type   GGMLType
	Dims   []uint64 // as stored: ne[0] (contiguous) first
	Offset uint64   // from the start of the data section
	Size   int      // bytes
}

// Shape returns the row-major shape: Dims reversed, so a matrix is
// [rows, cols].
func (ti GGUFTensorInfo) Shape() []int {
	s := make([]int, len(ti.Dims))
	for i, d := range ti.Dims {
		s[len(s)-1-i] = int(d) // checked to fit when parsed
	}
	return s
}

// ReadGGUF reads a GGUF (version 2 or 3) file. Tensor data is kept in memory
// and handed out by [GGUFFile.Tensor] without copying.
func ReadGGUF(path string) (*GGUFFile, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseGGUF(path, data)
}

// ggufReader decodes little-endian values from a byte slice; every read
// checks the remaining length first.
type ggufReader struct {
	name string
	b    []byte
	pos  int
}

func (r *ggufReader) rest() int { return len(r.b) - r.pos }

func (r *ggufReader) take(n int, what string) ([]byte, error) {
	if n < 0 || n > r.rest() {
		return nil, fmt.Errorf("%s: truncated at byte %d reading %s (%d bytes needed, %d left)", r.name, r.pos, what, n, r.rest())
	}
	b := r.b[r.pos : r.pos+n : r.pos+n]
	r.pos += n
	return b, nil
}

func (r *ggufReader) u32(what string) (uint32, error) {
	b, err := r.take(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *ggufReader) u64(what string) (uint64, error) {
	b, err := r.take(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

func (r *ggufReader) str(what string) (string, error) { return r.strAt(what, -1) }

// strAt reads a string; a non-negative idx names element idx of what in
// errors (formatted only then: token arrays have 100k+ entries).
func (r *ggufReader) strAt(what string, idx int) (string, error) {
	if r.rest() < 8 {
		return "", fmt.Errorf("%s: truncated at byte %d reading %s", r.name, r.pos, label(what, idx))
	}
	n := binary.LittleEndian.Uint64(r.b[r.pos:])
	if n > uint64(r.rest()-8) {
		return "", fmt.Errorf("%s: %s length %d at byte %d exceeds the %d bytes left", r.name, label(what, idx), n, r.pos, r.rest()-8)
	}
	r.pos += 8
	s := string(r.b[r.pos : r.pos+int(n)])
	r.pos += int(n)
	return s, nil
}

func label(what string, idx int) string {
	if idx < 0 {
		return what
	}
	return fmt.Sprintf("%s[%d]", what, idx)
}

// count reads an element count and checks that count elements of at least
// minSize bytes each fit in what is left, so hostile counts allocate nothing.
func (r *ggufReader) count(what string, minSize int) (int, error) {
	n, err := r.u64(what)
	if err != nil {
		return 0, err
	}
	if n > uint64(r.rest()/minSize) {
		return 0, fmt.Errorf("%s: %s %d at byte %d cannot fit in the %d bytes left", r.name, what, n, r.pos-8, r.rest())
	}
	return int(n), nil
}

// ParseGGUF parses the bytes of a GGUF file; name is used in error messages.
func ParseGGUF(name string, data []byte) (*GGUFFile, error) {
	r := &ggufReader{name: name, b: data}
	magic, err := r.take(4, "magic")
	if err != nil || string(magic) != ggufMagic {
		return nil, fmt.Errorf("%s: not a GGUF file (bad magic)", name)
	}
	version, err := r.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, fmt.Errorf("%s: GGUF version 1 is not supported (only 2 and 3)", name)
	case version&0xffff == 0 && (version>>24 == 2 || version>>24 == 3):
		return nil, fmt.Errorf("%s: big-endian GGUF is not supported", name)
	default:
		return nil, fmt.Errorf("%s: unsupported GGUF version %d", name, version)
	}
	f := &GGUFFile{Name: name, Version: version, Alignment: ggufDefaultAlignment}

	nTensors, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Smallest encodings: a kv is key length + type + 1-byte value; a
	// tensor info is name length + n_dims + type + offset.
	if nKV > uint64(r.rest()/13) || nTensors > uint64(r.rest()/24) || nKV*13+nTensors*24 > uint64(r.rest()) {
		return nil, fmt.Errorf("%s: %d metadata entries and %d tensors cannot fit in %d bytes", name, nKV, nTensors, len(data))
	}

	f.Metadata = make(map[string]any, nKV)
	for i := 0; i < int(nKV); i++ {
		key, err := r.str(fmt.Sprintf("metadata key %d", i))
		if err != nil {
			return nil, err
		}
		if _, dup := f.Metadata[key]; dup {
			return nil, fmt.Errorf("%s: duplicate metadata key %q", name, key)
		}
		typ, err := r.u32("type of " + key)
		if err != nil {
			return nil, err
		}
		v, err := r.value(key, GGUFValueType(typ), 0)
		if err != nil {
			return nil, err
		}
		f.Keys = append(f.Keys, key)
		f.Metadata[key] = v
	}
	if v, ok := f.Metadata[ggufAlignmentKey]; ok {
		a, isU32 := v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 || a > 1<<30 {
			return nil, fmt.Errorf("%s: %s must be a uint32 power of two, got %v (%T)", name, ggufAlignmentKey, v, v)
		}
		f.Alignment = int(a)
	}

	f.index = make(map[string]int, nTensors)
	for i := 0; i < int(nTensors); i++ {
		ti, err := r.tensorInfo(i)
		if err != nil {
			return nil, err
		}
		if _, dup := f.index[ti.Name]; dup {
			return nil, fmt.Errorf("%s: duplicate tensor %q", name, ti.Name)
		}
		f.index[ti.Name] = i
		f.Tensors = append(f.Tensors, ti)
	}

	start := alignUp(r.pos, f.Alignment)
	if start > len(data) {
		start = len(data) // no data section: only valid if every tensor is empty
	}
	f.data = data[start:]
	if err := f.checkTensorData(); err != nil {
		return nil, err
	}
	return f, nil
}

func alignUp(n, a int) int { return (n + a - 1) / a * a }

func (r *ggufReader) tensorInfo(i int) (GGUFTensorInfo, error) {
	var ti GGUFTensorInfo
	var err error
	if ti.Name, err = r.str(fmt.Sprintf("tensor %d name", i)); err != nil {
		return ti, err
	}
	nd, err := r.u32("n_dims of " + ti.Name)
	if err != nil {
		return ti, err
	}
	if nd > ggufMaxDims {
		return ti, fmt.Errorf("%s: tensor %q has %d dimensions (at most %d)", r.name, ti.Name, nd, ggufMaxDims)
	}
	n := 1
	for d := 0; d < int(nd); d++ {
		v, err := r.u64("dims of " + ti.Name)
		if err != nil {
			return ti, err
		}
		ok := v <= math.MaxInt64
		if ok {
			n, ok = mulInt(n, int(v))
		}
		if !ok {
			return ti, fmt.Errorf("%s: tensor %q: dimensions overflow", r.name, ti.Name)
		}
		ti.Dims = append(ti.Dims, v)
	}
	typ, err := r.u32("type of " + ti.Name)
	if err != nil {
		return ti, err
	}
	ti.Type = GGMLType(typ)
	dt := ti.Type.DType()
	if dt == "" {
		return ti, fmt.Errorf("%s: tensor %q: unknown GGML type %d", r.name, ti.Name, typ)
	}
	if be, _ := dt.BlockSize(); len(ti.Dims) > 0 && ti.Dims[0]%uint64(be) != 0 {
		return ti, fmt.Errorf("%s: tensor %q: row length %d is not a multiple of the %s block size %d", r.name, ti.Name, ti.Dims[0], dt, be)
	}
	if ti.Size, err = dt.ByteSize(n); err != nil {
		return ti, fmt.Errorf("%s: tensor %q: %v", r.name, ti.Name, err)
	}
	if ti.Offset, err = r.u64("offset of " + ti.Name); err != nil {
		return ti, err
	}
	return ti, nil
}

// checkTensorData checks that every tensor is aligned, lies inside the data
// section and overlaps no other.
func (f *GGUFFile) checkTensorData() error {
	order := make([]int, len(f.Tensors))
	for i, ti := range f.Tensors {
		order[i] = i
		if ti.Offset%uint64(f.Alignment) != 0 {
			return fmt.Errorf("%s: tensor %q: offset %d is not a multiple of the alignment %d", f.Name, ti.Name, ti.Offset, f.Alignment)
		}
		if ti.Offset > uint64(len(f.data)) || uint64(ti.Size) > uint64(len(f.data))-ti.Offset {
			return fmt.Errorf("%s: tensor %q: %d bytes at offset %d run past the %d-byte data section", f.Name, ti.Name, ti.Size, ti.Offset, len(f.data))
		}
	}
	slices.SortFunc(order, func(a, b int) int { return cmpUint(f.Tensors[a].Offset, f.Tensors[b].Offset) })
	for k := 1; k < len(order); k++ {
		prev, cur := f.Tensors[order[k-1]], f.Tensors[order[k]]
		if prev.Offset+uint64(prev.Size) > cur.Offset {
			return fmt.Errorf("%s: tensor %q overlaps tensor %q", f.Name, cur.Name, prev.Name)
		}
	}
	return nil
}

func (r *ggufReader) value(key string, t GGUFValueType, depth int) (any, error) {
	if size, ok := ggufFixedSize[t]; ok {
		b, err := r.take(size, "value of "+key)
		if err != nil {
			return nil, err
		}
		return decodeFixed(r.name, key, t, b)
	}
	switch t {
	case GGUFString:
		return r.str("value of " + key)
	case GGUFArray:
		if depth >= ggufMaxArrayDepth {
			return nil, fmt.Errorf("%s: %s: arrays nested deeper than %d", r.name, key, ggufMaxArrayDepth)
		}
		et, err := r.u32("array type of " + key)
		if err != nil {
			return nil, err
		}
		return r.array(key, GGUFValueType(et), depth+1)
	}
	return nil, fmt.Errorf("%s: %s: unknown GGUF value type %d", r.name, key, uint32(t))
}

func (r *ggufReader) array(key string, et GGUFValueType, depth int) (any, error) {
	minSize, fixed := ggufFixedSize[et]
	switch {
	case fixed:
	case et == GGUFString:
		minSize = 8
	case et == GGUFArray:
		minSize = 12
	default:
		return nil, fmt.Errorf("%s: %s: unknown GGUF array element type %d", r.name, key, uint32(et))
	}
	n, err := r.count("array length of "+key, minSize)
	if err != nil {
		return nil, err
	}
	if fixed {
		b, _ := r.take(n*minSize, "") // count checked that it fits
		return decodeFixedArray(r.name, key, et, n, b)
	}
	if et == GGUFString {
		out := make([]string, n)
		for i := range out {
			if out[i], err = r.strAt(key, i); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	out := make([]any, n)
	for i := range out {
		if out[i], err = r.value(fmt.Sprintf("%s[%d]", key, i), GGUFArray, depth); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func decodeFixed(name, key string, t GGUFValueType, b []byte) (any, error) {
	le := binary.LittleEndian
	switch t {
	case GGUFUint8:
		return b[0], nil
	case GGUFInt8:
		return int8(b[0]), nil
	case GGUFUint16:
		return le.Uint16(b), nil
	case GGUFInt16:
		return int16(le.Uint16(b)), nil
	case GGUFUint32:
		return le.Uint32(b), nil
	case GGUFInt32:
		return int32(le.Uint32(b)), nil
	case GGUFFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case GGUFBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("%s: %s: bool byte %d is neither 0 nor 1", name, key, b[0])
		}
		return b[0] == 1, nil
	case GGUFUint64:
		return le.Uint64(b), nil
	case GGUFInt64:
		return int64(le.Uint64(b)), nil
	case GGUFFloat64:
		return math.Float64frombits(le.Uint64(b)), nil
	}
	panic("unreachable")
}

func decodeFixedArray(name, key string, t GGUFValueType, n int, b []byte) (any, error) {
	le := binary.LittleEndian
	switch t {
	case GGUFUint8:
		return slices.Clone(b), nil
	case GGUFInt8:
		return fillArray(n, func(i int) int8 { return int8(b[i]) }), nil
	case GGUFUint16:
		return fillArray(n, func(i int) uint16 { return le.Uint16(b[2*i:]) }), nil
	case GGUFInt16:
		return fillArray(n, func(i int) int16 { return int16(le.Uint16(b[2*i:])) }), nil
	case GGUFUint32:
		return fillArray(n, func(i int) uint32 { return le.Uint32(b[4*i:]) }), nil
	case GGUFInt32:
		return fillArray(n, func(i int) int32 { return int32(le.Uint32(b[4*i:])) }), nil
	case GGUFFloat32:
		return fillArray(n, func(i int) float32 { return math.Float32frombits(le.Uint32(b[4*i:])) }), nil
	case GGUFBool:
		for i, v := range b {
			if v > 1 {
				return nil, fmt.Errorf("%s: %s[%d]: bool byte %d is neither 0 nor 1", name, key, i, v)
			}
		}
		return fillArray(n, func(i int) bool { return b[i] == 1 }), nil
	case GGUFUint64:
		return fillArray(n, func(i int) uint64 { return le.Uint64(b[8*i:]) }), nil
	case GGUFInt64:
		return fillArray(n, func(i int) int64 { return int64(le.Uint64(b[8*i:])) }), nil
	case GGUFFloat64:
		return fillArray(n, func(i int) float64 { return math.Float64frombits(le.Uint64(b[8*i:])) }), nil
	}
	panic("unreachable")
}

func fillArray[T any](n int, at func(i int) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = at(i)
	}
	return out
}

// Tensor returns the named tensor with a row-major shape (the GGUF dims
// reversed) and Data aliasing the file buffer. Its DType is the GGML type's
// name; [Tensor.Float32] decodes F32, F16, BF16, Q8_0 and Q4_0 and reports other
// types as unsupported.
func (f *GGUFFile) Tensor(name string) (*Tensor, error) {
	i, ok := f.index[name]
	if !ok {
		return nil, fmt.Errorf("%s: no tensor %q", f.Name, name)
	}
	ti := f.Tensors[i]
	end := ti.Offset + uint64(ti.Size) // checked in bounds when parsed
	return &Tensor{Name: ti.Name, DType: ti.Type.DType(), Shape: ti.Shape(), Data: f.data[ti.Offset:end:end]}, nil
}

// TensorMap returns every tensor under its GGUF name.
func (f *GGUFFile) TensorMap() map[string]*Tensor {
	m := make(map[string]*Tensor, len(f.Tensors))
	for _, ti := range f.Tensors {
		m[ti.Name], _ = f.Tensor(ti.Name)
	}
	return m
}

// MetaString returns a string metadata value.
func (f *GGUFFile) MetaString(key string) (string, error) {
	v, ok := f.Metadata[key]
	if !ok {
		return "", fmt.Errorf("%s: no metadata key %q", f.Name, key)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s: metadata %q is %T, not a string", f.Name, key, v)
	}
	return s, nil
}

// MetaInt returns an integer metadata value of any integer type.
func (f *GGUFFile) MetaInt(key string) (int64, error) {
	v, ok := f.Metadata[key]
	if !ok {
		return 0, fmt.Errorf("%s: no metadata key %q", f.Name, key)
	}
	switch x := v.(type) {
	case uint8:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case uint64:
		if x > math.MaxInt64 {
			return 0, fmt.Errorf("%s: metadata %q = %d overflows int64", f.Name, key, x)
		}
		return int64(x), nil
	}
	return 0, fmt.Errorf("%s: metadata %q is %T, not an integer", f.Name, key, v)
}

// MetaFloat returns a float32 or float64 metadata value as float64.
func (f *GGUFFile) MetaFloat(key string) (float64, error) {
	v, ok := f.Metadata[key]
	if !ok {
		return 0, fmt.Errorf("%s: no metadata key %q", f.Name, key)
	}
	switch x := v.(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	return 0, fmt.Errorf("%s: metadata %q is %T, not a float", f.Name, key, v)
}
