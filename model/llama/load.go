package llama

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/safefile"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
)

// LoadOptions controls how weights are held in memory.
type LoadOptions struct {
	// BF16 keeps the frozen base's matrices, the embedding included, in
	// bfloat16 (half the memory and traffic; products still accumulate in
	// float32). Norm vectors stay float32. See Model.ToBF16. With Quant
	// nf4/fp4 it is also the 4-bit weights' compute dtype (kernels.Q4.BF16).
	BF16 bool
	// Quant quantizes the decoder's Linear weights as they are read (the
	// embedding, the norms and the LM head are left as BF16 says): 4-bit
	// NF4 or FP4 in blocks of 64, or LLM.int8 row-wise int8, bit for bit
	// as bitsandbytes quantizes them (see package quant). The products
	// read them in that form (tensor.Q4, tensor.Q8); nothing trains them.
	Quant quant.Kind
	// DoubleQuant quantizes the 4-bit absmax values too (QLoRA's double
	// quantization).
	DoubleQuant bool
}

// Format names a checkpoint layout.
type Format string

const (
	FormatHF      Format = "hf"      // directory with config.json and safetensors
	FormatLlama2c Format = "llama2c" // llama2.c .bin
	FormatGGUF    Format = "gguf"    // GGUF file
)

// DetectFormat chooses the loader by looking at the path: a directory (or a
// file inside one) with config.json is Hugging Face, a file starting with
// the GGUF magic is GGUF, anything else is read as llama2.c.
func DetectFormat(path string) (Format, string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", "", err
	}
	if st.IsDir() {
		if _, err := os.Stat(filepath.Join(path, format.HFConfigFile)); err != nil {
			return "", "", fmt.Errorf("%s: a directory without %s is not a Hugging Face model", path, format.HFConfigFile)
		}
		return FormatHF, path, nil
	}
	// A device such as /dev/zero never ends: reading it whole would take
	// all memory. An empty file is no checkpoint of any format, and saying
	// so beats the error of whichever reader its name picks.
	if _, err := safefile.CheckRegular(path); err != nil {
		return "", "", fmt.Errorf("%w; give a checkpoint file or a model directory", err)
	}
	if st.Size() == 0 {
		return "", "", fmt.Errorf("%s: the file is empty (0 bytes), not a checkpoint", path)
	}
	if strings.HasSuffix(path, ".safetensors") || filepath.Base(path) == format.HFConfigFile {
		dir := filepath.Dir(path)
		if _, err := os.Stat(filepath.Join(dir, format.HFConfigFile)); err != nil {
			return "", "", fmt.Errorf("%s: a Hugging Face model needs %s beside its weights, and %s has none; give the model directory",
				path, format.HFConfigFile, dir)
		}
		return FormatHF, dir, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	magic := make([]byte, 4)
	n, _ := io.ReadFull(f, magic)
	magic = magic[:n]
	if string(magic) == "GGUF" {
		return FormatGGUF, path, nil
	}
	if err := refuseMagic(path, magic); err != nil {
		return "", "", err
	}
	return FormatLlama2c, path, nil
}

// refuseMagic recognises files that are not llama2.c checkpoints by their
// first bytes (or a .gguf name), so that they are not parsed as a llama2.c
// header and reported with nonsense sizes. llama2.c files have no magic:
// anything else is left to that reader.
func refuseMagic(path string, magic []byte) error {
	switch string(magic) {
	case "lmgg", "fmgg", "tjgg": // GGML, GGMF, GGJT written little-endian
		return fmt.Errorf("%s: a legacy GGML file (magic %q); convert it to GGUF with llama.cpp", path, magic)
	case "PK\x03\x04":
		return fmt.Errorf("%s: a zip archive (a PyTorch .pt/.bin checkpoint?); convert it to safetensors or GGUF", path)
	}
	if strings.EqualFold(filepath.Ext(path), ".gguf") {
		return fmt.Errorf("%s: not a GGUF file: it starts with %q, a GGUF file with \"GGUF\"", path, magic)
	}
	return nil
}

// Load reads a checkpoint in any supported format.
func Load(path string, opt LoadOptions) (*Model, error) {
	if err := checkQuantOptions(opt); err != nil {
		return nil, err
	}
	f, p, err := DetectFormat(path)
	if err != nil {
		return nil, err
	}
	switch f {
	case FormatHF:
		return loadHF(p, opt)
	case FormatGGUF:
		return loadGGUF(p, opt)
	default:
		return loadLlama2c(p, opt)
	}
}

func loadHF(dir string, opt LoadOptions) (*Model, error) {
	raw, ts, err := format.ReadHFDir(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := ParseConfig(raw, filepath.Join(dir, format.HFConfigFile))
	if err != nil {
		return nil, err
	}
	cfg.RoPE = autograd.RoPEHalf
	quantized, err := bnbWeights(dir, raw, ts, opt)
	if err != nil {
		return nil, err
	}
	tensors, err := convertTensors(ts, opt, dir)
	if err != nil {
		return nil, err
	}
	for name, t := range quantized {
		tensors[name] = t
	}
	return New(cfg, tensors, dir)
}

func loadLlama2c(path string, opt LoadOptions) (*Model, error) {
	hdr, ts, err := format.ReadLlama2c(path)
	if err != nil {
		return nil, err
	}
	cfg := Config{
		HiddenSize: hdr.Dim, IntermediateSize: hdr.HiddenDim, NumHiddenLayers: hdr.NLayers,
		NumAttentionHeads: hdr.NHeads, NumKeyValueHeads: hdr.NKVHeads, VocabSize: hdr.VocabSize,
		MaxPositionEmbeddings: hdr.SeqLen, RMSNormEps: 1e-5, RopeTheta: 10000,
		TieWordEmbeddings: hdr.SharedClassifier, BOSTokenID: 1, EOSTokenID: 2,
		RoPE: autograd.RoPEHalf,
	}
	// The file holds q/k rows in interleaved-pair order. They are put in
	// Hugging Face's order here, as the GGUF loader does, so that a model
	// has one layout whatever file it came from: an adapter trained on a
	// llama2.c checkpoint is then in PEFT's layout and applies unchanged to
	// the checkpoint's Hugging Face conversion (lora_B rows, biases, IA³ and
	// SSF vectors, sparse deltas' indices, prefix keys all follow q/k's rows).
	if err := format.ConvertQKToHFInPlace(ts, hdr.NLayers, hdr.NHeads, hdr.NKVHeads); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	tensors, err := convertTensors(ts, opt, path)
	if err != nil {
		return nil, err
	}
	m, err := New(cfg, tensors, path)
	if err != nil {
		return nil, err
	}
	m.StopAtBOS = true
	return m, nil
}

// convertTensors decodes stored tensors to float32, or to bf16 for matrices
// when asked, and quantizes the decoder's Linear weights when asked.
func convertTensors(ts map[string]*format.Tensor, opt LoadOptions, source string) (map[string]*tensor.Tensor, error) {
	out := make(map[string]*tensor.Tensor, len(ts))
	for _, name := range slices.Sorted(maps.Keys(ts)) {
		t := ts[name]
		if opt.Quant != quant.KindNone && IsDecoderLinear(name) && len(t.Shape) == 2 {
			// The quant state records the dtype quantized from, as
			// bitsandbytes does: bf16 stays bf16 until then.
			var w *tensor.Tensor
			if t.DType == format.BF16 {
				h, err := t.BF16()
				if err != nil {
					return nil, fmt.Errorf("%s: tensor %s: %w", source, name, err)
				}
				w = tensor.FromBF16(h, t.Shape...)
			} else {
				d, err := t.Float32()
				if err != nil {
					return nil, fmt.Errorf("%s: tensor %s: %w", source, name, err)
				}
				w = tensor.FromData(d, t.Shape...)
			}
			var err error
			if out[name], err = quantizeOnLoad(name, w, opt); err != nil {
				return nil, fmt.Errorf("%s: %w", source, err)
			}
			continue
		}
		if opt.BF16 && len(t.Shape) == 2 {
			h, err := t.BF16()
			if err != nil {
				return nil, fmt.Errorf("%s: tensor %s: %w", source, name, err)
			}
			out[name] = tensor.FromBF16(h, t.Shape...)
			continue
		}
		d, err := t.Float32()
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s: %w", source, name, err)
		}
		out[name] = tensor.FromData(d, t.Shape...)
	}
	return out, nil
}
