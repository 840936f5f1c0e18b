package prefixtuning

import (
	"strings"
	"testing"

	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
)

// PEFT's golden adapter on stories260K (8 query heads over 4 key/value
// heads: token_dim 32): loss, logits and gradients, then cached decoding
// and padded batches.
func TestGolden(t *testing.T) {
	g := methodtest.LoadGolden(t, "prefix_tuning")
	pm := methodtest.BaseModel(t)
	a, err := pm.LoadAdapter(g.Dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	methodtest.CheckLogits(t, pm.Base, g)
	methodtest.CheckLossAndGrads(t, pm, a, g)
	methodtest.CheckCacheAndPadding(t, pm.Base)
	if err := pm.Merge(); err == nil || !strings.Contains(err.Error(), "cannot be merged") {
		t.Errorf("merge of a prefix adapter: %v", err)
	}
}

func TestUnknownKeyAndSavedLayout(t *testing.T) {
	g := methodtest.LoadGolden(t, "prefix_tuning")
	dir := methodtest.CopyAdapter(t, g.Dir, func(s string) string { return strings.Replace(s, "{", `{"cartridge_hint": null,`, 1) })
	pm := methodtest.BaseModel(t)
	if _, err := pm.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	methodtest.CheckLogits(t, pm.Base, g)
	// Fresh adapters, with and without the projection, save PEFT's layout.
	for _, proj := range []bool{false, true} {
		pm := methodtest.BaseModel(t)
		c := NewConfig()
		c.NumVirtualTokens = 3
		c.PrefixProjection = proj
		if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
			t.Fatal(err)
		}
		same := []string{"num_virtual_tokens", "token_dim", "num_attention_heads", "num_layers", "num_transformer_submodules",
			"encoder_hidden_size", "init_weights", "peft_type", "inference_mode"}
		if !proj {
			same = append(same, "prefix_projection")
		}
		out := methodtest.CheckLayout(t, pm, peft.DefaultAdapter, g, same...)
		// Reloaded (the projection's output as a plain table), it computes
		// what the trained adapter computes.
		pm2 := methodtest.BaseModel(t)
		if _, err := pm2.LoadAdapter(out, "again"); err != nil {
			t.Fatal(err)
		}
		ids := g.Exp.Tokens[1]
		if d := methodtest.MaxAbsDiff(methodtest.Logits(t, pm.Base, ids), methodtest.Logits(t, pm2.Base, ids)); d > 1e-5 {
			t.Errorf("projection %v: saved and reloaded logits differ by %g", proj, d)
		}
	}
}

// Gradients through the prefix into attention, for the table and for the
// projection MLP, on a grouped-query model, in a padded batch.
func TestGradCheck(t *testing.T) {
	for _, proj := range []bool{false, true} {
		pm := methodtest.SmallModel(t)
		c := NewConfig()
		c.NumVirtualTokens = 2
		c.PrefixProjection = proj
		c.EncoderHiddenSize = 5
		c.Seed = 7
		if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
			t.Fatal(err)
		}
		methodtest.GradCheck(t, pm)
	}
}

// With the projection, init_weights "zero" zeroes the MLP's output: the
// prefix keys and values are all 0.
func TestZeroInit(t *testing.T) {
	zero := "zero"
	for _, proj := range []bool{false, true} {
		pm := methodtest.SmallModel(t)
		c := NewConfig()
		c.NumVirtualTokens = 2
		c.PrefixProjection = proj
		c.InitWeights = &zero
		m := New(c)
		if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
			t.Fatal(err)
		}
		ps, err := m.SavedParams()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range ps[0].Var.Value.Data {
			if v != 0 {
				t.Fatalf("projection %v: init_weights zero gives a non-zero prefix", proj)
			}
		}
	}
}

func TestBadInput(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"num_virtual_tokens": 0}`, "num_virtual_tokens is 0"},
		{`{"init_weights": "one"}`, "init_weights"},
	} {
		cfg := NewConfig()
		if err := peft.DecodeConfig([]byte(c.json), cfg, "adapter_config.json", false); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.json, err, c.want)
		}
	}
	attach := func(c *Config) error {
		_, err := methodtest.SmallModel(t).AddAdapter(peft.DefaultAdapter, New(c))
		return err
	}
	c := NewConfig()
	c.NumVirtualTokens = 32 // the small model's context is 32
	if err := attach(c); err == nil || !strings.Contains(err.Error(), "num_virtual_tokens is 32") || !strings.Contains(err.Error(), "max_position_embeddings") {
		t.Errorf("prefix as long as the context: %v", err)
	}
	g := methodtest.LoadGolden(t, "prefix_tuning")
	for _, e := range []struct{ from, to, want string }{
		{`"num_layers": 5`, `"num_layers": 4`, "num_layers is 4: the model's num_hidden_layers is 5"},
		{`"token_dim": 32`, `"token_dim": 64`, "token_dim is 64: the model's num_key_value_heads·head_dim is 32"},
		{`"num_attention_heads": 4`, `"num_attention_heads": 8`, "num_attention_heads is 8: the model's num_key_value_heads is 4"},
		{`"num_virtual_tokens": 3`, `"num_virtual_tokens": 2`, "prompt_embeddings has shape [3 320], this base model needs [2 320]"},
	} {
		dir := methodtest.CopyAdapter(t, g.Dir, func(s string) string { return strings.Replace(s, e.from, e.to, 1) })
		_, err := methodtest.BaseModel(t).LoadAdapter(dir, peft.DefaultAdapter)
		if err == nil || !strings.Contains(err.Error(), e.want) {
			t.Errorf("%s: %v, want %q", e.to, err, e.want)
		}
	}
}
