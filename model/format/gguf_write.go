package format

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/gopeft/gopeft/internal/atomicfile"
)

// WriteGGUF writes a GGUF version 3 file atomically. See [EncodeGGUF].
func WriteGGUF(path string, metadata map[string]any, tensors []*Tensor) error {
	hdr, align, err := ggufHeader(3, metadata, tensors)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error { return writeGGUFBody(w, hdr, align, tensors) })
}

// EncodeGGUF writes a GGUF file of the given version (2 or 3; they differ
// only in what readers accept) to w. Metadata values must have one of the Go
// types [GGUFFile.Metadata] documents; keys are written sorted.
// "general.alignment", if present, must be a uint32 power of two (default
// 32). Tensors are written in the order given, with row-major shapes (stored
// as reversed GGUF dims) and a DType that GGML knows.
func EncodeGGUF(w io.Writer, version uint32, metadata map[string]any, tensors []*Tensor) error {
	hdr, align, err := ggufHeader(version, metadata, tensors)
	if err != nil {
		return err
	}
	return writeGGUFBody(w, hdr, align, tensors)
}

// ggufHeader encodes everything before the data section, padding included,
// and returns the alignment it used.
func ggufHeader(version uint32, metadata map[string]any, tensors []*Tensor) (hdr []byte, align int, err error) {
	if version != 2 && version != 3 {
		return nil, 0, fmt.Errorf("cannot write GGUF version %d (only 2 and 3)", version)
	}
	align = ggufDefaultAlignment
	if v, ok := metadata[ggufAlignmentKey]; ok {
		a, isU32 := v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 || a > 1<<30 {
			return nil, 0, fmt.Errorf("%s must be a uint32 power of two, got %v (%T)", ggufAlignmentKey, v, v)
		}
		align = int(a)
	}
	le := binary.LittleEndian
	b := []byte(ggufMagic)
	b = le.AppendUint32(b, version)
	b = le.AppendUint64(b, uint64(len(tensors)))
	b = le.AppendUint64(b, uint64(len(metadata)))

	keys := make([]string, 0, len(metadata))
	for k := range metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		t, err := ggufTypeOf(metadata[k])
		if err != nil {
			return nil, 0, fmt.Errorf("metadata %q: %v", k, err)
		}
		b = appendGGUFString(b, k)
		b = le.AppendUint32(b, uint32(t))
		if b, err = appendGGUFValue(b, metadata[k], 0); err != nil {
			return nil, 0, fmt.Errorf("metadata %q: %v", k, err)
		}
	}

	seen := make(map[string]bool, len(tensors))
	var off uint64
	for _, t := range tensors {
		if t == nil {
			return nil, 0, fmt.Errorf("nil tensor")
		}
		if seen[t.Name] {
			return nil, 0, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		info := dtypes[t.DType]
		if !t.DType.Known() || info.ggml < 0 {
			return nil, 0, fmt.Errorf("tensor %q: dtype %q has no GGML type", t.Name, t.DType)
		}
		if err := t.Validate(); err != nil {
			return nil, 0, err
		}
		if len(t.Shape) > ggufMaxDims {
			return nil, 0, fmt.Errorf("tensor %q: %d dimensions (GGUF allows %d)", t.Name, len(t.Shape), ggufMaxDims)
		}
		if len(t.Shape) > 0 && t.Shape[len(t.Shape)-1]%info.blockElems != 0 {
			return nil, 0, fmt.Errorf("tensor %q: rows of %d %s values are not whole blocks", t.Name, t.Shape[len(t.Shape)-1], t.DType)
		}
		b = appendGGUFString(b, t.Name)
		b = le.AppendUint32(b, uint32(len(t.Shape)))
		for i := len(t.Shape) - 1; i >= 0; i-- {
			b = le.AppendUint64(b, uint64(t.Shape[i]))
		}
		b = le.AppendUint32(b, uint32(info.ggml))
		b = le.AppendUint64(b, off)
		off += uint64(alignUp(len(t.Data), align))
	}
	for len(b)%align != 0 {
		b = append(b, 0)
	}
	return b, align, nil
}

func writeGGUFBody(w io.Writer, hdr []byte, align int, tensors []*Tensor) error {
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	var zeros [64]byte
	for _, t := range tensors {
		if _, err := w.Write(t.Data); err != nil {
			return err
		}
		for pad := alignUp(len(t.Data), align) - len(t.Data); pad > 0; {
			n := min(pad, len(zeros))
			if _, err := w.Write(zeros[:n]); err != nil {
				return err
			}
			pad -= n
		}
	}
	return nil
}

func appendGGUFString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// ggufTypeOf maps a Go metadata value to its GGUF type tag.
func ggufTypeOf(v any) (GGUFValueType, error) {
	switch v.(type) {
	case uint8:
		return GGUFUint8, nil
	case int8:
		return GGUFInt8, nil
	case uint16:
		return GGUFUint16, nil
	case int16:
		return GGUFInt16, nil
	case uint32:
		return GGUFUint32, nil
	case int32:
		return GGUFInt32, nil
	case float32:
		return GGUFFloat32, nil
	case bool:
		return GGUFBool, nil
	case string:
		return GGUFString, nil
	case uint64:
		return GGUFUint64, nil
	case int64:
		return GGUFInt64, nil
	case float64:
		return GGUFFloat64, nil
	case []uint8, []int8, []uint16, []int16, []uint32, []int32, []float32, []bool, []string,
		[]uint64, []int64, []float64, []any:
		return GGUFArray, nil
	}
	return 0, fmt.Errorf("unsupported Go type %T for a GGUF value (int and uint must be sized)", v)
}

// ggufElemType is the element type tag of a slice value.
func ggufElemType(v any) GGUFValueType {
	switch v.(type) {
	case []uint8:
		return GGUFUint8
	case []int8:
		return GGUFInt8
	case []uint16:
		return GGUFUint16
	case []int16:
		return GGUFInt16
	case []uint32:
		return GGUFUint32
	case []int32:
		return GGUFInt32
	case []float32:
		return GGUFFloat32
	case []bool:
		return GGUFBool
	case []string:
		return GGUFString
	case []uint64:
		return GGUFUint64
	case []int64:
		return GGUFInt64
	case []float64:
		return GGUFFloat64
	}
	return GGUFArray // []any
}

// appendGGUFValue encodes v without its type tag.
func appendGGUFValue(b []byte, v any, depth int) ([]byte, error) {
	le := binary.LittleEndian
	switch x := v.(type) {
	case uint8:
		return append(b, x), nil
	case int8:
		return append(b, byte(x)), nil
	case uint16:
		return le.AppendUint16(b, x), nil
	case int16:
		return le.AppendUint16(b, uint16(x)), nil
	case uint32:
		return le.AppendUint32(b, x), nil
	case int32:
		return le.AppendUint32(b, uint32(x)), nil
	case float32:
		return le.AppendUint32(b, math.Float32bits(x)), nil
	case bool:
		if x {
			return append(b, 1), nil
		}
		return append(b, 0), nil
	case string:
		return appendGGUFString(b, x), nil
	case uint64:
		return le.AppendUint64(b, x), nil
	case int64:
		return le.AppendUint64(b, uint64(x)), nil
	case float64:
		return le.AppendUint64(b, math.Float64bits(x)), nil
	case []uint8:
		return appendGGUFArray(b, x, depth)
	case []int8:
		return appendGGUFArray(b, x, depth)
	case []uint16:
		return appendGGUFArray(b, x, depth)
	case []int16:
		return appendGGUFArray(b, x, depth)
	case []uint32:
		return appendGGUFArray(b, x, depth)
	case []int32:
		return appendGGUFArray(b, x, depth)
	case []float32:
		return appendGGUFArray(b, x, depth)
	case []bool:
		return appendGGUFArray(b, x, depth)
	case []string:
		return appendGGUFArray(b, x, depth)
	case []uint64:
		return appendGGUFArray(b, x, depth)
	case []int64:
		return appendGGUFArray(b, x, depth)
	case []float64:
		return appendGGUFArray(b, x, depth)
	case []any:
		if depth+1 >= ggufMaxArrayDepth {
			return nil, fmt.Errorf("arrays nested deeper than %d", ggufMaxArrayDepth)
		}
		for i, e := range x {
			if t, err := ggufTypeOf(e); err != nil || t != GGUFArray {
				return nil, fmt.Errorf("element %d of an array of arrays is %T, not an array", i, e)
			}
		}
		return appendGGUFArray(b, x, depth)
	}
	return nil, fmt.Errorf("unsupported Go type %T for a GGUF value", v)
}

func appendGGUFArray[T any](b []byte, xs []T, depth int) ([]byte, error) {
	b = binary.LittleEndian.AppendUint32(b, uint32(ggufElemType(xs)))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(xs)))
	for _, x := range xs {
		var err error
		if b, err = appendGGUFValue(b, x, depth+1); err != nil {
			return nil, err
		}
	}
	return b, nil
}
