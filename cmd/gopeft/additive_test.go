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
)

// additiveMethods are the additive family's methods with small settings:
// flags for train.
var additiveMethods = [][]string{
	{"--method", "IA3"},
	{"--method", "PROMPT_TUNING", "--virtual-tokens", "4"},
	{"--method", "PREFIX_TUNING", "--virtual-tokens", "4"},
	{"--method", "P_TUNING", "--virtual-tokens", "4"},
	{"--method", "BOTTLENECK", "--adapter-arch", "seq_bn"},
	{"--method", "SSF"},
	{"--method", "MAM"},
	{"--method", "UNIPELT"},
}

// Every additive method trains a classification head with train --task
// (SEQ_CLS: the head saved with the adapter), and gopeft eval reproduces
// the trainer's own accuracy with the saved adapter; then, trained as a
// language model, it scores a few-shot task (eval --shots) through its
// virtual tokens, prefix or hooks.
func TestAdditiveMethodsTaskAndShots(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	shared.Path(t, "data/glue/SST-2/train.tsv")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	dataDir := shared.Path(t, "data")
	for _, flags := range additiveMethods {
		name := flags[1]
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cls")
			args := append([]string{"train", "--task", "sst2", "--data-dir", dataDir, "--model", model, "--limit", "8", "--eval-limit", "8",
				"--steps", "1", "--batch", "4", "--lr", "1e-2", "--output", dir}, flags...)
			out, err := run(t, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			m := regexp.MustCompile(`accuracy ([0-9.]+) → ([0-9.]+)`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("train printed no eval accuracy:\n%s", out)
			}
			trained, _ := strconv.ParseFloat(m[2], 64)
			var cfg struct {
				PeftType      string   `json:"peft_type"`
				TaskType      string   `json:"task_type"`
				ModulesToSave []string `json:"modules_to_save"`
			}
			b, _ := os.ReadFile(filepath.Join(dir, "adapter_config.json"))
			if err := json.Unmarshal(b, &cfg); err != nil || cfg.TaskType != "SEQ_CLS" || !strings.Contains(strings.Join(cfg.ModulesToSave, ","), "score") {
				t.Errorf("adapter_config.json %s (%v)", b, err)
			}
			ev, err := run(t, "eval", "--task", "sst2", "--data-dir", dataDir, "--model", model, "--adapter", dir, "--limit", "8")
			if err != nil {
				t.Fatalf("%v\n%s", err, ev)
			}
			row := regexp.MustCompile(`\| sst2 \| acc \| ([0-9.]+) \|[^|]*\| 8 \|`).FindStringSubmatch(ev)
			if row == nil {
				t.Fatalf("eval printed no sst2 accuracy over 8 items:\n%s", ev)
			}
			if got, _ := strconv.ParseFloat(row[1], 64); got-trained > 1e-3 || trained-got > 1e-3 {
				t.Errorf("eval accuracy %v, the trainer's %v on the same sentences", got, trained)
			}

			lm := filepath.Join(t.TempDir(), "lm")
			args = append([]string{"train", "--model", model, "--data", text, "--format", "text", "--seq-len", "32", "--limit", "4",
				"--steps", "1", "--batch", "2", "--output", lm}, flags...)
			if out, err := run(t, args...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			ev, err = run(t, "eval", "--task", "arc_easy", "--shots", "2", "--data-dir", dataDir, "--model", model, "--adapter", lm, "--limit", "3")
			if err != nil {
				t.Fatalf("%v\n%s", err, ev)
			}
			if !regexp.MustCompile(`\| arc_easy \(2-shot\) \| acc \| [0-9.]+ \|[^|]*\| 3 \|`).MatchString(ev) {
				t.Errorf("eval --shots 2 printed no arc_easy accuracy over 3 items:\n%s", ev)
			}
		})
	}
}
