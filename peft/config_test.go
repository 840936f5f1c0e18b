package peft

import (
	"reflect"
	"strings"
	"testing"
)

// ExtraKeys names the unused keys that ask for something, and not the keys
// PEFT writes at their defaults (as gopeft's own files carry them).
func TestExtraKeysSkipsPEFTDefaults(t *testing.T) {
	var c bareConfig
	c.SetDefaultKeys(map[string]any{"megatron_core": "megatron.core", "use_qalora": false, "loftq_config": map[string]any{}, "qalora_group_size": 16})
	file := `{"peft_type": "LORA", "megatron_core": "megatron.core", "use_qalora": true, "loftq_config": {},
		"qalora_group_size": 16.0, "brand_new": 1}`
	if err := DecodeConfig([]byte(file), &c, "adapter_config.json", false); err != nil {
		t.Fatal(err)
	}
	if got, want := c.ExtraKeys(), []string{"brand_new", "use_qalora"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ExtraKeys = %v, want %v", got, want)
	}
}

// bareConfig is a method config with no keys of its own.
type bareConfig struct{ BaseConfig }

func (*bareConfig) Validate() error { return nil }

// A value that a key's own decoder refuses is reported with the key's name
// (encoding/json does not add it), and a long value is cut short.
func TestDecodeErrorNamesKeyAndCutsValue(t *testing.T) {
	long := "[" + strings.Repeat("1, ", 100000) + "1]"
	var c bareConfig
	err := DecodeConfig([]byte(`{"r": 4, "target_modules": `+long+`}`), &c, "adapter_config.json", false)
	if err == nil || !strings.Contains(err.Error(), `adapter_config.json: key "target_modules": want a string or a list of strings`) {
		t.Fatalf("error %.200v", err)
	}
	if len(err.Error()) > 300 {
		t.Errorf("the error is %d bytes long: the value is not cut short", len(err.Error()))
	}
}
