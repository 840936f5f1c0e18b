package llama

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/tensor"
)

// LoadOptions controls how weights are held in memory.
type LoadOptions struct {
	// BF16 keeps the frozen base's matrices, the embedding included, in
	// bfloat16 (half the memory and traffic; products still accumulate in
	// float32). Norm vectors stay float32. See Model.ToBF16.
	BF16 bool
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
	if strings.HasSuffix(path, ".safetensors") || filepath.Base(path) == format.HFConfigFile {
		return FormatHF, filepath.Dir(path), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	magic := make([]byte, 4)
	if n, _ := f.Read(magic); n == 4 && string(magic) == "GGUF" {
		return FormatGGUF, path, nil
	}
	return FormatLlama2c, path, nil
}

// Load reads a checkpoint in any supported format.
func Load(path string, opt LoadOptions) (*Model, error) {
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
	tensors, err := convertTensors(ts, opt, dir)
	if err != nil {
		return nil, err
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
		RoPE: autograd.RoPEInterleaved,
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
// when asked.
func convertTensors(ts map[string]*format.Tensor, opt LoadOptions, source string) (map[string]*tensor.Tensor, error) {
	out := make(map[string]*tensor.Tensor, len(ts))
	for name, t := range ts {
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
