package format

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/gopeft/gopeft/internal/atomicfile"
	"github.com/gopeft/gopeft/internal/safefile"
)

// A safetensors file is an 8-byte little-endian header length n, n bytes of
// JSON (an object mapping tensor names to {"dtype","shape","data_offsets"},
// plus an optional "__metadata__" object of strings), then the data section.
// Offsets are relative to the data section.

// maxSafetensorsHeader is the Rust library's MAX_HEADER_SIZE.
const maxSafetensorsHeader = 100_000_000

const safetensorsMetadataKey = "__metadata__"

// ReadSafetensors reads a whole .safetensors file. The returned tensors'
// Data slices share one buffer holding the file. metadata is nil when the
// file has no "__metadata__".
func ReadSafetensors(path string) (tensors map[string]*Tensor, metadata map[string]string, err error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return ParseSafetensors(path, data)
}

type safetensorsEntry struct {
	DType   *string   `json:"dtype"`
	Shape   *[]int    `json:"shape"`
	Offsets *[]uint64 `json:"data_offsets"`
}

// ParseSafetensors parses the bytes of a safetensors file; name is used in
// error messages. It checks what the Rust reference library checks: header
// length within the file, known dtypes, sizes that match the shapes, and
// offsets that tile the data section exactly (no gaps, no overlaps).
func ParseSafetensors(name string, data []byte) (tensors map[string]*Tensor, metadata map[string]string, err error) {
	if len(data) < 8 {
		return nil, nil, fmt.Errorf("%s: %d bytes is too short for a safetensors file", name, len(data))
	}
	n := binary.LittleEndian.Uint64(data)
	if n > maxSafetensorsHeader {
		return nil, nil, fmt.Errorf("%s: safetensors header length %d exceeds the %d-byte limit", name, n, maxSafetensorsHeader)
	}
	if n > uint64(len(data)-8) {
		return nil, nil, fmt.Errorf("%s: safetensors header length %d exceeds the file size %d", name, n, len(data))
	}
	hdr := data[8 : 8+n]
	if !utf8.Valid(hdr) {
		return nil, nil, fmt.Errorf("%s: safetensors header is not valid UTF-8", name)
	}
	if t := bytes.TrimLeft(hdr, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, nil, fmt.Errorf("%s: safetensors header is not a JSON object", name)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, nil, fmt.Errorf("%s: safetensors header: %v", name, err)
	}
	section := data[8+n:]

	type span struct {
		name       string
		begin, end uint64
	}
	spans := make([]span, 0, len(raw))
	tensors = make(map[string]*Tensor, len(raw))
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		msg := raw[key]
		if key == safetensorsMetadataKey {
			if err := json.Unmarshal(msg, &metadata); err != nil {
				return nil, nil, fmt.Errorf("%s: __metadata__ must map strings to strings: %v", name, err)
			}
			continue
		}
		var e safetensorsEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, nil, fmt.Errorf("%s: tensor %q: %v", name, key, err)
		}
		if e.DType == nil || e.Shape == nil || e.Offsets == nil {
			return nil, nil, fmt.Errorf("%s: tensor %q: entry needs dtype, shape and data_offsets", name, key)
		}
		dt := DType(*e.DType)
		if info, ok := dtypes[dt]; !ok || info.stRank < 0 {
			return nil, nil, fmt.Errorf("%s: tensor %q: unknown safetensors dtype %q", name, key, *e.DType)
		}
		if len(*e.Offsets) != 2 {
			return nil, nil, fmt.Errorf("%s: tensor %q: data_offsets must have 2 entries, has %d", name, key, len(*e.Offsets))
		}
		begin, end := (*e.Offsets)[0], (*e.Offsets)[1]
		if begin > end {
			return nil, nil, fmt.Errorf("%s: tensor %q: data_offsets [%d, %d] end before they begin", name, key, begin, end)
		}
		if end > uint64(len(section)) {
			return nil, nil, fmt.Errorf("%s: tensor %q: data_offsets [%d, %d] run past the %d-byte data section", name, key, begin, end, len(section))
		}
		t := &Tensor{Name: key, DType: dt, Shape: *e.Shape, Data: section[begin:end:end]}
		if err := t.Validate(); err != nil {
			return nil, nil, fmt.Errorf("%s: %v", name, err)
		}
		tensors[key] = t
		spans = append(spans, span{key, begin, end})
	}
	slices.SortFunc(spans, func(a, b span) int {
		if a.begin != b.begin {
			return cmpUint(a.begin, b.begin)
		}
		if a.end != b.end {
			return cmpUint(a.end, b.end)
		}
		return strings.Compare(a.name, b.name)
	})
	var pos uint64
	prev := ""
	for _, s := range spans {
		if s.begin < pos {
			return nil, nil, fmt.Errorf("%s: tensor %q: data_offsets [%d, %d] overlap tensor %q", name, s.name, s.begin, s.end, prev)
		}
		if s.begin > pos {
			return nil, nil, fmt.Errorf("%s: tensor %q: data_offsets [%d, %d] leave a gap after byte %d", name, s.name, s.begin, s.end, pos)
		}
		pos, prev = s.end, s.name
	}
	if pos != uint64(len(section)) {
		return nil, nil, fmt.Errorf("%s: tensors cover %d bytes but the data section has %d", name, pos, len(section))
	}
	return tensors, metadata, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// WriteSafetensors writes tensors and metadata to path atomically (through a
// temporary file in the same directory). The bytes match what the Python
// safetensors library (Rust core) writes for the same tensors: "__metadata__"
// first, then tensors ordered by descending dtype alignment and then by name,
// contiguous offsets, and the header padded with spaces to a multiple of 8.
// Metadata keys are sorted (Rust's HashMap order is arbitrary); an empty or
// nil metadata map writes no "__metadata__".
func WriteSafetensors(path string, tensors []*Tensor, metadata map[string]string) error {
	// Validate before creating anything on disk.
	hdr, order, err := safetensorsHeader(tensors, metadata)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error { return writeSafetensorsBody(w, hdr, order) })
}

// EncodeSafetensors writes the safetensors encoding of tensors to w; see
// [WriteSafetensors] for the layout.
func EncodeSafetensors(w io.Writer, tensors []*Tensor, metadata map[string]string) error {
	hdr, order, err := safetensorsHeader(tensors, metadata)
	if err != nil {
		return err
	}
	return writeSafetensorsBody(w, hdr, order)
}

func writeSafetensorsBody(w io.Writer, hdr []byte, order []*Tensor) error {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	for _, t := range order {
		if _, err := w.Write(t.Data); err != nil {
			return err
		}
	}
	return nil
}

// safetensorsHeader validates the tensors and returns the padded header and
// the order in which their data must follow it.
func safetensorsHeader(tensors []*Tensor, metadata map[string]string) ([]byte, []*Tensor, error) {
	order := slices.Clone(tensors)
	seen := make(map[string]bool, len(tensors))
	for _, t := range order {
		if t == nil {
			return nil, nil, fmt.Errorf("nil tensor")
		}
		if t.Name == safetensorsMetadataKey {
			return nil, nil, fmt.Errorf("tensor name %q is reserved", t.Name)
		}
		if seen[t.Name] {
			return nil, nil, fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		if !utf8.ValidString(t.Name) {
			return nil, nil, fmt.Errorf("tensor name %q is not valid UTF-8", t.Name)
		}
		if info, ok := dtypes[t.DType]; !ok || info.stRank < 0 {
			return nil, nil, fmt.Errorf("tensor %q: dtype %q cannot be stored in safetensors", t.Name, t.DType)
		}
		if err := t.Validate(); err != nil {
			return nil, nil, err
		}
	}
	slices.SortStableFunc(order, func(a, b *Tensor) int {
		if ra, rb := dtypes[a.DType].stRank, dtypes[b.DType].stRank; ra != rb {
			return rb - ra
		}
		return strings.Compare(a.Name, b.Name)
	})

	b := []byte{'{'}
	if len(metadata) > 0 {
		b = appendJSONString(b, safetensorsMetadataKey)
		b = append(b, ':', '{')
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if !utf8.ValidString(k) || !utf8.ValidString(metadata[k]) {
				return nil, nil, fmt.Errorf("metadata %q: not valid UTF-8", k)
			}
		}
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, metadata[k])
		}
		b = append(b, '}')
	}
	var off uint64
	for i, t := range order {
		if i > 0 || len(metadata) > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, t.Name)
		b = append(b, `:{"dtype":`...)
		b = appendJSONString(b, string(t.DType))
		b = append(b, `,"shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(d), 10)
		}
		b = append(b, `],"data_offsets":[`...)
		b = strconv.AppendUint(b, off, 10)
		off += uint64(len(t.Data))
		b = append(b, ',')
		b = strconv.AppendUint(b, off, 10)
		b = append(b, ']', '}')
	}
	b = append(b, '}')
	for len(b)%8 != 0 {
		b = append(b, ' ')
	}
	return b, order, nil
}

// appendJSONString quotes s the way serde_json does: only '"', '\\' and
// control characters are escaped (short forms where JSON has them, otherwise
// \u00xx with lower-case hex); everything else, including non-ASCII, is
// copied. Go's encoding/json would also escape <, >, & and U+2028/9, which
// would change the bytes.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
