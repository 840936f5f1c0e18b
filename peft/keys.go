package peft

import "encoding/json"

// DropKeys removes keys from a JSON object. A method whose PEFT config
// class lacks some of BaseConfig's keys (IA³ has no layers_to_transform,
// the prompt-learning methods have no target_modules) calls it from its
// config's MarshalJSON, so adapter_config.json has PEFT's keys exactly.
func DropKeys(obj []byte, keys ...string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(obj, &m); err != nil {
		return nil, err
	}
	for _, k := range keys {
		delete(m, k)
	}
	return json.Marshal(m)
}
