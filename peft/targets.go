package peft

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Modules is target_modules (or exclude_modules) as PEFT reads it: a string
// is a regular expression that must match a module's whole name, a list
// matches names equal to an entry or ending in "." + entry, and the string
// "all-linear" is every Linear but the output layer.
type Modules struct {
	Regex string
	Names []string
	set   bool
	re    *regexp.Regexp
}

// ModuleList makes a list-form Modules.
func ModuleList(names ...string) Modules { return Modules{Names: names, set: true} }

// ModuleRegex makes a string-form Modules (a regex, or "all-linear").
func ModuleRegex(re string) Modules { return Modules{Regex: re, set: true} }

// IsSet reports whether the key was given (null and absent are unset).
func (m Modules) IsSet() bool { return m.set }

// AllLinear reports the "all-linear" shorthand.
func (m Modules) AllLinear() bool {
	return m.set && m.Names == nil && strings.EqualFold(m.Regex, "all-linear")
}

// UnmarshalJSON accepts a string, a list of strings or null.
func (m *Modules) UnmarshalJSON(b []byte) error {
	*m = Modules{}
	if isNull(b) {
		return nil
	}
	if err := json.Unmarshal(b, &m.Regex); err == nil {
		m.set = true
		return m.compile()
	}
	if err := json.Unmarshal(b, &m.Names); err != nil {
		return fmt.Errorf("want a string or a list of strings, got %s", excerpt(b))
	}
	if m.Names == nil {
		m.Names = []string{}
	}
	m.set = true
	return nil
}

// MarshalJSON writes the form it was given in.
func (m Modules) MarshalJSON() ([]byte, error) {
	switch {
	case !m.set:
		return []byte("null"), nil
	case m.Names != nil:
		return json.Marshal(m.Names)
	default:
		return json.Marshal(m.Regex)
	}
}

func (m *Modules) compile() error {
	if m.Names != nil || m.AllLinear() || m.re != nil {
		return nil
	}
	re, err := regexp.Compile(`^(?:` + m.Regex + `)$`)
	if err != nil {
		return fmt.Errorf("target regex %q: %w", m.Regex, err)
	}
	m.re = re
	return nil
}

// Match reports whether a module name is selected. isOutput marks the
// model's output layer, which "all-linear" leaves out.
func (m *Modules) Match(name string, isOutput bool) bool {
	switch {
	case !m.set:
		return false
	case m.AllLinear():
		return !isOutput
	case m.Names != nil:
		for _, n := range m.Names {
			if name == n || strings.HasSuffix(name, "."+n) {
				return true
			}
		}
		return false
	}
	if m.compile() != nil {
		return false
	}
	return m.re.MatchString(name)
}

// layerIndex extracts the layer number from a module name such as
// model.layers.3.mlp.up_proj, looking after any of the patterns (PEFT's
// default: "layers", "h", "blocks", "layer").
func layerIndex(name string, patterns []string) (int, bool) {
	if len(patterns) == 0 {
		patterns = []string{"layers", "h", "blocks", "layer"}
	}
	parts := strings.Split(name, ".")
	for i := 0; i+1 < len(parts); i++ {
		for _, p := range patterns {
			if parts[i] == p {
				if n, err := strconv.Atoi(parts[i+1]); err == nil {
					return n, true
				}
			}
		}
	}
	return 0, false
}

// IntList is layers_to_transform: an int or a list of ints.
type IntList []int

// UnmarshalJSON accepts an int, a list of ints or null.
func (l *IntList) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*l = nil
		return nil
	}
	var one int
	if err := json.Unmarshal(b, &one); err == nil {
		*l = IntList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want an int or a list of ints, got %s", b)
	}
	*l = many
	return nil
}

// StringList is layers_pattern: a string or a list of strings.
type StringList []string

// UnmarshalJSON accepts a string, a list of strings or null.
func (l *StringList) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*l = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = StringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want a string or a list of strings, got %s", excerpt(b))
	}
	*l = many
	return nil
}

// PatternKey finds the rank_pattern / alpha_pattern key that applies to a
// module, as PEFT's get_pattern_key: an exact name, or a regex that matches
// the end of the name after a dot.
func PatternKey(keys []string, name string) (string, bool) {
	for _, k := range keys {
		if k == name {
			return k, true
		}
	}
	for _, k := range keys {
		re, err := regexp.Compile(`(^|.*\.)` + k + `$`)
		if err == nil && re.MatchString(name) {
			return k, true
		}
	}
	return "", false
}

func isNull(b []byte) bool { return bytes.Equal(bytes.TrimSpace(b), []byte("null")) }

// excerpt is at most the first 80 bytes of a JSON value, for an error
// message: a hostile value can be megabytes long.
func excerpt(b []byte) string {
	if len(b) <= 80 {
		return string(b)
	}
	return fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(string(b[:80]), ""), len(b))
}
