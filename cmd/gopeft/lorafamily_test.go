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

	// Adapter arithmetic: two LoRA adapters combine into one that loads
	// onto the base; a DoRA adapter is refused naming its magnitudes.
	lora1, lora2 := filepath.Join(dir, "l1"), filepath.Join(dir, "l2")
	for i, out := range []string{lora1, lora2} {
		if _, err := run(t, append([]string{"train", "--rank", "2", "--seed", itoa(i + 1), "--output", out}, common...)...); err != nil {
			t.Fatal(err)
		}
	}
	comb := filepath.Join(dir, "comb")
	if _, err := run(t, "merge", "--adapters", lora1+":0.5,"+lora2+":-0.5", "--combination", "cat", "--model", model, "--output", comb); err != nil {
		t.Fatal(err)
	}
	if cfg := readConfig(t, comb); cfg["r"] != float64(4) || cfg["lora_alpha"] != float64(4) {
		t.Errorf("cat of two rank-2 adapters wrote r %v lora_alpha %v, want 4 and 4", cfg["r"], cfg["lora_alpha"])
	}
	mustFail(t, []string{"merge", "--adapters", lora1 + ":0.5," + filepath.Join(dir, "--methoddora") + ":0.5", "--combination", "linear", "--output", filepath.Join(dir, "c2")}, "DoRA", "lora_magnitude_vector")
	mustFail(t, []string{"merge", "--adapters", lora1 + "," + out, "--combination", "linear", "--output", filepath.Join(dir, "c3")}, "ADALORA")
	mustFail(t, []string{"merge", "--adapters", lora1 + "," + lora2, "--combination", "ties", "--density", "-1", "--output", filepath.Join(dir, "c4")}, "density")

	// DyLoRA: eval at every rank in one command; generate with two adapters.
	dy := filepath.Join(dir, "dylora")
	if _, err := run(t, append([]string{"train", "--method", "dylora", "--r-max", "3", "--output", dy}, common...)...); err != nil {
		t.Fatal(err)
	}
	table, err := run(t, "eval", "--model", model, "--task", "perplexity", "--data", text, "--limit", "20", "--adapter", dy, "--rank-at", "all")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"rank 1]", "rank 2]", "rank 3]"} {
		if !strings.Contains(table, b) {
			t.Errorf("eval --rank-at all: no row for %s in\n%s", b, table)
		}
	}
	mustFail(t, []string{"eval", "--model", model, "--task", "perplexity", "--data", text, "--adapter", lora1, "--rank-at", "2"}, "--rank-at", "has one rank")
	gen, err := run(t, "generate", "--model", model, "--adapter", dy, "--adapter", lora1, "-n", "4", "--temperature", "0")
	if err != nil || !strings.Contains(gen, "== "+dy+" ==") || !strings.Contains(gen, "== "+lora1+" ==") {
		t.Errorf("generate with two adapters: %v\n%s", err, gen)
	}
}
