package peft

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// BaseConfig holds the adapter_config.json keys every method shares, as
// Hugging Face PEFT writes them.
type BaseConfig struct {
	PeftType            string     `json:"peft_type"`
	TaskType            string     `json:"task_type"`
	BaseModelNameOrPath string     `json:"base_model_name_or_path"`
	Revision            *string    `json:"revision"`
	InferenceMode       bool       `json:"inference_mode"`
	PeftVersion         string     `json:"peft_version,omitempty"`
	TargetModules       Modules    `json:"target_modules"`
	ExcludeModules      Modules    `json:"exclude_modules"`
	LayersToTransform   IntList    `json:"layers_to_transform"`
	LayersPattern       StringList `json:"layers_pattern"`
	ModulesToSave       []string   `json:"modules_to_save"`
	AutoMapping         any        `json:"auto_mapping"`
	// Seed makes a method\'s initialisation reproducible. Not a PEFT key:
	// PEFT draws from torch\'s global generator.
	Seed  uint64 `json:"-"`
	extra map[string]json.RawMessage
	// defaults are keys PEFT writes that the method keeps no field for
	// (LoRA's megatron_core, loftq_config, ...), written with PEFT's
	// default value unless a file gave them.
	defaults map[string]json.RawMessage
}

// SetDefaultKeys records keys that adapter_config.json carries with these
// values when neither the method's fields nor a file set them, so a saved
// config has every key PEFT writes.
func (b *BaseConfig) SetDefaultKeys(kv map[string]any) {
	if b.defaults == nil {
		b.defaults = map[string]json.RawMessage{}
	}
	for k, v := range kv {
		j, err := json.Marshal(v)
		if err != nil {
			panic(fmt.Sprintf("peft: default key %s: %v", k, err))
		}
		b.defaults[k] = j
	}
}

// Base returns the shared part; methods embed BaseConfig to satisfy Config.
func (b *BaseConfig) Base() *BaseConfig { return b }

// Config is a method's configuration: BaseConfig plus its own keys.
type Config interface {
	Base() *BaseConfig
	// Validate checks the method's own keys.
	Validate() error
}

// Selects reports whether the config targets a module, applying
// target_modules, exclude_modules, layers_to_transform and layers_pattern.
func (b *BaseConfig) Selects(name string, isOutput bool) bool {
	if !b.TargetModules.Match(name, isOutput) || b.ExcludeModules.Match(name, isOutput) {
		return false
	}
	if len(b.LayersToTransform) == 0 {
		return true
	}
	i, ok := layerIndex(name, b.LayersPattern)
	if !ok {
		return false
	}
	for _, l := range b.LayersToTransform {
		if l == i {
			return true
		}
	}
	return false
}

// MarshalConfig renders a method config as adapter_config.json: keys
// sorted, unknown keys read from a file kept.
func MarshalConfig(c Config) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range c.Base().extra {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	for k, v := range c.Base().defaults {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	// encoding/json writes map keys sorted.
	return json.MarshalIndent(m, "", "  ")
}

// DecodeConfig reads a method's configuration (adapter_config.json's
// keys) into c and validates it; source names the file or block in errors.
// A key the method does not know is an error naming it when strict (a
// recipe's peft block: a typo must not be ignored), and is otherwise kept
// and listed by ExtraKeys (a file that another PEFT version wrote: its new
// keys are written back unchanged).
func DecodeConfig(data []byte, c Config, source string, strict bool) error {
	if err := json.Unmarshal(data, c); err != nil {
		return fmt.Errorf("%s: %w", source, keyOf(data, c, err))
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	known, err := json.Marshal(c)
	if err != nil {
		return err
	}
	var knownKeys map[string]json.RawMessage
	_ = json.Unmarshal(known, &knownKeys)
	base := c.Base()
	var unknown []string
	for k, v := range all {
		if _, ok := knownKeys[k]; !ok {
			if base.extra == nil {
				base.extra = map[string]json.RawMessage{}
			}
			base.extra[k] = v
			unknown = append(unknown, k)
		}
	}
	if strict && len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("%s: unknown key %q for %s (its keys: %s)", source, unknown[0], base.PeftType, strings.Join(slices.Sorted(maps.Keys(knownKeys)), ", "))
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	return nil
}

// ExtraKeys lists the keys kept from a file that the method does not use
// and that ask for something: a key PEFT writes (SetDefaultKeys) holding
// PEFT's default value, as every config gopeft writes does, is left out.
func (b *BaseConfig) ExtraKeys() []string {
	ks := make([]string, 0, len(b.extra))
	for k, v := range b.extra {
		if d, ok := b.defaults[k]; ok && sameJSON(d, v) {
			continue // PEFT's default, as gopeft itself writes it: nothing asked for
		}
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// sameJSON reports whether two JSON texts hold the same value.
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// KeyError reports a config key whose value is outside what it allows; a
// command line maps Key back to the flag or recipe key the user gave.
type KeyError struct {
	Method, Key string
	Value       any
	Allowed     string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("%s: %s is %v: %s", strings.ToLower(e.Method), e.Key, e.Value, e.Allowed)
}

// keyOf names the key whose value err (from decoding data into c) is
// about, when err does not: encoding/json passes a custom UnmarshalJSON's
// error on without the field. It decodes the keys one at a time, in
// order, into c (which holds a failed decode already) until one fails.
func keyOf(data []byte, c Config, err error) error {
	var typeErr *json.UnmarshalTypeError
	var all map[string]json.RawMessage
	if errors.As(err, &typeErr) && typeErr.Field != "" || json.Unmarshal(data, &all) != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(all)) {
		one, _ := json.Marshal(map[string]json.RawMessage{k: all[k]})
		if json.Unmarshal(one, c) != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
	}
	return err
}
