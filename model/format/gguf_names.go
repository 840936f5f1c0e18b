package format

import (
	"fmt"
	"strconv"
	"strings"
)

// llama-architecture GGUF tensor names (llama.cpp's gguf-py tensor map) and
// their Hugging Face equivalents. Per-layer names carry "blk.N." in GGUF and
// "model.layers.N." in Hugging Face.
var (
	ggufGlobalNames = map[string]string{
		"token_embd.weight":  "model.embed_tokens.weight",
		"output_norm.weight": "model.norm.weight",
		"output.weight":      "lm_head.weight",
	}
	ggufLayerNames = map[string]string{
		"attn_q":      "self_attn.q_proj",
		"attn_k":      "self_attn.k_proj",
		"attn_v":      "self_attn.v_proj",
		"attn_output": "self_attn.o_proj",
		"ffn_gate":    "mlp.gate_proj",
		"ffn_down":    "mlp.down_proj",
		"ffn_up":      "mlp.up_proj",
		"attn_norm":   "input_layernorm",
		"ffn_norm":    "post_attention_layernorm",
	}
	hfGlobalNames = invert(ggufGlobalNames)
	hfLayerNames  = invert(ggufLayerNames)
)

func invert(m map[string]string) map[string]string {
	r := make(map[string]string, len(m))
	for k, v := range m {
		r[v] = k
	}
	return r
}

// GGUFToHFName maps a llama-architecture GGUF tensor name to its Hugging
// Face name (blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight).
// It reports false for names outside the table (rope_freqs.weight, other
// architectures' extras).
func GGUFToHFName(name string) (string, bool) {
	if hf, ok := ggufGlobalNames[name]; ok {
		return hf, true
	}
	layer, part, ok := splitLayerName(name, "blk.")
	if !ok {
		return "", false
	}
	hf, ok := ggufLayerNames[part]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("model.layers.%d.%s.weight", layer, hf), true
}

// HFToGGUFName is the inverse of [GGUFToHFName].
func HFToGGUFName(name string) (string, bool) {
	if g, ok := hfGlobalNames[name]; ok {
		return g, true
	}
	layer, part, ok := splitLayerName(name, "model.layers.")
	if !ok {
		return "", false
	}
	g, ok := hfLayerNames[part]
	if !ok {
		return "", false
	}
	return fmt.Sprintf("blk.%d.%s.weight", layer, g), true
}

// splitLayerName splits prefix + "N." + part + ".weight" into N and part,
// accepting only a canonical decimal N.
func splitLayerName(name, prefix string) (int, string, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, "", false
	}
	num, rest, ok := strings.Cut(rest, ".")
	if !ok || num == "" || (len(num) > 1 && num[0] == '0') || strings.TrimLeft(num, "0123456789") != "" {
		return 0, "", false
	}
	layer, err := strconv.Atoi(num)
	if err != nil {
		return 0, "", false
	}
	part, ok := strings.CutSuffix(rest, ".weight")
	if !ok {
		return 0, "", false
	}
	return layer, part, true
}

// HFTensors returns the tensors of a llama-architecture GGUF file under
// Hugging Face names, with q_proj/k_proj permuted to Hugging Face
// (rotate-half) order using the file's head counts
// ("<arch>.attention.head_count", "<arch>.attention.head_count_kv", default
// head_count, and "<arch>.block_count"). Tensors without a Hugging Face name
// are listed in unmapped and left out.
func (f *GGUFFile) HFTensors() (tensors map[string]*Tensor, unmapped []string, err error) {
	arch, err := f.MetaString("general.architecture")
	if err != nil {
		return nil, nil, err
	}
	nLayers, err := f.MetaInt(arch + ".block_count")
	if err != nil {
		return nil, nil, err
	}
	nHeads, err := f.MetaInt(arch + ".attention.head_count")
	if err != nil {
		return nil, nil, err
	}
	nKV := nHeads
	if _, ok := f.Metadata[arch+".attention.head_count_kv"]; ok {
		if nKV, err = f.MetaInt(arch + ".attention.head_count_kv"); err != nil {
			return nil, nil, err
		}
	}
	const limit = 1 << 20 // far above any real model; keeps int conversion safe
	if nLayers <= 0 || nLayers > limit || nHeads <= 0 || nHeads > limit || nKV <= 0 || nKV > limit {
		return nil, nil, fmt.Errorf("%s: implausible block_count %d, head_count %d, head_count_kv %d", f.Name, nLayers, nHeads, nKV)
	}
	tensors = make(map[string]*Tensor, len(f.Tensors))
	for _, ti := range f.Tensors {
		hf, ok := GGUFToHFName(ti.Name)
		if !ok {
			unmapped = append(unmapped, ti.Name)
			continue
		}
		t, _ := f.Tensor(ti.Name)
		t.Name = hf
		tensors[hf] = t
	}
	if err := ConvertQKToHF(tensors, int(nLayers), int(nHeads), int(nKV)); err != nil {
		return nil, nil, fmt.Errorf("%s: %v", f.Name, err)
	}
	return tensors, unmapped, nil
}
