package prompttuning

import (
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/tokenizer"
)

// PEFT's golden adapter: 5 virtual tokens; 16 loss terms per sequence (the
// last virtual row predicts BOS), logits of the virtual rows too.
func TestGolden(t *testing.T) {
	g := methodtest.LoadGolden(t, "prompt_tuning")
	pm := methodtest.BaseModel(t)
	a, err := pm.LoadAdapter(g.Dir, peft.DefaultAdapter)
	if err != nil {
		t.Fatal(err)
	}
	methodtest.CheckLogits(t, pm.Base, g)
	methodtest.CheckLossAndGrads(t, pm, a, g)
	methodtest.CheckCacheAndPadding(t, pm.Base)
	if err := pm.Merge(); err == nil || !strings.Contains(err.Error(), "PROMPT_TUNING adapters cannot be merged") {
		t.Errorf("merge of a prompt-tuning adapter: %v", err)
	}
}

func TestUnknownKeyAndSavedLayout(t *testing.T) {
	g := methodtest.LoadGolden(t, "prompt_tuning")
	dir := methodtest.CopyAdapter(t, g.Dir, func(s string) string { return strings.Replace(s, "{", `{"a_new_key": {"x": 1},`, 1) })
	pm := methodtest.BaseModel(t)
	if _, err := pm.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	methodtest.CheckLogits(t, pm.Base, g)

	// A fresh adapter with the golden's settings saves PEFT's layout.
	pm = methodtest.BaseModel(t)
	c := NewConfig()
	c.NumVirtualTokens = 5
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	out := methodtest.CheckLayout(t, pm, peft.DefaultAdapter, g, "num_virtual_tokens", "token_dim", "num_attention_heads",
		"num_layers", "num_transformer_submodules", "prompt_tuning_init", "prompt_tuning_init_text", "peft_type", "inference_mode", "modules_to_save")
	pm2 := methodtest.BaseModel(t)
	if _, err := pm2.LoadAdapter(out, "again"); err != nil {
		t.Fatal(err)
	}
	ids := g.Exp.Tokens[0]
	if d := methodtest.MaxAbsDiff(methodtest.Logits(t, pm.Base, ids), methodtest.Logits(t, pm2.Base, ids)); d != 0 {
		t.Errorf("saved and reloaded: logits differ by %g", d)
	}
}

func TestGradCheck(t *testing.T) {
	pm := methodtest.SmallModel(t)
	c := NewConfig()
	c.NumVirtualTokens = 2
	c.Seed = 4
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	methodtest.GradCheck(t, pm)
}

// TEXT: the init text's ids (BOS first, as Hugging Face's LLaMA tokenizer
// gives them) tiled to n; SAMPLE_VOCAB: rows of the embedding table.
func TestInit(t *testing.T) {
	tokPath := shared.Path(t, "data/models/stories260K/tok512.bin")
	tok, err := tokenizer.Load(tokPath)
	if err != nil {
		t.Fatal(err)
	}
	text := "Once upon a time"
	ids := tokenizer.EncodeSpecial(tok, text, true, false)
	pm := methodtest.BaseModel(t)
	c := NewConfig()
	c.NumVirtualTokens = len(ids) + 2
	c.PromptTuningInit = InitText
	c.PromptTuningInitText = &text
	c.TokenizerNameOrPath = &tokPath
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	m := New(c)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	emb := pm.Base.Embed.Weight.Value
	for i := range c.NumVirtualTokens {
		id := ids[i%len(ids)]
		if methodtest.MaxAbsDiff(m.prompt.Value.Row(i), emb.Row(id)) != 0 {
			t.Errorf("virtual token %d is not the embedding of token %d", i, id)
		}
	}
	// SAMPLE_VOCAB: every row is some token's embedding.
	pm = methodtest.BaseModel(t)
	c = NewConfig()
	c.NumVirtualTokens = 4
	c.PromptTuningInit = InitSampleVocab
	m = New(c)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
		t.Fatal(err)
	}
	emb = pm.Base.Embed.Weight.Value
	for i := range 4 {
		found := false
		for id := range emb.Rows() {
			found = found || methodtest.MaxAbsDiff(m.prompt.Value.Row(i), emb.Row(id)) == 0
		}
		if !found {
			t.Errorf("SAMPLE_VOCAB row %d is no token's embedding", i)
		}
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct{ json, want string }{
		{`{"num_virtual_tokens": 0}`, "num_virtual_tokens is 0"},
		{`{"prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": "hello"}`, "prompt_tuning_init_text"},
		{`{"prompt_tuning_init": "TEXT"}`, "prompt_tuning_init_text"},
		{`{"prompt_tuning_init": "WORDS"}`, "prompt_tuning_init"},
		{`{"num_transformer_submodules": 2}`, "num_transformer_submodules"},
	}
	for _, c := range cases {
		cfg := NewConfig()
		err := peft.DecodeConfig([]byte(c.json), cfg, "adapter_config.json", false)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.json, err, c.want)
		}
	}
	attach := func(c *Config) error {
		_, err := methodtest.SmallModel(t).AddAdapter(peft.DefaultAdapter, New(c))
		return err
	}
	c := NewConfig()
	c.NumVirtualTokens = 40 // the small model's context is 32
	if err := attach(c); err == nil || !strings.Contains(err.Error(), "num_virtual_tokens is 40") || !strings.Contains(err.Error(), "32") {
		t.Errorf("prompt longer than the context: %v", err)
	}
	c = NewConfig()
	c.TokenDim = 64
	if err := attach(c); err == nil || !strings.Contains(err.Error(), "token_dim is 64") || !strings.Contains(err.Error(), "16") {
		t.Errorf("token_dim of another model: %v", err)
	}
	// A file whose tensor does not fit the model: the tensor and both shapes.
	g := methodtest.LoadGolden(t, "prompt_tuning")
	dir := methodtest.CopyAdapter(t, g.Dir, func(s string) string {
		return strings.Replace(s, `"num_virtual_tokens": 5`, `"num_virtual_tokens": 6`, 1)
	})
	_, err := methodtest.BaseModel(t).LoadAdapter(dir, peft.DefaultAdapter)
	if err == nil || !strings.Contains(err.Error(), "prompt_embeddings has shape [5 64]") || !strings.Contains(err.Error(), "[6 64]") {
		t.Errorf("table of another shape: %v", err)
	}
}
