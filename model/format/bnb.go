package format

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/gopeft/gopeft/quant"
)

// BnbConfig is the part of config.json's quantization_config that a
// bitsandbytes checkpoint (transformers' BitsAndBytesConfig) records.
type BnbConfig struct {
	Load4bit     bool   // load_in_4bit
	Load8bit     bool   // load_in_8bit
	QuantType    string // bnb_4bit_quant_type: "nf4" or "fp4"
	DoubleQuant  bool   // bnb_4bit_use_double_quant
	SkipModules  []string
	ComputeDType string // bnb_4bit_compute_dtype, as written
}

// ParseQuantizationConfig reads config.json (its bytes; name for errors)
// and returns its bitsandbytes quantization_config, or nil when the model
// is not quantized. Other quantization methods (GPTQ, AWQ, ...) are refused
// by name: their weights are not stored as bitsandbytes' are.
func ParseQuantizationConfig(name string, config []byte) (*BnbConfig, error) {
	var top struct {
		Q json.RawMessage `json:"quantization_config"`
	}
	if err := json.Unmarshal(config, &top); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if len(top.Q) == 0 || string(top.Q) == "null" {
		return nil, nil
	}
	var q struct {
		Method      *string  `json:"quant_method"`
		Load4       bool     `json:"load_in_4bit"`
		Load8       bool     `json:"load_in_8bit"`
		QuantType   *string  `json:"bnb_4bit_quant_type"`
		DoubleQuant bool     `json:"bnb_4bit_use_double_quant"`
		Skip        []string `json:"llm_int8_skip_modules"`
		Compute     any      `json:"bnb_4bit_compute_dtype"`
	}
	if err := json.Unmarshal(top.Q, &q); err != nil {
		return nil, fmt.Errorf("%s: quantization_config: %v", name, err)
	}
	method := "bitsandbytes" // transformers' default when quant_method is absent
	if q.Method != nil {
		method = *q.Method
	}
	if method != "bitsandbytes" {
		return nil, fmt.Errorf("%s: quantization_config.quant_method %q is not supported (only bitsandbytes' 4-bit and 8-bit checkpoints are read)", name, method)
	}
	if q.Load4 == q.Load8 {
		return nil, fmt.Errorf("%s: quantization_config: load_in_4bit=%v and load_in_8bit=%v; want exactly one", name, q.Load4, q.Load8)
	}
	c := &BnbConfig{Load4bit: q.Load4, Load8bit: q.Load8, DoubleQuant: q.DoubleQuant, SkipModules: q.Skip, QuantType: "fp4"}
	if q.QuantType != nil {
		c.QuantType = *q.QuantType
	}
	if s, ok := q.Compute.(string); ok {
		c.ComputeDType = s
	}
	if c.Load4bit {
		if _, err := quant.ParseType(c.QuantType); err != nil {
			return nil, fmt.Errorf("%s: quantization_config.bnb_4bit_quant_type: %v", name, err)
		}
	}
	return c, nil
}

// BnbWeights are the quantized Linear weights of a bitsandbytes checkpoint,
// keyed by module name ("model.layers.0.self_attn.q_proj").
type BnbWeights struct {
	Q4 map[string]*quant.Tensor4
	Q8 map[string]*quant.Int8
}

// ReadBnbWeights finds the bitsandbytes-quantized weights in a checkpoint's
// tensors and assembles them: a module is 4-bit when it has a
// weight.quant_state.bitsandbytes__* tensor (weight, weight.absmax,
// weight.quant_map, and with double quantization weight.nested_absmax and
// weight.nested_quant_map beside it), 8-bit when it has an SCB tensor
// (weight I8 [out, in], SCB F32 [out], optionally weight_format 0, "row").
// It removes the tensors it used from the map, leaving the unquantized ones
// (embeddings, norms, the LM head). cfg, when not nil, must agree: 4-bit
// modules of its quant type, or 8-bit ones. Errors name the tensor and what
// was found.
func ReadBnbWeights(cfg *BnbConfig, tensors map[string]*Tensor) (*BnbWeights, error) {
	w := &BnbWeights{Q4: map[string]*quant.Tensor4{}, Q8: map[string]*quant.Int8{}}
	var names []string
	for k := range tensors {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if i := strings.Index(k, ".weight.quant_state."); i >= 0 {
			mod := k[:i]
			sd := map[string]quant.Raw{}
			prefix := mod + "."
			for _, k2 := range names {
				if t := tensors[k2]; t != nil && (k2 == prefix+"weight" || strings.HasPrefix(k2, prefix+"weight.")) {
					sd[k2[len(prefix):]] = quant.Raw{DType: string(t.DType), Shape: t.Shape, Data: t.Data}
				}
			}
			q, err := quant.FromStateDict(mod, sd)
			if err != nil {
				return nil, err
			}
			if cfg != nil && (!cfg.Load4bit || cfg.QuantType != q.Type.String()) {
				return nil, fmt.Errorf("tensor %s: %s weights, but quantization_config says load_in_4bit=%v bnb_4bit_quant_type=%q", k, q.Type, cfg.Load4bit, cfg.QuantType)
			}
			if cfg != nil && cfg.DoubleQuant != (q.Nested != nil) {
				return nil, fmt.Errorf("tensor %s: double quantization %v, but quantization_config says bnb_4bit_use_double_quant=%v", k, q.Nested != nil, cfg.DoubleQuant)
			}
			for s := range sd {
				delete(tensors, prefix+s)
			}
			w.Q4[mod] = q
		}
	}
	for _, k := range names {
		if !strings.HasSuffix(k, ".SCB") {
			continue
		}
		mod := strings.TrimSuffix(k, ".SCB")
		if cfg != nil && !cfg.Load8bit {
			return nil, fmt.Errorf("tensor %s: an 8-bit weight, but quantization_config says load_in_8bit=false", k)
		}
		q, err := int8Weight(mod, tensors)
		if err != nil {
			return nil, err
		}
		delete(tensors, k)
		delete(tensors, mod+".weight")
		delete(tensors, mod+".weight_format")
		w.Q8[mod] = q
	}
	return w, nil
}

// int8Weight assembles one Linear8bitLt weight.
func int8Weight(mod string, tensors map[string]*Tensor) (*quant.Int8, error) {
	wt, ok := tensors[mod+".weight"]
	if !ok {
		return nil, fmt.Errorf("%s: SCB without %s.weight", mod, mod)
	}
	if wt.DType != "I8" || len(wt.Shape) != 2 {
		return nil, fmt.Errorf("tensor %s.weight: %s %v, want I8 [out, in] beside SCB", mod, wt.DType, wt.Shape)
	}
	if err := wt.Validate(); err != nil {
		return nil, err
	}
	rows, cols := wt.Shape[0], wt.Shape[1]
	scb := tensors[mod+".SCB"]
	if scb.DType != F32 || len(scb.Shape) != 1 || scb.Shape[0] != rows {
		return nil, fmt.Errorf("tensor %s.SCB: %s %v, want F32 [%d] (one per row of weight %v)", mod, scb.DType, scb.Shape, rows, wt.Shape)
	}
	s, err := scb.Float32()
	if err != nil {
		return nil, err
	}
	if f, ok := tensors[mod+".weight_format"]; ok {
		zero := len(f.Data) > 0
		for _, b := range f.Data {
			zero = zero && b == 0
		}
		if f.Numel() != 1 || !zero || (f.DType != "U8" && f.DType != "I64" && f.DType != "I32") {
			return nil, fmt.Errorf("tensor %s.weight_format: %s %v % x, want 0 (row-major; bitsandbytes refuses the others too)", mod, f.DType, f.Shape, f.Data)
		}
	}
	q := &quant.Int8{Rows: rows, Cols: cols, CB: make([]int8, rows*cols), SCB: s}
	for i, b := range wt.Data {
		q.CB[i] = int8(b)
	}
	return q, nil
}
