package llama

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/atomicfile"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/tensor"
)

// SaveHF writes the model as a Hugging Face directory: config.json and
// model.safetensors. q_proj and k_proj rows of a model that rotates adjacent
// pairs (llama2.c) are permuted to rotate-half order, as Hugging Face's
// conversion script does, so the written model computes the same function.
func SaveHF(m *Model, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := m.Config
	cfgJSON, err := cfg.JSON()
	if err != nil {
		return err
	}
	var out []*format.Tensor
	ts := m.Tensors()
	names := make([]string, 0, len(ts))
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t := ts[name]
		if cfg.RoPE == autograd.RoPEInterleaved {
			heads := 0
			switch {
			case isProj(name, "q_proj"):
				heads = cfg.NumAttentionHeads
			case isProj(name, "k_proj"):
				heads = cfg.NumKeyValueHeads
			}
			if heads > 0 {
				f := t.ToF32()
				p := format.PermuteQKForHF(f.Data, heads, f.Shape[0], f.Shape[1])
				t = tensor.FromData(p, f.Shape...)
				if ts[name].DType() == tensor.BF16 {
					t = t.ToBF16()
				}
			}
		}
		out = append(out, toFormat(name, t))
	}
	if err := format.WriteSafetensors(filepath.Join(dir, format.HFSafetensorsFile), out, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, format.HFConfigFile), append(cfgJSON, '\n'))
}

func isProj(name, proj string) bool {
	var i int
	n, _ := fmt.Sscanf(name, "model.layers.%d.self_attn."+proj+".weight", &i)
	return n == 1 && name == layerName(i, "self_attn."+proj+".weight")
}

func toFormat(name string, t *tensor.Tensor) *format.Tensor {
	if t.DType() == tensor.BF16 {
		return format.TensorFromBF16(name, t.Shape, t.Half)
	}
	return format.TensorFromF32(name, t.Shape, t.Data)
}
