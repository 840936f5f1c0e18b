// Package llama is the LLaMA-family decoder: configuration, weights, the
// forward pass over padded batches with an optional KV cache, and text
// generation. Module and tensor names follow Hugging Face's LlamaForCausalLM
// so that PEFT target_modules and adapter files map one-to-one.
package llama

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/gopeft/gopeft/autograd"
)

// Config holds the fields of a Hugging Face LLaMA config.json that change
// the computation. Extra keeps every other key as read, so a converted
// model's config.json loses nothing.
type Config struct {
	HiddenSize            int          `json:"hidden_size"`
	IntermediateSize      int          `json:"intermediate_size"`
	NumHiddenLayers       int          `json:"num_hidden_layers"`
	NumAttentionHeads     int          `json:"num_attention_heads"`
	NumKeyValueHeads      int          `json:"num_key_value_heads"`
	HeadDim               int          `json:"head_dim"`
	VocabSize             int          `json:"vocab_size"`
	MaxPositionEmbeddings int          `json:"max_position_embeddings"`
	RMSNormEps            float64      `json:"rms_norm_eps"`
	RopeTheta             float64      `json:"rope_theta"`
	RopeScaling           *RopeScaling `json:"rope_scaling,omitempty"`
	TieWordEmbeddings     bool         `json:"tie_word_embeddings"`
	// AttentionBias and MLPBias give q, k, v, o (and gate, up, down) a
	// bias, as Hugging Face's LlamaConfig does; a merged BitFit writes them.
	AttentionBias bool `json:"attention_bias"`
	MLPBias       bool `json:"mlp_bias"`
	BOSTokenID    int  `json:"bos_token_id"`
	EOSTokenID    int  `json:"eos_token_id"`

	// RoPE is how q and k rows pair up for rotation. Every loaded model
	// rotates halves, as Hugging Face's checkpoints do: the loaders permute
	// llama2.c and GGUF files' adjacent-pair rows on load, so adapters index
	// rows as PEFT's files do. Adjacent pairs are for models built in code.
	// Not a config.json key.
	RoPE autograd.RoPEStyle `json:"-"`
	// Extra holds config.json keys that do not change the computation.
	Extra map[string]json.RawMessage `json:"-"`
}

// RopeScaling is config.json's rope_scaling. Types "linear" and "llama3"
// are supported.
type RopeScaling struct {
	Type                          string  `json:"rope_type"`
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor,omitempty"`
	HighFreqFactor                float64 `json:"high_freq_factor,omitempty"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings,omitempty"`
}

// knownKeys are the config.json keys Config reads.
var knownKeys = map[string]bool{
	"hidden_size": true, "intermediate_size": true, "num_hidden_layers": true,
	"num_attention_heads": true, "num_key_value_heads": true, "head_dim": true,
	"vocab_size": true, "max_position_embeddings": true, "rms_norm_eps": true,
	"rope_theta": true, "rope_scaling": true, "tie_word_embeddings": true,
	"attention_bias": true, "mlp_bias": true,
	"bos_token_id": true, "eos_token_id": true,
}

// ParseConfig reads a Hugging Face config.json. file names the source in
// errors. Missing optional keys take LlamaConfig's defaults.
func ParseConfig(data []byte, file string) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("%s: %w", file, err)
	}
	for _, k := range []string{"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"} {
		if _, ok := raw[k]; !ok {
			return Config{}, fmt.Errorf("%s: missing required key %q", file, k)
		}
	}
	c := Config{RMSNormEps: 1e-6, RopeTheta: 10000, MaxPositionEmbeddings: 2048, BOSTokenID: 1, EOSTokenID: 2, RoPE: autograd.RoPEHalf}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		v := raw[k]
		if !knownKeys[k] {
			if c.Extra == nil {
				c.Extra = map[string]json.RawMessage{}
			}
			c.Extra[k] = v
			continue
		}
		if string(v) == "null" {
			continue
		}
		var err error
		switch k {
		case "rope_scaling":
			err = c.parseRopeScaling(v)
		case "eos_token_id":
			// A list of stop tokens is common (LLaMA-3): the first is EOS.
			var ids []int
			if json.Unmarshal(v, &ids) == nil {
				if len(ids) > 0 {
					c.EOSTokenID = ids[0]
				}
				continue
			}
			err = json.Unmarshal(v, &c.EOSTokenID)
		default:
			err = unmarshalField(&c, k, v)
		}
		if err != nil {
			return Config{}, fmt.Errorf("%s: key %q: %w", file, k, err)
		}
	}
	if _, ok := raw["num_key_value_heads"]; !ok {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", file, err)
	}
	if err := c.checkFile(raw); err != nil {
		return Config{}, fmt.Errorf("%s: %w", file, err)
	}
	return c, nil
}

// supportedModelTypes are the config.json model_type values whose
// computation is LLaMA's. Mistral is LLaMA with an optional sliding
// window, which checkFile requires to cover the whole context.
var supportedModelTypes = map[string]bool{"llama": true, "mistral": true}

// checkFile refuses what config.json may say that this package would
// otherwise compute wrongly without a word: another architecture, another
// activation, a sliding attention window, or ids and lengths no model can
// have (an EOS beyond the vocabulary only never stops generation, and is
// left alone). A missing model_type or hidden_act is taken as LLaMA's.
func (c *Config) checkFile(raw map[string]json.RawMessage) error {
	str := func(key string) (string, bool, error) {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", false, fmt.Errorf("key %q: %w", key, err)
		}
		return s, true, nil
	}
	mt, ok, err := str("model_type")
	if err != nil {
		return err
	}
	if ok && !supportedModelTypes[mt] {
		return fmt.Errorf("key \"model_type\" is %q: only LLaMA-architecture models are supported (model_type %s)", mt, strings.Join(sortedKeys(supportedModelTypes), ", "))
	}
	act, ok, err := str("hidden_act")
	if err != nil {
		return err
	}
	if ok && act != "silu" {
		return fmt.Errorf("key \"hidden_act\" is %q: LLaMA's feed-forward is SwiGLU, only \"silu\" is supported", act)
	}
	if v, ok := raw["sliding_window"]; ok && string(v) != "null" {
		var w int64
		if err := json.Unmarshal(v, &w); err != nil {
			return fmt.Errorf("key \"sliding_window\": %w", err)
		}
		if w < int64(c.MaxPositionEmbeddings) {
			return fmt.Errorf("key \"sliding_window\" is %d, below max_position_embeddings %d: sliding-window attention is not supported", w, c.MaxPositionEmbeddings)
		}
	}
	switch {
	case c.MaxPositionEmbeddings <= 0:
		return fmt.Errorf("key \"max_position_embeddings\" is %d: it must be positive", c.MaxPositionEmbeddings)
	case c.BOSTokenID < 0 || c.BOSTokenID >= c.VocabSize:
		return fmt.Errorf("key \"bos_token_id\" is %d: it must be a token id below vocab_size %d", c.BOSTokenID, c.VocabSize)
	case !isFinite(c.RMSNormEps) || !isFinite(c.RopeTheta):
		return fmt.Errorf("keys \"rms_norm_eps\" %v and \"rope_theta\" %v must be finite", c.RMSNormEps, c.RopeTheta)
	}
	return nil
}

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func unmarshalField(c *Config, key string, v json.RawMessage) error {
	// Decode {key: v} into the struct so json tags pick the field.
	obj := append(append([]byte(`{"`+key+`":`), v...), '}')
	return json.Unmarshal(obj, c)
}

func (c *Config) parseRopeScaling(v json.RawMessage) error {
	var rs struct {
		RopeScaling
		LegacyType string `json:"type"`
	}
	if err := json.Unmarshal(v, &rs); err != nil {
		return err
	}
	if rs.Type == "" {
		rs.Type = rs.LegacyType
	}
	switch rs.Type {
	case "linear", "llama3":
	case "default", "":
		return nil
	default:
		return fmt.Errorf("unsupported rope_scaling type %q (supported: linear, llama3)", rs.Type)
	}
	if rs.Factor <= 0 {
		return fmt.Errorf("rope_scaling factor must be positive, got %v", rs.Factor)
	}
	if rs.Type == "llama3" && (rs.OriginalMaxPositionEmbeddings <= 0 || rs.HighFreqFactor <= rs.LowFreqFactor) {
		return fmt.Errorf("llama3 rope_scaling needs original_max_position_embeddings > 0 and high_freq_factor > low_freq_factor")
	}
	c.RopeScaling = &rs.RopeScaling
	return nil
}

// Validate checks that the sizes describe a buildable model.
func (c *Config) Validate() error {
	switch {
	case c.HiddenSize <= 0 || c.IntermediateSize <= 0 || c.NumHiddenLayers <= 0 || c.VocabSize <= 0:
		return fmt.Errorf("sizes must be positive: hidden_size %d, intermediate_size %d, num_hidden_layers %d, vocab_size %d",
			c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.VocabSize)
	case c.NumAttentionHeads <= 0 || c.NumKeyValueHeads <= 0 || c.NumAttentionHeads%c.NumKeyValueHeads != 0:
		return fmt.Errorf("num_attention_heads %d must be a positive multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads)
	case c.HeadDim == 0 && c.HiddenSize%c.NumAttentionHeads != 0:
		return fmt.Errorf("hidden_size %d is not divisible by num_attention_heads %d", c.HiddenSize, c.NumAttentionHeads)
	case c.HeadDim < 0 || c.HeadDim%2 != 0 || c.headDim()%2 != 0:
		return fmt.Errorf("head_dim %d must be positive and even", c.headDim())
	case c.RMSNormEps <= 0 || c.RopeTheta <= 0:
		return fmt.Errorf("rms_norm_eps %v and rope_theta %v must be positive", c.RMSNormEps, c.RopeTheta)
	}
	return nil
}

func (c *Config) headDim() int {
	if c.HeadDim > 0 {
		return c.HeadDim
	}
	return c.HiddenSize / c.NumAttentionHeads
}

// HeadSize is the per-head width: head_dim when given, else hidden/heads.
func (c *Config) HeadSize() int { return c.headDim() }

// KVDim is the width of the key and value projections.
func (c *Config) KVDim() int { return c.NumKeyValueHeads * c.headDim() }

// QDim is the width of the query projection.
func (c *Config) QDim() int { return c.NumAttentionHeads * c.headDim() }

// JSON renders the config as a Hugging Face config.json, keys sorted,
// Extra keys included.
func (c *Config) JSON() ([]byte, error) {
	m := map[string]any{}
	for k, v := range c.Extra {
		m[k] = v
	}
	m["architectures"] = []string{"LlamaForCausalLM"}
	m["model_type"] = "llama"
	m["hidden_act"] = "silu"
	m["hidden_size"] = c.HiddenSize
	m["intermediate_size"] = c.IntermediateSize
	m["num_hidden_layers"] = c.NumHiddenLayers
	m["num_attention_heads"] = c.NumAttentionHeads
	m["num_key_value_heads"] = c.NumKeyValueHeads
	if c.HeadDim > 0 {
		m["head_dim"] = c.HeadDim
	}
	m["vocab_size"] = c.VocabSize
	m["max_position_embeddings"] = c.MaxPositionEmbeddings
	m["rms_norm_eps"] = c.RMSNormEps
	m["rope_theta"] = c.RopeTheta
	if c.RopeScaling != nil {
		m["rope_scaling"] = c.RopeScaling
	}
	m["tie_word_embeddings"] = c.TieWordEmbeddings
	m["attention_bias"] = c.AttentionBias
	m["mlp_bias"] = c.MLPBias
	m["bos_token_id"] = c.BOSTokenID
	m["eos_token_id"] = c.EOSTokenID
	// encoding/json sorts map keys.
	return json.MarshalIndent(m, "", "  ")
}

// InvFreq returns RoPE's inverse frequencies θ^(−2i/d) for i < d/2, with
// rope_scaling applied as Hugging Face's _compute_llama3_parameters and
// linear scaling do.
func (c *Config) InvFreq() []float64 {
	d := c.headDim()
	inv := make([]float64, d/2)
	for i := range inv {
		inv[i] = 1 / math.Pow(c.RopeTheta, float64(2*i)/float64(d))
	}
	rs := c.RopeScaling
	if rs == nil {
		return inv
	}
	switch rs.Type {
	case "linear":
		for i := range inv {
			inv[i] /= rs.Factor
		}
	case "llama3":
		old := float64(rs.OriginalMaxPositionEmbeddings)
		lowWave, highWave := old/rs.LowFreqFactor, old/rs.HighFreqFactor
		for i, f := range inv {
			wave := 2 * math.Pi / f
			switch {
			case wave < highWave: // high frequency: unchanged
			case wave > lowWave: // low frequency: scaled down
				inv[i] = f / rs.Factor
			default: // in between: interpolate
				smooth := (old/wave - rs.LowFreqFactor) / (rs.HighFreqFactor - rs.LowFreqFactor)
				inv[i] = (1-smooth)*f/rs.Factor + smooth*f
			}
		}
	}
	return inv
}

// sortedKeys lists a map's keys in order, for stable error messages.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
