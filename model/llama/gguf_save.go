package llama

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
)

// GGUFTypes are the file types SaveGGUF writes, by llama.cpp's names
// (convert_hf_to_gguf.py --outtype, llama-quantize's Q4_0).
var GGUFTypes = []string{"f32", "f16", "bf16", "q8_0", "q4_0"}

// ggufFileType is general.file_type (gguf-py's LlamaFileType: ALL_F32 0,
// MOSTLY_F16 1, MOSTLY_Q4_0 2, MOSTLY_Q8_0 7, MOSTLY_BF16 32) and the
// dtype of the tensors the type quantizes.
var ggufFileType = map[string]struct {
	id    uint32
	dtype format.DType
}{
	"f32": {0, format.F32}, "f16": {1, format.F16}, "q4_0": {2, format.Q4_0},
	"q8_0": {7, format.Q8_0}, "bf16": {32, format.BF16},
}

// ggufQuantVersion is general.quantization_version (gguf-py's
// GGML_QUANT_VERSION).
const ggufQuantVersion = uint32(2)

// GGUFOptions says how SaveGGUF writes a model.
type GGUFOptions struct {
	// Type is one of GGUFTypes.
	Type string
	// Vocab is the tokenizer's metadata (tokenizer.ggml.*), written as
	// given; llama.cpp needs it to run the model.
	Vocab map[string]any
	// Name is general.name (default: the output file's name without .gguf).
	Name string
}

// GGUFTensorType is the storage type SaveGGUF gives a tensor of the given
// GGUF name and row-major shape for a file type, following llama.cpp:
//
//   - 1-D tensors and *_norm.weight stay F32 (convert_hf_to_gguf.py,
//     ModelBase.prepare_tensors: "n_dims <= 1 or _norm.weight" → F32).
//   - f32, f16, bf16 and q8_0 give every other tensor that type, token_embd
//     and output included (prepare_tensors only treats them apart for the
//     TQ types).
//   - q4_0 is llama-quantize's LLAMA_FTYPE_MOSTLY_Q4_0
//     (llama-quant.cpp, llama_tensor_get_type_impl): token_embd stays Q4_0,
//     but output.weight — and token_embd when it is also the output (tied
//     embeddings) — is raised: to Q8_0 when its rows do not divide into
//     Q4_0's blocks, else to Q6_K. This package does not write K-quants, so
//     it writes Q8_0 there too: more precise than Q6_K, and the type
//     llama-quantize itself uses for such rows.
//   - A row that is not whole blocks of 32 falls back to F16, as
//     convert_hf_to_gguf.py does on gguf-py's QuantError ("falling back to
//     F16"). (llama-quantize would refuse such a tensor for Q4_0:
//     tensor_type_fallback has no fallback for it.)
func GGUFTensorType(name string, shape []int, typ string, tied bool) (format.DType, error) {
	ft, ok := ggufFileType[typ]
	if !ok {
		return "", fmt.Errorf("unknown GGUF type %q (want one of %s)", typ, strings.Join(GGUFTypes, ", "))
	}
	if len(shape) <= 1 || strings.HasSuffix(name, "_norm.weight") {
		return format.F32, nil
	}
	dt := ft.dtype
	if typ == "q4_0" && (name == "output.weight" || (tied && name == "token_embd.weight")) {
		dt = format.Q8_0
	}
	if (dt == format.Q8_0 || dt == format.Q4_0) && shape[len(shape)-1]%format.QK != 0 {
		dt = format.F16
	}
	return dt, nil
}

// LlamaGGUFMetadata is the llama-architecture metadata of a model as
// convert_hf_to_gguf.py writes it (TextModel.set_gguf_parameters and
// LlamaModel.set_gguf_parameters, gguf-py's key names and value types),
// without the tokenizer's keys.
func (m *Model) LlamaGGUFMetadata() map[string]any {
	c := m.Config
	return map[string]any{
		"general.architecture":                   "llama",
		"llama.block_count":                      uint32(c.NumHiddenLayers),
		"llama.context_length":                   uint32(c.MaxPositionEmbeddings),
		"llama.embedding_length":                 uint32(c.HiddenSize),
		"llama.feed_forward_length":              uint32(c.IntermediateSize),
		"llama.attention.head_count":             uint32(c.NumAttentionHeads),
		"llama.attention.head_count_kv":          uint32(c.NumKeyValueHeads),
		"llama.rope.freq_base":                   float32(c.RopeTheta),
		"llama.attention.layer_norm_rms_epsilon": float32(c.RMSNormEps),
		"llama.vocab_size":                       uint32(c.VocabSize),
		"llama.rope.dimension_count":             uint32(c.HeadSize()),
	}
}

// checkGGUF refuses what the llama architecture of llama.cpp (and this
// package's GGUF loader) would read as another model.
func (m *Model) checkGGUF() error {
	c := m.Config
	switch {
	case c.HeadSize()*c.NumAttentionHeads != c.HiddenSize:
		return fmt.Errorf("head_dim %d × %d heads is not hidden_size %d: GGUF export writes only hidden/heads heads", c.HeadSize(), c.NumAttentionHeads, c.HiddenSize)
	case c.RopeScaling != nil:
		return fmt.Errorf("rope_scaling %q is not written to GGUF yet", c.RopeScaling.Type)
	}
	for _, b := range m.Layers {
		for _, l := range b.Linears() {
			if l.Bias != nil {
				return fmt.Errorf("%s has a bias (a merged SSF or BitFit adapter?), which llama GGUF files do not carry here", l.Name)
			}
		}
	}
	return nil
}

// GGUFTensors returns the model's weights under llama.cpp's names, in
// llama.cpp's q/k row order, stored as GGUFTensorType says for typ.
// Quantized (bitsandbytes) and bf16 weights are decoded to float32 first.
//
// llama.cpp keeps the interleaved-pair RoPE order of the original Meta
// checkpoints: convert_hf_to_gguf.py's LlamaModel.permute turns a Hugging
// Face q_proj (n_head heads) and k_proj (n_head_kv heads) back into it. A
// model that rotates halves (every loaded model: llama2.c and GGUF files'
// rows are permuted to Hugging Face's order on load) gets that
// permutation; one built in code with adjacent pairs is written as it is.
func (m *Model) GGUFTensors(typ string) ([]*format.Tensor, error) {
	if err := m.checkGGUF(); err != nil {
		return nil, err
	}
	c := m.Config
	ts := m.Tensors()
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*format.Tensor
	for _, name := range names {
		g, ok := format.HFToGGUFName(name)
		if !ok {
			return nil, fmt.Errorf("tensor %s has no llama.cpp name", name)
		}
		f := ts[name].ToF32()
		vals, shape := f.Data, f.Shape
		if c.RoPE == autograd.RoPEHalf {
			if heads := QKHeads(name, c); heads > 0 {
				vals = format.UnpermuteQKFromHF(vals, heads, shape[0], shape[1])
			}
		}
		dt, err := GGUFTensorType(g, shape, typ, c.TieWordEmbeddings)
		if err != nil {
			return nil, err
		}
		t, err := format.TensorAs(g, shape, vals, dt)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// SaveGGUF writes the model as a llama-architecture GGUF file that
// llama.cpp runs: the metadata of LlamaGGUFMetadata, general.type "model",
// general.file_type and general.quantization_version, the tokenizer's
// metadata from opt.Vocab, and the tensors of GGUFTensors. A tied model
// has no output.weight (llama.cpp then uses token_embd, as for a Hugging
// Face checkpoint without lm_head.weight). The file is written atomically.
func SaveGGUF(m *Model, path string, opt GGUFOptions) error {
	ft, ok := ggufFileType[opt.Type]
	if !ok {
		return fmt.Errorf("unknown GGUF type %q (want one of %s)", opt.Type, strings.Join(GGUFTypes, ", "))
	}
	if len(opt.Vocab) == 0 {
		return fmt.Errorf("%s: no tokenizer metadata: llama.cpp needs the vocabulary in the file", path)
	}
	tensors, err := m.GGUFTensors(opt.Type)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	meta := m.LlamaGGUFMetadata()
	for _, k := range slices.Sorted(maps.Keys(opt.Vocab)) {
		v := opt.Vocab[k]
		if !strings.HasPrefix(k, "tokenizer.") {
			return fmt.Errorf("%s: vocabulary key %q is not a tokenizer.* key", path, k)
		}
		meta[k] = v
	}
	name := opt.Name
	if name == "" {
		name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	meta["general.type"] = "model"
	meta["general.name"] = name
	meta["general.file_type"] = ft.id
	meta["general.quantization_version"] = ggufQuantVersion
	return format.WriteGGUF(path, meta, tensors)
}
