package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
)

// TestTrainEvalSST2Classifier trains a LoRA + classification head on a
// slice of SST-2 for a few steps and evaluates it with gopeft eval: the
// adapter is PEFT's SEQ_CLS layout, and eval's accuracy on the first 40
// dev sentences equals the trainer's own final accuracy on them.
func TestTrainEvalSST2Classifier(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	shared.Path(t, "data/glue/SST-2/train.tsv")
	dataDir := shared.Path(t, "data")
	dir := t.TempDir()
	out, err := run(t, "train", "--task", "sst2", "--data-dir", dataDir, "--model", model, "--method", "LORA",
		"--targets", "all-linear", "--rank", "4", "--limit", "48", "--eval-limit", "40", "--steps", "3", "--batch", "8",
		"--lr", "1e-2", "--output", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	m := regexp.MustCompile(`accuracy ([0-9.]+) → ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("train printed no eval accuracy:\n%s", out)
	}
	trained, _ := strconv.ParseFloat(m[2], 64)

	var cfg struct {
		TaskType      string   `json:"task_type"`
		ModulesToSave []string `json:"modules_to_save"`
		TargetModules string   `json:"target_modules"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.TaskType != "SEQ_CLS" || !strings.Contains(strings.Join(cfg.ModulesToSave, ","), "score") {
		t.Errorf("adapter_config: task_type %q, modules_to_save %v", cfg.TaskType, cfg.ModulesToSave)
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := ts["base_model.model.score.weight"]; !ok || s.Shape[0] != 2 || s.Shape[1] != 64 {
		t.Errorf("adapter lacks base_model.model.score.weight [2 64]")
	}
	if _, ok := ts["base_model.model.score.lora_A.weight"]; ok {
		t.Error("all-linear put LoRA on the classification head")
	}

	ev, err := run(t, "eval", "--task", "sst2", "--data-dir", dataDir, "--model", model, "--adapter", dir, "--limit", "40")
	if err != nil {
		t.Fatalf("%v\n%s", err, ev)
	}
	row := regexp.MustCompile(`\| sst2 \| acc \| ([0-9.]+) \|[^|]*\| 40 \|`).FindStringSubmatch(ev)
	if row == nil {
		t.Fatalf("eval printed no sst2 accuracy over 40 items:\n%s", ev)
	}
	if got, _ := strconv.ParseFloat(row[1], 64); got-trained > 1e-3 || trained-got > 1e-3 {
		t.Errorf("eval accuracy %v, the trainer's %v on the same sentences", got, trained)
	}
}
