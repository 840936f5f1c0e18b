package ptuning

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
	_ "github.com/gopeft/gopeft/peft/prompttuning" // registers PROMPT_TUNING for the comparison
	"github.com/gopeft/gopeft/tensor"
)

func TestGradCheck(t *testing.T) {
	pm := methodtest.SmallModel(t)
	c := NewConfig()
	c.NumVirtualTokens = 2
	c.EncoderHiddenSize = 6
	c.Seed = 2
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	methodtest.GradCheck(t, pm)
}

// What gopeft writes has PEFT's keys and the one tensor; loaded back (as
// PEFT loads it, the table without the encoder) it computes what the
// trained encoder computes, and exactly what prompt tuning computes with
// the same table.
func TestSaveLoadLayout(t *testing.T) {
	pm := methodtest.SmallModel(t)
	c := NewConfig()
	c.NumVirtualTokens = 3
	c.Seed = 1
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(c)); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[SaveName] == nil || ts[SaveName].Shape[0] != 3 || ts[SaveName].Shape[1] != 16 {
		t.Fatalf("saved tensors %v, want prompt_embeddings [3 16]", ts)
	}
	var cfg map[string]any
	methodtest.ReadJSON(t, filepath.Join(dir, peft.ConfigFile), &cfg)
	var keys []string
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := "auto_mapping base_model_name_or_path encoder_dropout encoder_hidden_size encoder_num_layers encoder_reparameterization_type inference_mode modules_to_save num_attention_heads num_layers num_transformer_submodules num_virtual_tokens peft_type revision task_type token_dim"
	if strings.Join(keys, " ") != want {
		t.Errorf("config keys\n %s\nwant (PromptEncoderConfig's)\n %s", strings.Join(keys, " "), want)
	}
	ids := []int{1, 4, 7, 3}
	trained := methodtest.Logits(t, pm.Base, ids)
	pm2 := methodtest.SmallModel(t)
	if _, err := pm2.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(trained, methodtest.Logits(t, pm2.Base, ids)); d > 1e-6 {
		t.Errorf("reloaded logits differ by %g", d)
	}
	// The same table as a PROMPT_TUNING file.
	pt := t.TempDir()
	os.WriteFile(filepath.Join(pt, peft.ConfigFile), []byte(`{"peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 3, "inference_mode": true}`), 0o644)
	w, _ := os.ReadFile(filepath.Join(dir, peft.WeightsFile))
	os.WriteFile(filepath.Join(pt, peft.WeightsFile), w, 0o644)
	pm3 := methodtest.SmallModel(t)
	if _, err := pm3.LoadAdapter(pt, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(trained, methodtest.Logits(t, pm3.Base, ids)); d != 0 {
		t.Errorf("P-tuning and prompt tuning with one table differ by %g", d)
	}
	methodtest.CheckCacheAndPadding(t, pm2.Base)
	// A file holds the table, so loading builds no encoder, even where the
	// config says inference_mode false: encoder_hidden_size = 2⁴⁰ (which
	// nothing in the file checks) once asked for terabytes.
	cfg["inference_mode"], cfg["encoder_hidden_size"] = false, 1<<40
	b, _ := json.Marshal(cfg)
	os.WriteFile(filepath.Join(dir, peft.ConfigFile), b, 0o644)
	pm4 := methodtest.SmallModel(t)
	if _, err := pm4.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	if d := methodtest.MaxAbsDiff(trained, methodtest.Logits(t, pm4.Base, ids)); d > 1e-6 {
		t.Errorf("reloaded with inference_mode false, logits differ by %g", d)
	}
}

// A file written as PEFT writes P_TUNING (an LSTM encoder's, with a key
// this version does not know) loads.
func TestLoadsPEFTFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, peft.ConfigFile), []byte(`{"auto_mapping": null, "base_model_name_or_path": "x",
 "encoder_dropout": 0.0, "encoder_hidden_size": 16, "encoder_num_layers": 2, "encoder_reparameterization_type": "LSTM",
 "inference_mode": true, "modules_to_save": null, "num_attention_heads": 4, "num_layers": 2, "num_transformer_submodules": 1,
 "num_virtual_tokens": 4, "peft_type": "P_TUNING", "peft_version": "0.20.1", "revision": null, "task_type": "CAUSAL_LM",
 "token_dim": 16, "future_key": true}`), 0o644)
	v := tensor.New(4, 16).Normal(tensor.NewRNG(1), 0, 1)
	if err := format.WriteSafetensors(filepath.Join(dir, peft.WeightsFile), []*format.Tensor{format.TensorFromF32(SaveName, v.Shape, v.Data)}, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	pm := methodtest.SmallModel(t)
	if _, err := pm.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
		t.Fatal(err)
	}
	// Training an LSTM encoder is refused by name.
	c := NewConfig()
	c.EncoderReparameterizationType = "LSTM"
	if _, err := methodtest.SmallModel(t).AddAdapter(peft.DefaultAdapter, New(c)); err == nil || !strings.Contains(err.Error(), "encoder_reparameterization_type") {
		t.Errorf("LSTM training: %v", err)
	}
}
