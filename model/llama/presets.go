package llama

import (
	"fmt"
	"sort"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/tensor"
)

// Presets are published model shapes, for benchmarks with random weights.
var Presets = map[string]Config{
	"stories15M":     preset(288, 768, 6, 6, 6, 32000, 256),
	"stories42M":     preset(512, 1376, 8, 8, 8, 32000, 1024),
	"stories110M":    preset(768, 2048, 12, 12, 12, 32000, 1024),
	"smollm-135M":    preset(576, 1536, 30, 9, 3, 49152, 2048),
	"tinyllama-1.1B": untied(preset(2048, 5632, 22, 32, 4, 32000, 2048)),
}

// untied gives c its own LM head, as TinyLlama's config has it
// (tie_word_embeddings false: 1.10 B parameters, not 1.03 B); llama2.c's
// stories models and SmolLM share the embedding.
func untied(c Config) Config {
	c.TieWordEmbeddings = false
	return c
}

func preset(dim, hidden, layers, heads, kv, vocab, seq int) Config {
	return Config{HiddenSize: dim, IntermediateSize: hidden, NumHiddenLayers: layers, NumAttentionHeads: heads,
		NumKeyValueHeads: kv, VocabSize: vocab, MaxPositionEmbeddings: seq, RMSNormEps: 1e-5, RopeTheta: 10000,
		TieWordEmbeddings: true, BOSTokenID: 1, EOSTokenID: 2, RoPE: autograd.RoPEHalf}
}

// PresetNames lists the presets in order.
func PresetNames() []string {
	ns := make([]string, 0, len(Presets))
	for n := range Presets {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// NewPreset builds a model of a preset's shape with seeded random weights:
// N(0, 0.02) matrices and unit norms, as GPT-style initialisation does.
func NewPreset(name string, seed uint64) (*Model, error) {
	cfg, err := PresetConfig(name)
	if err != nil {
		return nil, err
	}
	return NewRandom(cfg, seed)
}

// PresetConfig is a preset's configuration.
func PresetConfig(name string) (Config, error) {
	cfg, ok := Presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q (known: %v)", name, PresetNames())
	}
	return cfg, nil
}

// NewPresetWith is NewPreset holding the weights as opt says (bf16,
// quantized), converted tensor by tensor as they are drawn: the same
// values as NewPreset's, without ever holding the whole float32 model.
func NewPresetWith(name string, seed uint64, opt LoadOptions) (*Model, error) {
	cfg, err := PresetConfig(name)
	if err != nil {
		return nil, err
	}
	return NewRandomWith(cfg, seed, opt)
}

// NewRandom builds a model of any config with seeded random weights.
func NewRandom(cfg Config, seed uint64) (*Model, error) {
	return NewRandomWith(cfg, seed, LoadOptions{})
}

// NewRandomWith is NewRandom with the storage of LoadOptions: a matrix to
// be held in bf16 or quantized is drawn into one reused float32 buffer and
// converted from there.
func NewRandomWith(cfg Config, seed uint64, opt LoadOptions) (*Model, error) {
	if err := checkQuantOptions(opt); err != nil {
		return nil, err
	}
	g := tensor.NewRNG(seed)
	ts := map[string]*tensor.Tensor{}
	shapes := cfg.Shapes()
	var scratch []float32
	for _, name := range sortedKeys(shapes) {
		shape := shapes[name]
		if len(shape) == 1 {
			t := tensor.New(shape...)
			for i := range t.Data {
				t.Data[i] = 1
			}
			ts[name] = t
			continue
		}
		quantize := opt.Quant != "" && IsDecoderLinear(name)
		// Each matrix leaves the heap as it is made (weightsOffHeap), so
		// that the next one reuses the heap copy's memory.
		if !quantize && !opt.BF16 {
			ts[name] = tensor.New(shape...).Normal(g, 0, 0.02).OffHeap()
			continue
		}
		n := tensor.Numel(shape)
		if cap(scratch) < n {
			scratch = make([]float32, n)
		}
		t := tensor.FromData(scratch[:n], shape...).Normal(g, 0, 0.02)
		if !quantize {
			ts[name] = t.ToBF16().OffHeap()
			continue
		}
		q, err := quantizeOnLoad(name, t, opt)
		if err != nil {
			return nil, err
		}
		ts[name] = q.OffHeap()
	}
	return New(cfg, ts, "preset")
}
