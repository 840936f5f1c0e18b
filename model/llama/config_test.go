package llama

import (
	"strings"
	"testing"
)

// tinyJSON is a valid config.json for a one-layer model; extra is spliced
// into the object.
func tinyJSON(extra string) string {
	return `{"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4` + extra + `}`
}

// TestParseConfigRefusesWhatItWouldComputeWrongly: another architecture or
// activation would run as a SiLU LLaMA without a word; each is refused
// naming its key.
func TestParseConfigRefusesWhatItWouldComputeWrongly(t *testing.T) {
	cases := map[string]string{
		`, "hidden_act": "gelu"`:                                            `"hidden_act" is "gelu"`,
		`, "model_type": "gpt2"`:                                            `"model_type" is "gpt2"`,
		`, "model_type": "mistral", "sliding_window": 16`:                   `"sliding_window"`,
		`, "max_position_embeddings": 0`:                                    `"max_position_embeddings"`,
		`, "bos_token_id": 9`:                                               `"bos_token_id"`,
		`, "hidden_act": 3`:                                                 `"hidden_act"`,
		`, "model_type": "mistral", "sliding_window": "x"`:                  `"sliding_window"`,
		`, "model_type": "llama", "hidden_act": "silu", "bos_token_id": -1`: `"bos_token_id"`,
	}
	for extra, want := range cases {
		_, err := ParseConfig([]byte(tinyJSON(extra)), "config.json")
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "config.json") {
			t.Errorf("ParseConfig(%s) = %v, want an error naming config.json and %s", extra, err, want)
		}
	}
	for _, ok := range []string{"", `, "model_type": "llama", "hidden_act": "silu"`, `, "model_type": "mistral", "sliding_window": null`,
		`, "model_type": "mistral", "sliding_window": 4096, "max_position_embeddings": 4096`} {
		if _, err := ParseConfig([]byte(tinyJSON(ok)), "config.json"); err != nil {
			t.Errorf("ParseConfig(%s): %v", ok, err)
		}
	}
}

// TestNewRefusesConfigLargerThanWeights: a config claiming a billion
// layers beside a small set of weights is refused before anything is
// allocated per layer (this would otherwise grow without bound).
func TestNewRefusesConfigLargerThanWeights(t *testing.T) {
	cfg := smallConfig()
	m, err := NewRandom(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []func(*Config){
		func(c *Config) { c.NumHiddenLayers = 1_000_000_000 },
		func(c *Config) { c.IntermediateSize = 1 << 40; c.NumHiddenLayers = 1 << 40 },
		func(c *Config) { c.VocabSize = 1 << 62 },
	} {
		big := cfg
		c(&big)
		if _, err := New(big, m.Tensors(), "x"); err == nil || !strings.Contains(err.Error(), "weights") && !strings.Contains(err.Error(), "impossibly") {
			t.Errorf("config %+v: %v", big, err)
		}
	}
	if n, ok := cfg.NumParams(); !ok || int(n) != 0+m.numel() {
		t.Errorf("NumParams = %d, %v; the model holds %d", n, ok, m.numel())
	}
}

func (m *Model) numel() int {
	n := 0
	for _, p := range m.Params() {
		n += p.Var.Value.Numel()
	}
	return n
}

// FuzzParseConfig: any bytes give a config that passes Validate and whose
// parameter count is known, or an error; never a panic.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(tinyJSON("")))
	f.Add([]byte(tinyJSON(`, "num_key_value_heads": 1, "rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4, "original_max_position_embeddings": 64}`)))
	f.Add([]byte(tinyJSON(`, "num_hidden_layers": 1000000000, "eos_token_id": [2, 3], "head_dim": 4`)))
	f.Add([]byte(tinyJSON(`, "model_type": "mistral", "sliding_window": 4096, "hidden_act": "silu"`)))
	f.Add([]byte(`{"hidden_size": 1e300}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data, "config.json")
		if err != nil {
			if !strings.Contains(err.Error(), "config.json") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config Validate refuses: %v", err)
		}
		c.NumParams()
		if c.MaxPositionEmbeddings <= 0 || c.BOSTokenID < 0 || c.BOSTokenID >= c.VocabSize {
			t.Fatalf("accepted %+v", c)
		}
	})
}
