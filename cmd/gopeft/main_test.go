package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
)

// run executes the CLI with args and returns what it printed.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestGenerateGreedyGolden is the check: the CLI prints exactly the
// llama2.c reference runner's greedy text.
func TestGenerateGreedyGolden(t *testing.T) {
	want := greedyGolden(t)
	dir := shared.Path(t, "data/models/stories260K")
	out, err := run(t, "generate", "--model", filepath.Join(dir, "stories260K.bin"), "--tokenizer", filepath.Join(dir, "tok512.bin"),
		"--temperature", "0", "-n", "120")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSuffix(out, "\n") != want {
		t.Errorf("generate printed\n%q\nwant\n%q", out, want)
	}
}

// greedyGolden is llama2.c's greedy text for stories260K (120 tokens).
func greedyGolden(t *testing.T) string {
	t.Helper()
	var g struct {
		Text string `json:"text"`
	}
	b, err := os.ReadFile(shared.Path(t, "golden/stories260K/greedy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g.Text
}

func TestGenerateSeededSamplingRepeats(t *testing.T) {
	dir := shared.Path(t, "data/models/stories260K")
	args := []string{"generate", "--model", filepath.Join(dir, "stories260K.bin"), "--prompt", "The cat", "-n", "40", "--temperature", "0.9", "--top-p", "0.9", "--seed", "7"}
	a, err := run(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := run(t, args...)
	if a != b || len(a) < 20 {
		t.Errorf("same seed gave different or empty output:\n%q\n%q", a, b)
	}
	args[len(args)-1] = "8"
	c, _ := run(t, args...)
	if c == a {
		t.Errorf("seeds 7 and 8 gave the same 40 tokens: %q", a)
	}
}

func TestConvertAndInspect(t *testing.T) {
	bin := shared.Path(t, "data/models/stories260K/stories260K.bin")
	outDir := filepath.Join(t.TempDir(), "hf")
	if _, err := run(t, "convert", "--model", bin, "--output", outDir); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, "inspect", "--model", outDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"num_key_value_heads      4", "rotate-half", "all params: 260,032", "memory f32"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
}

func TestMergeWritesLoadableModel(t *testing.T) {
	hf := shared.Path(t, "golden/stories260K/hf")
	ad := shared.Path(t, "golden/stories260K/lora")
	tok := shared.Path(t, "data/models/stories260K/tok512.bin")
	outDir := filepath.Join(t.TempDir(), "merged")
	if _, err := run(t, "merge", "--model", hf, "--adapter", ad, "--output", outDir); err != nil {
		t.Fatal(err)
	}
	merged, err := run(t, "generate", "--model", outDir, "--tokenizer", tok, "--temperature", "0", "-n", "40")
	if err != nil {
		t.Fatal(err)
	}
	adapted, err := run(t, "generate", "--model", hf, "--adapter", ad, "--tokenizer", tok, "--temperature", "0", "-n", "40")
	if err != nil {
		t.Fatal(err)
	}
	if merged != adapted {
		t.Errorf("merged model and base+adapter generate differently:\n%q\n%q", merged, adapted)
	}
}

func TestBadInputErrors(t *testing.T) {
	dir := t.TempDir()
	trunc := filepath.Join(dir, "trunc.bin")
	if err := os.WriteFile(trunc, []byte{1, 2, 3}, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := [][]string{
		{"generate", "--model", filepath.Join(dir, "missing.bin")},
		{"generate", "--model", trunc},
		{"inspect"},
		{"bench", "generate", "--preset", "nope"},
		{"generate", "--model", shared.Path(t, "data/models/stories260K/stories260K.bin"), "-n", "-3"},
	}
	for _, args := range cases {
		if _, err := run(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	_, err := run(t, "generate", "--model", trunc)
	if err == nil || !strings.Contains(err.Error(), "trunc.bin") {
		t.Errorf("a truncated checkpoint's error should name the file: %v", err)
	}
}

func TestDemoQuickLeavesItsFiles(t *testing.T) {
	dir := t.TempDir()
	out, err := run(t, "demo", "--quick", "--output", dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"stage 1", "stage 2", "eval loss", "before:", "after:", "exact answers"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"stage1-pretrain/model.safetensors", "stage1-pretrain/config.json", "stage2-lora/adapter_config.json",
		"stage2-lora/adapter_model.safetensors", "stage2-lora/metrics.jsonl", "stage2-lora/loss.png"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("demo left no %s: %v", f, err)
		}
	}
	// What the demo saved loads back: the stage-1 model with the adapter.
	if _, err := run(t, "inspect", "--model", filepath.Join(dir, "stage1-pretrain"), "--adapter", filepath.Join(dir, "stage2-lora")); err != nil {
		t.Error(err)
	}
}

func TestMismatchedTokenizerIsRefused(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	big := shared.Path(t, "data/tokenizers/llama2/tokenizer.bin") // 32,000 tokens for a 512-token model
	for _, args := range [][]string{
		{"generate", "--model", model, "--tokenizer", big, "-n", "5"},
		{"eval", "--model", model, "--tokenizer", big, "--task", "arc_easy", "--limit", "2"},
		{"train", "--model", model, "--tokenizer", big, "--data", shared.Path(t, "data/text/wiki_demo.txt"), "--steps", "1", "--output", t.TempDir()},
	} {
		if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "32000") {
			t.Errorf("%s with a 32k tokenizer on a 512-token model: %v", args[0], err)
		}
	}
}

// TestVersionFlag: `gopeft --version` prints what `gopeft version` does.
func TestVersionFlag(t *testing.T) {
	flag, err := run(t, "--version")
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := run(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	if flag != cmd || !strings.HasPrefix(flag, "gopeft "+version) {
		t.Errorf("--version printed %q, version printed %q", flag, cmd)
	}
}

// --eval-fraction is refused, before anything loads, where it means nothing.
func TestEvalFractionNeedsPerplexityOnText(t *testing.T) {
	for _, args := range [][]string{
		{"--task", "arc_easy", "--eval-fraction", "0.1"},
		{"--task", "perplexity", "--eval-fraction", "0.1"},
		{"--task", "perplexity", "--data", "x.txt", "--eval-fraction", "1"},
	} {
		_, err := run(t, append([]string{"eval", "--model", "does-not-exist.bin"}, args...)...)
		if err == nil || !strings.Contains(err.Error(), "--eval-fraction") {
			t.Errorf("%v: %v", args, err)
		}
	}
}
