package llama

import (
	"fmt"
	"sort"

	"github.com/gopeft/gopeft/tensor"
)

// Presets are published model shapes, for benchmarks with random weights.
var Presets = map[string]Config{
	"stories15M":     preset(288, 768, 6, 6, 6, 32000, 256),
	"stories42M":     preset(512, 1376, 8, 8, 8, 32000, 1024),
	"stories110M":    preset(768, 2048, 12, 12, 12, 32000, 1024),
	"smollm-135M":    preset(576, 1536, 30, 9, 3, 49152, 2048),
	"tinyllama-1.1B": preset(2048, 5632, 22, 32, 4, 32000, 2048),
}

func preset(dim, hidden, layers, heads, kv, vocab, seq int) Config {
	return Config{HiddenSize: dim, IntermediateSize: hidden, NumHiddenLayers: layers, NumAttentionHeads: heads,
		NumKeyValueHeads: kv, VocabSize: vocab, MaxPositionEmbeddings: seq, RMSNormEps: 1e-5, RopeTheta: 10000,
		TieWordEmbeddings: true, BOSTokenID: 1, EOSTokenID: 2}
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

// NewRandom builds a model of any config with seeded random weights.
func NewRandom(cfg Config, seed uint64) (*Model, error) {
	g := tensor.NewRNG(seed)
	ts := map[string]*tensor.Tensor{}
	shapes := cfg.Shapes()
	for _, name := range sortedKeys(shapes) {
		t := tensor.New(shapes[name]...)
		if len(t.Shape) == 1 {
			for i := range t.Data {
				t.Data[i] = 1
			}
		} else {
			t.Normal(g, 0, 0.02)
		}
		ts[name] = t
	}
	return New(cfg, ts, "preset")
}
