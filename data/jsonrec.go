package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// RowError reports a bad row of a data file.
type RowError struct {
	File string
	// Line is the 1-based line: of the row in JSONL, of the element's first
	// character in a JSON array. 0 if unknown.
	Line int
	// Index is the 0-based element index in a JSON array, or -1 for JSONL
	// and text files.
	Index int
	Msg   string
}

func (e *RowError) Error() string {
	switch {
	case e.Index >= 0 && e.Line > 0:
		return fmt.Sprintf("%s: element %d (line %d): %s", e.File, e.Index, e.Line, e.Msg)
	case e.Index >= 0:
		return fmt.Sprintf("%s: element %d: %s", e.File, e.Index, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// pos locates one record of a file.
type pos struct {
	file  string
	line  int
	index int // -1 for JSONL
}

func (p pos) source() string {
	if p.index >= 0 {
		return fmt.Sprintf("%s:%d[%d]", p.file, p.line, p.index)
	}
	return fmt.Sprintf("%s:%d", p.file, p.line)
}

func (p pos) errorf(format string, args ...any) *RowError {
	return &RowError{File: p.file, Line: p.line, Index: p.index, Msg: fmt.Sprintf(format, args...)}
}

// object is one JSON object with its values still raw.
type object map[string]json.RawMessage

// maxKeptErrors bounds Stats.Errors so a file of bad rows stays readable.
const maxKeptErrors = 10

// forEachRecord calls fn for every top-level record of data, which is
// either a JSON array of objects or JSONL (one object per line; blank lines
// are skipped). A row that is not a valid object, or for which fn returns a
// *RowError, is an error, or is counted in st.Invalid when skipInvalid is
// set. Errors that are not *RowError (and broken JSON array syntax, after
// which no later element can be found) always stop the walk.
func forEachRecord(data []byte, name string, skipInvalid bool, st *Stats, fn func(p pos, o object) error) error {
	handle := func(err error) error {
		var re *RowError
		if skipInvalid && errors.As(err, &re) {
			st.Invalid++
			if len(st.Errors) < maxKeptErrors {
				st.Errors = append(st.Errors, re.Error())
			}
			return nil
		}
		return err
	}
	data = bytes.TrimPrefix(data, []byte("\ufeff")) // a UTF-8 byte-order mark; no newline, so lines keep their numbers
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) > 0 && trimmed[0] == '[' {
		return forEachArrayElement(data, name, func(p pos, raw json.RawMessage) error {
			st.Rows++
			o, err := decodeObject(p, raw)
			if err == nil {
				err = fn(p, o)
			}
			if err != nil {
				return handle(err)
			}
			return nil
		})
	}
	line := 0
	for len(data) > 0 {
		line++
		var l []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			l, data = data[:i], data[i+1:]
		} else {
			l, data = data, nil
		}
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		st.Rows++
		p := pos{file: name, line: line, index: -1}
		o, err := decodeObject(p, l)
		if err == nil {
			err = fn(p, o)
		}
		if err != nil {
			if err := handle(err); err != nil {
				return err
			}
		}
	}
	return nil
}

// forEachArrayElement walks the elements of a top-level JSON array.
func forEachArrayElement(data []byte, name string, fn func(p pos, raw json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	syntaxErr := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return &RowError{File: name, Line: lineAt(data, int(se.Offset)), Index: -1, Msg: "invalid JSON: " + se.Error()}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return &RowError{File: name, Line: lineAt(data, len(data)), Index: -1, Msg: "invalid JSON: unexpected end of file"}
		}
		return fmt.Errorf("%s: invalid JSON: %w", name, err)
	}
	if _, err := dec.Token(); err != nil { // the '['
		return syntaxErr(err)
	}
	for i := 0; dec.More(); i++ {
		start := skipSeparators(data, int(dec.InputOffset()))
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return syntaxErr(err)
		}
		if err := fn(pos{file: name, line: lineAt(data, start), index: i}, raw); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // the ']'
		return syntaxErr(err)
	}
	// Anything after the array is an error too: a truncated or concatenated file.
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return &RowError{File: name, Line: lineAt(data, int(dec.InputOffset())), Index: -1, Msg: "invalid JSON: data after the top-level array"}
	}
	return nil
}

// skipSeparators returns the offset of the first byte at or after off that
// is neither white space nor a comma: where the next array element starts.
func skipSeparators(data []byte, off int) int {
	for off < len(data) {
		switch data[off] {
		case ' ', '\t', '\r', '\n', ',':
			off++
		default:
			return off
		}
	}
	return off
}

// lineAt returns the 1-based line of byte offset off.
func lineAt(data []byte, off int) int {
	off = min(max(off, 0), len(data))
	return bytes.Count(data[:off], []byte{'\n'}) + 1
}

func decodeObject(p pos, raw []byte) (object, error) {
	if len(raw) == 0 || raw[0] != '{' {
		if !json.Valid(raw) {
			return nil, p.errorf("invalid JSON")
		}
		return nil, p.errorf("want a JSON object, got %s", jsonKind(raw))
	}
	var o object
	if err := json.Unmarshal(raw, &o); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, p.errorf("invalid JSON at column %d: %v", se.Offset, se)
		}
		return nil, p.errorf("invalid JSON: %v", err)
	}
	return o, nil
}

// jsonKind names the type of a raw JSON value for error messages.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// str reads the string value of key. A missing key or null gives ok=false;
// a value of another type is an error.
func (o object) str(p pos, key string) (s string, ok bool, err error) {
	return o.strNamed(p, key, key)
}

// strNamed is str with the key called label in messages (a path such as
// "messages[2].content").
func (o object) strNamed(p pos, key, label string) (s string, ok bool, err error) {
	raw, present := o[key]
	if !present || jsonKind(raw) == "null" {
		return "", false, nil
	}
	if jsonKind(raw) != "a string" {
		return "", false, p.errorf("key %q: want a string, got %s", label, jsonKind(raw))
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false, p.errorf("key %q: %v", label, err)
	}
	return s, true, nil
}

// mustStr is str for a required key.
func (o object) mustStr(p pos, key string) (string, error) {
	return o.mustStrNamed(p, key, key)
}

// mustStrNamed is strNamed for a required key.
func (o object) mustStrNamed(p pos, key, label string) (string, error) {
	s, ok, err := o.strNamed(p, key, label)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", p.errorf("missing key %q", label)
	}
	return s, nil
}

// has reports whether key is present and not null.
func (o object) has(key string) bool {
	raw, ok := o[key]
	return ok && jsonKind(raw) != "null"
}
