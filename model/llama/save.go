package llama

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/atomicfile"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
)

// SaveHF writes the model as a Hugging Face directory: config.json and
// model.safetensors. q_proj and k_proj rows of a model that rotates adjacent
// pairs (one built in code with autograd.RoPEInterleaved; a llama2.c file's
// rows are permuted on load) are permuted to rotate-half order, as Hugging
// Face's conversion script does, so the written model computes the same
// function.
// Quantized weights are written as bitsandbytes stores them (see
// SaveHFWith).
func SaveHF(m *Model, dir string) error { return SaveHFWith(m, dir, SaveOptions{}) }

// SaveOptions says how SaveHFWith stores the weights.
type SaveOptions struct {
	// Quant, when set, quantizes the decoder's Linear weights (as
	// LoadOptions.Quant does) before writing them; DoubleQuant with it.
	Quant       quant.Kind
	DoubleQuant bool
}

// SaveHFWith is SaveHF that can quantize. Quantized weights — the
// model's own or those opt asks for — are written in bitsandbytes'
// layout (format.BnbTensors) with config.json's quantization_config, so
// that transformers (and Load) read the checkpoint as a pre-quantized
// bitsandbytes model. A quantized q_proj/k_proj of a model that rotates
// adjacent pairs is dequantized, permuted to Hugging Face's row order, and quantized again
// (its rows move whole; the codes are recomputed from the dequantized
// values).
func SaveHFWith(m *Model, dir string, opt SaveOptions) error {
	if err := checkQuantOptions(LoadOptions{Quant: opt.Quant, DoubleQuant: opt.DoubleQuant}); err != nil {
		return err
	}
	cfg := m.Config
	kind, double, err := m.quantKind()
	if err != nil {
		return err
	}
	if opt.Quant != quant.KindNone {
		if kind != quant.KindNone && (kind != opt.Quant || double != opt.DoubleQuant) {
			return fmt.Errorf("%s: the model is already quantized (%s); it cannot be written as %s: load it without quantization", dir, m.Quantization(), opt.Quant)
		}
		kind, double = opt.Quant, opt.DoubleQuant
	}
	// A checkpoint read as quantized and since dequantized (a merge) must
	// not keep saying it is.
	cfg.Extra = maps.Clone(cfg.Extra)
	delete(cfg.Extra, "quantization_config")
	if kind != quant.KindNone {
		compute := "float32"
		if m.Embed.Weight.Value.DType() == tensor.BF16 {
			compute = "bfloat16"
		}
		qc, err := json.Marshal(format.BnbQuantizationConfig(string(kind), double, compute))
		if err != nil {
			return err
		}
		if cfg.Extra == nil {
			cfg.Extra = map[string]json.RawMessage{}
		}
		cfg.Extra["quantization_config"] = qc
	}
	ts := m.Tensors()
	cfg.AttentionBias, cfg.MLPBias = m.biases(ts)
	cfgJSON, err := cfg.JSON()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var out []*format.Tensor
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t := ts[name]
		if cfg.RoPE == autograd.RoPEInterleaved {
			if heads := QKHeads(name, cfg); heads > 0 {
				f := t.ToF32()
				cols := 1 // a bias permutes as a one-column matrix
				if len(f.Shape) == 2 {
					cols = f.Shape[1]
				}
				p := format.PermuteQKForHF(f.Data, heads, f.Shape[0], cols)
				t = tensor.FromData(p, f.Shape...)
				if ts[name].DType() == tensor.BF16 {
					t = t.ToBF16()
				}
			}
		}
		if kind != quant.KindNone && IsDecoderLinear(name) && !t.Quantized() {
			q, err := quantizeOnLoad(name, t, LoadOptions{Quant: kind, DoubleQuant: double})
			if err != nil {
				return err
			}
			t = q
		}
		if t.Quantized() {
			bnb, err := format.BnbTensors(strings.TrimSuffix(name, ".weight"), t.Quant)
			if err != nil {
				return err
			}
			out = append(out, bnb...)
			continue
		}
		out = append(out, toFormat(name, t))
	}
	if err := format.WriteSafetensors(filepath.Join(dir, format.HFSafetensorsFile), out, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, format.HFConfigFile), append(cfgJSON, '\n'))
}

// biases says whether the model's attention and MLP Linears have biases
// (a merged SSF adapter gives some layers one) and adds zero biases to ts
// for the others of the same group: Hugging Face's attention_bias and
// mlp_bias give every q, k, v, o (gate, up, down) of every layer one.
func (m *Model) biases(ts map[string]*tensor.Tensor) (attn, mlp bool) {
	for _, b := range m.Layers {
		for j, l := range b.Linears() {
			if l.Bias != nil {
				attn, mlp = attn || j < 4, mlp || j >= 4
			}
		}
	}
	for _, b := range m.Layers {
		for j, l := range b.Linears() {
			if l.Bias == nil && ((j < 4 && attn) || (j >= 4 && mlp)) {
				ts[l.Name+".bias"] = tensor.New(l.Out())
			}
		}
	}
	return attn, mlp
}

// isProj reports whether name is a layer's proj weight or bias.
func isProj(name, proj string) bool {
	var i int
	n, _ := fmt.Sscanf(name, "model.layers.%d.self_attn."+proj+".", &i)
	return n == 1 && (name == layerName(i, "self_attn."+proj+".weight") || name == layerName(i, "self_attn."+proj+".bias"))
}

// quantKind is the quantization of the model's weights (none, or one kind
// for all), from the forms they were made from.
func (m *Model) quantKind() (quant.Kind, bool, error) {
	kind, double, seen := quant.KindNone, false, ""
	for _, p := range m.Params() {
		v := p.Var.Value
		if !v.Quantized() {
			continue
		}
		var k quant.Kind
		var d bool
		switch src := v.Quant.(type) {
		case *quant.Tensor4:
			k, d = quant.Kind(src.Type.String()), src.Nested != nil
		case *quant.Int8:
			k = quant.KindInt8
		default:
			return "", false, fmt.Errorf("%s: a %v weight without its bitsandbytes form cannot be written", p.Name, v.DType())
		}
		if seen != "" && (k != kind || d != double) {
			return "", false, fmt.Errorf("%s is %s (double %v) but %s is %s (double %v): a checkpoint holds one quantization", p.Name, k, d, seen, kind, double)
		}
		kind, double, seen = k, d, p.Name
	}
	return kind, double, nil
}

func toFormat(name string, t *tensor.Tensor) *format.Tensor {
	if t.Quantized() { // formats without 4- or 8-bit Linears (llama2.c) get the values
		t = t.ToF32()
	}
	if t.DType() == tensor.BF16 {
		return format.TensorFromBF16(name, t.Shape, t.Half)
	}
	return format.TensorFromF32(name, t.Shape, t.Data)
}

// SaveLlama2c writes the model as a llama2.c version-0 checkpoint (float32,
// seqLen positions in the header), the format llama2.c's run.c reads.
// Models that rotate halves (Hugging Face) get their q_proj/k_proj rows
// permuted back to llama2.c's adjacent pairs, so the file computes the same
// function. llama2.c fixes what a config may say: head size hidden/heads,
// RoPE θ = 10000 without scaling, RMSNorm ε = 1e-5; other configs are an
// error.
func SaveLlama2c(m *Model, path string, seqLen int) error {
	cfg := m.Config
	hd := cfg.HeadSize()
	plain := autograd.RoPEInvFreq(hd, 10000)
	inv := cfg.InvFreq()
	same := len(inv) == len(plain)
	for i := 0; same && i < len(inv); i++ {
		same = inv[i] == plain[i]
	}
	switch {
	case hd*cfg.NumAttentionHeads != cfg.HiddenSize:
		return fmt.Errorf("%s: llama2.c needs head size hidden/heads, the config has %d × %d for hidden %d", path, hd, cfg.NumAttentionHeads, cfg.HiddenSize)
	case !same:
		return fmt.Errorf("%s: llama2.c rotates with θ = 10000 and no scaling; the config's RoPE differs (rope_theta %v)", path, cfg.RopeTheta)
	case cfg.RMSNormEps != 1e-5:
		return fmt.Errorf("%s: llama2.c normalises with ε = 1e-5, the config has %v", path, cfg.RMSNormEps)
	case seqLen <= 0:
		return fmt.Errorf("%s: sequence length %d must be positive", path, seqLen)
	}
	for _, b := range m.Layers {
		for _, l := range b.Linears() {
			if l.Bias != nil {
				return fmt.Errorf("%s: %s has a bias (a merged SSF adapter?), and llama2.c's format has none: save it as a Hugging Face model", path, l.Name)
			}
		}
	}
	h := format.Llama2cHeader{Dim: cfg.HiddenSize, HiddenDim: cfg.IntermediateSize, NLayers: cfg.NumHiddenLayers,
		NHeads: cfg.NumAttentionHeads, NKVHeads: cfg.NumKeyValueHeads, VocabSize: cfg.VocabSize, SeqLen: seqLen,
		SharedClassifier: cfg.TieWordEmbeddings}
	out := map[string]*format.Tensor{}
	for name, t := range m.Tensors() {
		out[name] = toFormat(name, t)
	}
	if cfg.RoPE == autograd.RoPEHalf {
		if err := format.ConvertQKFromHF(out, cfg.NumHiddenLayers, cfg.NumAttentionHeads, cfg.NumKeyValueHeads); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return format.WriteLlama2c(path, h, out)
}

// QKHeads is the number of heads whose rows the tensor (by its Hugging Face
// name, model.layers.N.self_attn.q_proj.weight) holds when it is a q_proj or
// k_proj weight or bias, and 0 otherwise: what the q/k row permutations
// between llama2.c's, Hugging Face's and llama.cpp's layouts need.
func QKHeads(name string, c Config) int {
	switch {
	case isProj(name, "q_proj"):
		return c.NumAttentionHeads
	case isProj(name, "k_proj"):
		return c.NumKeyValueHeads
	}
	return 0
}
