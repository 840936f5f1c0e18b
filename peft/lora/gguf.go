package lora

import (
	"fmt"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
)

// GGUFAdapterTypes are the tensor types a GGUF LoRA file is written in
// (convert_lora_to_gguf.py --outtype; its default is f32).
var GGUFAdapterTypes = []string{"f32", "f16", "bf16", "q8_0"}

// GGUFAdapter returns a loaded LoRA adapter as llama.cpp's GGUF LoRA file
// holds it, following convert_lora_to_gguf.py and llama.cpp's loader
// (src/llama-adapter.cpp, llama_adapter_lora_init_impl) and graph
// (llama-graph.cpp, build_lora_mm):
//
//   - metadata: general.architecture "llama" (the loader refuses a file
//     whose architecture is not the model's), general.type "adapter",
//     adapter.type "lora", adapter.lora.alpha = lora_alpha as a float32,
//     and general.name and general.quantization_version as every
//     converted file;
//   - per targeted Linear with llama.cpp name N (blk.3.attn_q.weight): the
//     tensors N.lora_a = PEFT's lora_A [r, in] and N.lora_b = lora_B
//     [out, r], written unchanged, so that in GGUF's ne order lora_a is
//     {in, r} and lora_b {r, out} (the loader checks a.ne[0] = base.ne[0],
//     b.ne[1] = base.ne[1] and a.ne[1] = b.ne[0]);
//   - q/k order: the converter runs lora_B through LlamaModel.permute (its
//     LoraTorchTensor permutes B's rows and leaves A), as for the base
//     weight. Every loaded base rotates halves (llama2.c and GGUF files'
//     interleaved rows are permuted to Hugging Face's order on load), so B's
//     rows get that permutation; only a model built in code with
//     interleaved RoPE is written as it is;
//   - scale: llama.cpp computes alpha/rank for each pair itself, rank being
//     lora_b's ne[0] (alpha 0 means scale 1). Where PEFT's scale differs —
//     rsLoRA's alpha/√r, an alpha_pattern entry — the ratio is folded into
//     lora_b (one float32 multiply), so the file computes PEFT's delta.
//     (convert_lora_to_gguf.py writes lora_alpha alone and ignores both.)
//
// typ is one of GGUFAdapterTypes; q8_0 rows that are not whole blocks of 32
// (lora_b's rows are r long) fall back to F16, as the converter does.
//
// Refused, naming the cause: adapters of other methods, DoRA (its magnitude
// vectors have no place in the file), PiSSA/OLoRA initialisations (they
// rewrite the base weight, which llama.cpp keeps), modules_to_save copies,
// and lm_head on a base with tied embeddings (llama.cpp's output is then
// token_embd; the converter refuses it too).
func GGUFAdapter(pm *peft.Model, name, typ string) (map[string]any, []*format.Tensor, error) {
	a, ok := pm.Adapter(name)
	if !ok {
		return nil, nil, fmt.Errorf("no adapter %q", name)
	}
	m, ok := a.Method.(*Method)
	if !ok {
		return nil, nil, fmt.Errorf("a %s adapter cannot be written as a GGUF LoRA: llama.cpp's --lora loads plain LoRA adapters only",
			a.Method.Config().Base().PeftType)
	}
	ft := map[string]format.DType{"f32": format.F32, "f16": format.F16, "bf16": format.BF16, "q8_0": format.Q8_0}
	dt, ok := ft[typ]
	if !ok {
		return nil, nil, fmt.Errorf("unknown GGUF LoRA type %q (want one of %s)", typ, strings.Join(GGUFAdapterTypes, ", "))
	}
	c := m.Cfg
	switch {
	case c.UseDoRA || len(m.doras) > 0:
		return nil, nil, fmt.Errorf("use_dora: a DoRA adapter's magnitude vectors cannot be written to a GGUF LoRA file (llama.cpp applies B·A only); merge it into the base instead (gopeft merge)")
	case c.InitLoraWeights.ChangesBase():
		return nil, nil, fmt.Errorf("init_lora_weights %q rewrites the base weight, and llama.cpp applies the adapter to the original base: merge it (gopeft merge) instead", string(c.InitLoraWeights))
	}
	for _, p := range a.Params {
		if !strings.HasSuffix(p.Name, ".lora_A.weight") && !strings.HasSuffix(p.Name, ".lora_B.weight") {
			return nil, nil, fmt.Errorf("%s is not a lora_A/lora_B tensor (modules_to_save?): a GGUF LoRA file holds only lora_a/lora_b pairs", p.Name)
		}
	}
	base := pm.Base.Config
	alpha := float32(c.LoraAlpha)
	var out []*format.Tensor
	for _, ly := range m.layers {
		l := ly.linear
		g, ok := format.HFToGGUFName(l.Name + ".weight")
		if !ok {
			return nil, nil, fmt.Errorf("%s has no llama.cpp tensor name", l.Name)
		}
		if g == "output.weight" && base.TieWordEmbeddings {
			return nil, nil, fmt.Errorf("lm_head is in the adapter, but the base ties it to the embedding, which llama.cpp reads as token_embd: a GGUF LoRA cannot target it")
		}
		A, B := ly.f.A.Value.ToF32(), ly.f.B.Value.ToF32()
		r := A.Shape[0]
		llamaScale := float32(1)
		if alpha != 0 {
			llamaScale = alpha / float32(r)
		}
		bv := B.Data
		if ly.f.Scale != llamaScale {
			k := ly.f.Scale / llamaScale
			bv = make([]float32, len(B.Data))
			for i, v := range B.Data {
				bv[i] = v * k
			}
		}
		if base.RoPE == autograd.RoPEHalf {
			if heads := llama.QKHeads(l.Name+".weight", base); heads > 0 {
				bv = format.UnpermuteQKFromHF(bv, heads, B.Shape[0], B.Shape[1])
			}
		}
		for _, p := range []struct {
			suffix string
			shape  []int
			vals   []float32
		}{{".lora_a", A.Shape, A.Data}, {".lora_b", B.Shape, bv}} {
			d := dt
			if d == format.Q8_0 && p.shape[1]%format.QK != 0 {
				d = format.F16
			}
			t, err := format.TensorAs(g+p.suffix, p.shape, p.vals, d)
			if err != nil {
				return nil, nil, err
			}
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, nil, fmt.Errorf("adapter %q targets no Linear layer", name)
	}
	meta := map[string]any{
		"general.architecture":         "llama",
		"general.type":                 "adapter",
		"adapter.type":                 "lora",
		"adapter.lora.alpha":           alpha,
		"general.quantization_version": uint32(2),
	}
	return meta, out, nil
}

// WriteGGUF writes the adapter name of pm as a GGUF LoRA file (see
// GGUFAdapter), atomically; general.name is title.
func WriteGGUF(pm *peft.Model, name, path, typ, title string) error {
	meta, ts, err := GGUFAdapter(pm, name, typ)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	meta["general.name"] = title
	return format.WriteGGUF(path, meta, ts)
}
