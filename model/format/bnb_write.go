package format

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/gopeft/gopeft/quant"
)

// BnbTensors returns the tensors a bitsandbytes checkpoint stores for the
// quantized weight of module (e.g. "model.layers.0.self_attn.q_proj"), as
// transformers saves a model loaded with load_in_4bit or load_in_8bit: for
// 4-bit, Params4bit's packed codes and QuantState.as_dict(packed=True)
// (weight, weight.absmax, weight.quant_map, with double quantization
// weight.nested_absmax and weight.nested_quant_map, and
// weight.quant_state.bitsandbytes__nf4 holding the JSON); for int8,
// Linear8bitLt's weight (I8 [out, in]) and SCB (F32 [out]). ReadBnbWeights
// reads them back.
func BnbTensors(module string, q any) ([]*Tensor, error) {
	switch q := q.(type) {
	case *quant.Tensor4:
		sd := q.StateDict()
		keys := make([]string, 0, len(sd))
		for k := range sd {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([]*Tensor, 0, len(keys))
		for _, k := range keys {
			r := sd[k]
			out = append(out, &Tensor{Name: module + "." + k, DType: DType(r.DType), Shape: r.Shape, Data: r.Data})
		}
		return out, nil
	case *quant.Int8:
		w := make([]byte, len(q.CB))
		for i, c := range q.CB {
			w[i] = byte(c)
		}
		scb := make([]byte, 4*len(q.SCB))
		for i, v := range q.SCB {
			binary.LittleEndian.PutUint32(scb[4*i:], math.Float32bits(v))
		}
		return []*Tensor{
			{Name: module + ".weight", DType: "I8", Shape: []int{q.Rows, q.Cols}, Data: w},
			{Name: module + ".SCB", DType: F32, Shape: []int{q.Rows}, Data: scb},
		}, nil
	}
	return nil, fmt.Errorf("%s: %T is not a bitsandbytes weight", module, q)
}

// BnbQuantizationConfig is config.json's quantization_config for a
// checkpoint whose Linear weights are kind ("nf4", "fp4" or "int8"), with
// the keys transformers' BitsAndBytesConfig.to_dict writes (lm_head is not
// quantized, as transformers skips it by default). computeDType is
// bnb_4bit_compute_dtype ("float32" or "bfloat16").
func BnbQuantizationConfig(kind string, double bool, computeDType string) map[string]any {
	four := kind != "int8"
	qt := kind
	if !four {
		qt = "fp4" // BitsAndBytesConfig's default, recorded even for 8-bit
	}
	return map[string]any{
		"quant_method":                     "bitsandbytes",
		"load_in_4bit":                     four,
		"load_in_8bit":                     !four,
		"_load_in_4bit":                    four,
		"_load_in_8bit":                    !four,
		"bnb_4bit_quant_type":              qt,
		"bnb_4bit_use_double_quant":        double,
		"bnb_4bit_compute_dtype":           computeDType,
		"bnb_4bit_quant_storage":           "uint8",
		"llm_int8_threshold":               6.0,
		"llm_int8_has_fp16_weight":         false,
		"llm_int8_enable_fp32_cpu_offload": false,
		"llm_int8_skip_modules":            nil,
	}
}
