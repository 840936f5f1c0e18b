package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
)

func readConfig(t *testing.T, dir string) map[string]any {
	t.Helper()
	var cfg map[string]any
	b, err := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The LoRA family from the command line: --method DORA and --method LORA
// --use-dora write the same PEFT file (peft_type LORA, use_dora true, the
// magnitudes); AdaLoRA trains with its flags, writes rank_pattern and
// refuses to start without total_step, naming the flag.
func TestTrainLoRAFamily(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	dir := t.TempDir()
	common := []string{"--model", model, "--data", text, "--format", "text", "--seq-len", "32", "--limit", "8", "--steps", "3", "--batch", "2"}
	for _, args := range [][]string{{"--method", "dora"}, {"--method", "lora", "--use-dora"}} {
		out := filepath.Join(dir, strings.Join(args, ""))
		if _, err := run(t, append(append([]string{"train", "--rank", "2", "--targets", "q_proj,gate_proj", "--output", out}, args...), common...)...); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		cfg := readConfig(t, out)
		if cfg["peft_type"] != "LORA" || cfg["use_dora"] != true {
			t.Errorf("%v wrote peft_type %v use_dora %v", args, cfg["peft_type"], cfg["use_dora"])
		}
		ts, _, err := format.ReadSafetensors(filepath.Join(out, "adapter_model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if m := ts["base_model.model.model.layers.0.mlp.gate_proj.lora_magnitude_vector"]; m == nil || len(m.Shape) != 1 || m.Shape[0] != 172 {
			t.Errorf("%v: no magnitude vector [172] for gate_proj (%v)", args, m)
		}
		if line, err := run(t, "inspect", "--adapter", out, "--model", model); err != nil || !strings.Contains(line, "lora_magnitude_vector") {
			t.Errorf("inspect --adapter %s: %v\n%s", out, err, line)
		}
	}
	mustFail(t, append([]string{"train", "--method", "adalora", "--output", filepath.Join(dir, "nototal")}, common...), "--total-step", "total_step")
	mustFail(t, append([]string{"train", "--method", "adalora", "--use-dora", "--total-step", "3", "--output", filepath.Join(dir, "x")}, common...), "--use-dora is not a setting of method ADALORA")
	out := filepath.Join(dir, "adalora")
	if _, err := run(t, append([]string{"train", "--method", "adalora", "--init-r", "4", "--target-r", "2", "--tinit", "0", "--tfinal", "1",
		"--total-step", "3", "--targets", "all-linear", "--output", out}, common...)...); err != nil {
		t.Fatal(err)
	}
	cfg := readConfig(t, out)
	if cfg["peft_type"] != "ADALORA" || cfg["init_r"] != float64(4) || cfg["rank_pattern"] == nil {
		t.Errorf("adalora wrote peft_type %v init_r %v rank_pattern %v", cfg["peft_type"], cfg["init_r"], cfg["rank_pattern"])
	}
	ranks := 0
	for _, keep := range cfg["rank_pattern"].(map[string]any) {
		for _, k := range keep.([]any) {
			if k == true {
				ranks++
			}
		}
	}
	if ranks != 2*7*5 {
		t.Errorf("the final rank_pattern keeps %d ranks, want target_r × 35 matrices = 70", ranks)
	}
	if _, err := run(t, "inspect", "--adapter", out, "--model", model); err != nil {
		t.Errorf("inspect the AdaLoRA adapter: %v", err)
	}
}
