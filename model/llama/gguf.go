package llama

import (
	"fmt"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
)

// loadGGUF reads a llama-architecture GGUF file. The format package returns
// q/k rows already permuted back to Hugging Face order, so the model rotates
// halves.
func loadGGUF(path string, opt LoadOptions) (*Model, error) {
	f, err := format.ReadGGUF(path)
	if err != nil {
		return nil, err
	}
	arch, err := f.MetaString("general.architecture")
	if err != nil {
		return nil, err
	}
	if arch != "llama" {
		return nil, fmt.Errorf("%s: architecture %q is not supported (only llama)", path, arch)
	}
	ts, unmapped, err := f.HFTensors()
	if err != nil {
		return nil, err
	}
	if len(unmapped) > 0 {
		return nil, fmt.Errorf("%s: tensors without a LLaMA meaning here: %s", path, strings.Join(unmapped, ", "))
	}
	geti := func(key string, def int64, required bool) (int, error) {
		if _, ok := f.Metadata[key]; !ok {
			if required {
				return 0, fmt.Errorf("%s: missing metadata key %s", path, key)
			}
			return int(def), nil
		}
		v, err := f.MetaInt(key)
		if err != nil {
			return 0, err
		}
		if v < 0 || v > 1<<31 {
			return 0, fmt.Errorf("%s: metadata %s = %d out of range", path, key, v)
		}
		return int(v), nil
	}
	getf := func(key string, def float64) (float64, error) {
		if _, ok := f.Metadata[key]; !ok {
			return def, nil
		}
		return f.MetaFloat(key)
	}
	cfg := Config{RoPE: autograd.RoPEHalf}
	for _, k := range []struct {
		dst      *int
		key      string
		def      int64
		required bool
	}{
		{&cfg.HiddenSize, "llama.embedding_length", 0, true},
		{&cfg.IntermediateSize, "llama.feed_forward_length", 0, true},
		{&cfg.NumHiddenLayers, "llama.block_count", 0, true},
		{&cfg.NumAttentionHeads, "llama.attention.head_count", 0, true},
		{&cfg.NumKeyValueHeads, "llama.attention.head_count_kv", -1, false},
		{&cfg.MaxPositionEmbeddings, "llama.context_length", 2048, false},
		{&cfg.BOSTokenID, "tokenizer.ggml.bos_token_id", 1, false},
		{&cfg.EOSTokenID, "tokenizer.ggml.eos_token_id", 2, false},
	} {
		if *k.dst, err = geti(k.key, k.def, k.required); err != nil {
			return nil, err
		}
	}
	if cfg.NumKeyValueHeads < 0 {
		cfg.NumKeyValueHeads = cfg.NumAttentionHeads
	}
	if cfg.RMSNormEps, err = getf("llama.attention.layer_norm_rms_epsilon", 1e-5); err != nil {
		return nil, err
	}
	if cfg.RopeTheta, err = getf("llama.rope.freq_base", 10000); err != nil {
		return nil, err
	}
	emb, ok := ts[NameEmbed]
	if !ok || len(emb.Shape) != 2 {
		return nil, fmt.Errorf("%s: missing tensor token_embd.weight", path)
	}
	cfg.VocabSize = emb.Shape[0]
	_, hasHead := ts[NameLMHead]
	cfg.TieWordEmbeddings = !hasHead
	tensors, err := convertTensors(ts, opt, path)
	if err != nil {
		return nil, err
	}
	return New(cfg, tensors, path)
}
