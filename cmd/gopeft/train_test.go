package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/tensor/kernels"
	"github.com/gopeft/gopeft/train"
)

// TestMain lets a test run the real binary as a child process (to kill it).
func TestMain(m *testing.M) {
	if args := os.Getenv("GOPEFT_TEST_ARGS"); args != "" {
		root := newRootCmd()
		root.SetArgs(strings.Split(args, "\x1f"))
		if err := root.Execute(); err != nil {
			report(err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func trainArgs(t *testing.T, out string, steps int) []string {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	return []string{"train", "--model", model, "--data", text, "--format", "text", "--seq-len", "32", "--limit", "64",
		"--steps", itoa(steps), "--batch", "4", "--grad-accum", "2", "--lr", "3e-3", "--dropout", "0.1", "--targets", "all-linear",
		"--save-every", "3", "--output", out}
}

func itoa(n int) string { return strconv.Itoa(n) }

func losses(t *testing.T, path string) map[int]float64 {
	t.Helper()
	recs, err := train.ReadMetricsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]float64{}
	for _, r := range recs {
		out[r.Step] = r.Loss
	}
	return out
}

// TestResumeAfterSIGKILL kills a training process mid-run, resumes it from
// its last checkpoint, and requires every later step's loss to equal the
// uninterrupted run's exactly.
func TestResumeAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three times")
	}
	const steps = 12
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref")
	if _, err := run(t, trainArgs(t, ref, steps)...); err != nil {
		t.Fatal(err)
	}
	want := losses(t, filepath.Join(ref, "metrics.jsonl"))
	if len(want) != steps {
		t.Fatalf("reference run logged %d steps", len(want))
	}

	out := filepath.Join(dir, "killed")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(exe)
	child.Env = append(os.Environ(), "GOPEFT_TEST_ARGS="+strings.Join(trainArgs(t, out, steps), "\x1f"))
	child.Stdout, child.Stderr = io.Discard, io.Discard
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it with SIGKILL once it has logged step 7 (a checkpoint exists
	// at step 6; steps 7.. must be redone identically).
	metrics := filepath.Join(out, "checkpoints", "metrics.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		if recs, err := train.ReadMetricsFile(metrics); err == nil && len(recs) >= 7 {
			break
		}
		if ctx.Err() != nil {
			child.Process.Kill()
			t.Fatal("the child never reached step 7")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if _, err := os.Stat(filepath.Join(out, "adapter_model.safetensors")); err == nil {
		t.Fatal("the child finished before it was killed; the test proves nothing")
	}
	args := append(trainArgs(t, out, steps), "--resume")
	if _, err := run(t, args...); err != nil {
		t.Fatal(err)
	}
	got := losses(t, filepath.Join(out, "metrics.jsonl"))
	for s := 1; s <= steps; s++ {
		if got[s] != want[s] {
			t.Errorf("step %d: resumed loss %v, uninterrupted %v", s, got[s], want[s])
		}
	}
	// A resume with other hyper-parameters is refused.
	bad := append(trainArgs(t, out, steps), "--resume", "--lr", "1e-2")
	if _, err := run(t, bad...); err == nil || !strings.Contains(err.Error(), "different run") {
		t.Errorf("resuming with another learning rate: %v", err)
	}
}

func TestTrainRecipeAndErrors(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	alpaca := shared.Path(t, "data/instruct/alpaca_en_demo.json")
	dir := t.TempDir()
	recipe := filepath.Join(dir, "r.yaml")
	os.WriteFile(recipe, []byte(`model: `+model+`
method: LORA
peft:
  r: 4
  lora_alpha: 8
  target_modules: [q_proj, v_proj]
data:
  path: `+alpaca+`
  format: alpaca
  max_len: 384
  limit: 16
train:
  steps: 3
  batch_size: 4
output: `+filepath.Join(dir, "out")+`
`), 0o644)
	if _, err := run(t, "train", "--config", recipe); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", "recipe.yaml", "metrics.jsonl", "loss.png"} {
		if _, err := os.Stat(filepath.Join(dir, "out", f)); err != nil {
			t.Errorf("missing %s: %v", f, err)
		}
	}
	// The adapter is LoRA r=4 on q and v, as the recipe says.
	out, err := run(t, "inspect", "--adapter", filepath.Join(dir, "out"))
	if err != nil || !strings.Contains(out, `"r": 4`) || !strings.Contains(out, "layers.4.self_attn.v_proj.lora_B.weight") {
		t.Errorf("inspect: %v\n%s", err, out)
	}
	// A flag given on the command line wins over the recipe; the recipe
	// wins over the flags' defaults (r stays 4, not --rank's default 8).
	out2 := filepath.Join(dir, "out2")
	if _, err := run(t, "train", "--config", recipe, "--steps", "2", "--output", out2); err != nil {
		t.Fatal(err)
	}
	if recs, err := train.ReadMetricsFile(filepath.Join(out2, "metrics.jsonl")); err != nil || len(recs) != 2 {
		t.Errorf("--steps 2 over a recipe of 3 steps: %d metric lines, %v", len(recs), err)
	}
	if cfg, err := os.ReadFile(filepath.Join(out2, "adapter_config.json")); err != nil || !strings.Contains(string(cfg), `"r": 4`) {
		t.Errorf("the recipe's r: 4 was lost: %v\n%s", err, cfg)
	}
	// An unknown recipe key is an error naming it.
	os.WriteFile(recipe, []byte("model: x\nlearning_rate: 3\n"), 0o644)
	if _, err := run(t, "train", "--config", recipe); err == nil || !strings.Contains(err.Error(), "learning_rate") {
		t.Errorf("unknown key: %v", err)
	}
	// target_modules matching nothing lists what exists.
	_, err = run(t, "train", "--model", model, "--data", alpaca, "--targets", "qproj", "--steps", "1", "--limit", "4", "--output", filepath.Join(dir, "x"))
	if err == nil || !strings.Contains(err.Error(), "q_proj") {
		t.Errorf("bad targets: %v", err)
	}
}

// Methods are reached through their registrations: names in any case, the
// method's own flags, a typo in the peft block named, and full fine-tuning
// counting each parameter once.
func TestTrainMethodsByRegistration(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	dir := t.TempDir()
	common := []string{"--model", model, "--data", text, "--format", "text", "--seq-len", "32", "--limit", "8", "--steps", "1", "--batch", "2"}
	out := filepath.Join(dir, "lower")
	if _, err := run(t, append([]string{"train", "--method", "lora", "--rank", "2", "--targets", "all-linear", "--output", out}, common...)...); err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		PeftType string `json:"peft_type"`
		R        int    `json:"r"`
		Targets  any    `json:"target_modules"`
	}
	b, _ := os.ReadFile(filepath.Join(out, "adapter_config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil || cfg.PeftType != "LORA" || cfg.R != 2 || cfg.Targets != "all-linear" {
		t.Errorf("--method lora --rank 2 --targets all-linear wrote %s (%v)", b, err)
	}
	// A flag the method does not have is refused, naming the method's own.
	_, err := run(t, append([]string{"train", "--method", "full", "--rank", "4", "--output", filepath.Join(dir, "f")}, common...)...)
	if err == nil || !strings.Contains(err.Error(), "--rank is not a setting of method FULL") {
		t.Errorf("--rank with FULL: %v", err)
	}
	// A typo inside the peft block is an error naming the key.
	recipe := filepath.Join(dir, "typo.yaml")
	os.WriteFile(recipe, []byte("method: lora\npeft:\n  rnak: 16\n"), 0o644)
	_, err = run(t, append([]string{"train", "--config", recipe, "--output", filepath.Join(dir, "t")}, common...)...)
	if err == nil || !strings.Contains(err.Error(), `unknown key "rnak"`) {
		t.Errorf("peft block typo: %v", err)
	}
	// Full fine-tuning: every parameter trainable, each counted once.
	line, err := run(t, append([]string{"train", "--method", "Full", "--output", filepath.Join(dir, "full")}, common...)...)
	if err != nil || !strings.Contains(line, "trainable%: 100.0000") {
		t.Errorf("FULL: %v\n%s", err, line)
	}
	// bench train reports the rank it trained.
	js, err := run(t, "bench", "train", "--preset", "stories15M", "--method", "lora", "--rank", "16", "--batch", "1", "--seq", "8", "--steps", "1", "--json")
	if err != nil || !strings.Contains(js, `"r": 16`) || !strings.Contains(js, fmt.Sprintf(`"trainable_params": %d`, 6*2*16*(288+288))) {
		t.Errorf("bench train --rank 16: %v\n%s", err, js)
	}
	// --checkpoint-blocks recomputes the first N blocks, and says so; a
	// count beyond the model's blocks is refused naming the flag and range.
	line, err = run(t, "bench", "train", "--preset", "stories15M", "--batch", "1", "--seq", "8", "--steps", "1", "--checkpoint-blocks", "4")
	if err != nil || !strings.Contains(line, "recomputing 4 of 6 blocks") {
		t.Errorf("bench train --checkpoint-blocks 4: %v\n%s", err, line)
	}
	for _, args := range [][]string{
		{"bench", "train", "--preset", "stories15M", "--checkpoint-blocks", "7"},
		append([]string{"train", "--checkpoint-blocks", "-1", "--output", filepath.Join(dir, "ckpt")}, common...),
	} {
		if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "--checkpoint-blocks") || !strings.Contains(err.Error(), "decoder blocks") {
			t.Errorf("%v: want a refusal naming --checkpoint-blocks and the range, got %v", args[:2], err)
		}
	}
}

func TestTrainStopsOnNonFiniteLoss(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	out := filepath.Join(t.TempDir(), "nan")
	_, err := run(t, "train", "--model", model, "--data", text, "--format", "text", "--seq-len", "32", "--limit", "32",
		"--steps", "6", "--batch", "4", "--lr", "1e30", "--max-grad-norm", "0", "--warmup", "0", "--schedule", "constant",
		"--save-every", "1", "--output", out)
	if err == nil || !strings.Contains(err.Error(), "non-finite") || !strings.Contains(err.Error(), "step 2") ||
		!strings.Contains(err.Error(), "checkpoint-00000001") {
		t.Fatalf("a diverging run should stop naming the step and the last good checkpoint: %v", err)
	}
}

// --packing trains instruction data packed into --max-len sequences, and
// is refused for plain text and classification tasks, naming the flag.
func TestTrainPacking(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	alpaca := shared.Path(t, "data/instruct/alpaca_en_demo.json")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	dir := t.TempDir()
	short := filepath.Join(dir, "short.jsonl")
	var rows strings.Builder
	for i := range 12 {
		fmt.Fprintf(&rows, `{"prompt": "Tom had %d red balls.", "completion": " He gave one to Lily."}`+"\n", i+2)
	}
	os.WriteFile(short, []byte(rows.String()), 0o644)
	for _, data := range []string{alpaca, short} {
		if _, err := run(t, "train", "--model", model, "--data", data, "--packing", "--max-len", "256", "--limit", "8", "--steps", "1", "--batch", "2",
			"--output", filepath.Join(dir, "packed"), "--overwrite-output-dir"); err != nil {
			t.Fatal(err)
		}
	}
	_, err := run(t, "train", "--model", model, "--data", text, "--format", "text", "--seq-len", "32", "--packing", "--steps", "1", "--output", filepath.Join(dir, "text"))
	if err == nil || !strings.Contains(err.Error(), "--packing (recipe data.packing)") || !strings.Contains(err.Error(), "applies to instruction data") {
		t.Errorf("packing plain text: %v", err)
	}
	_, err = run(t, "train", "--model", model, "--task", "sst2", "--packing", "--steps", "1", "--output", filepath.Join(dir, "task"))
	if err == nil || !strings.Contains(err.Error(), "--packing") {
		t.Errorf("packing a classification task: %v", err)
	}
}

// A method that chooses its entries from the data (FishMask) reports them
// in PEFT's trainable-parameters line: the line is printed once they exist.
func TestTrainableLineAfterSelection(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	out, err := run(t, "train", "--model", model, "--data", text, "--format", "text", "--seq-len", "32", "--limit", "16",
		"--steps", "1", "--batch", "2", "--method", "FISHMASK", "--density", "0.01", "--num-samples", "4",
		"--output", filepath.Join(t.TempDir(), "fm"))
	if err != nil || !strings.Contains(out, "trainable params: 2,600 ||") {
		t.Errorf("FISHMASK at density 0.01 of 260K base weights: %v\n%s", err, out)
	}
}

// The base's precision: bf16 by default where the CPU multiplies bf16
// natively, float32 with --fp32, float32 for full fine-tuning (it trains
// the base's own weights), and --bf16 with --fp32 refused by name. The
// run says which on its log.
func TestTrainPrecision(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	alpaca := shared.Path(t, "data/instruct/alpaca_en_demo.json")
	dir := t.TempDir()
	auto := "precision: float32"
	if kernels.NativeBF16() {
		auto = "precision: bf16 base"
	}
	for i, c := range []struct {
		args []string
		want string
	}{
		{nil, auto},
		{[]string{"--fp32"}, "precision: float32"},
		{[]string{"--bf16"}, "precision: bf16 base, float32 trainable weights and sums\n"},
		{[]string{"--method", "FULL"}, "precision: float32"},
	} {
		args := append([]string{"train", "--model", model, "--data", alpaca, "--steps", "1", "--limit", "4", "--batch", "2",
			"--output", filepath.Join(dir, fmt.Sprint(i))}, c.args...)
		out, err := run(t, args...)
		if err != nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: %v, want %q in\n%s", c.args, err, c.want, out)
		}
	}
	_, err := run(t, "train", "--model", model, "--data", alpaca, "--bf16", "--fp32", "--output", filepath.Join(dir, "x"))
	if err == nil || !strings.Contains(err.Error(), "--bf16 and --fp32") {
		t.Errorf("--bf16 --fp32: %v", err)
	}
	// recipe.yaml records what the default chose, and a flag on the
	// command line overrides the recipe's opposite key.
	saved, err := os.ReadFile(filepath.Join(dir, "0", "recipe.yaml"))
	if err != nil || strings.Contains(string(saved), "bf16: true") != kernels.NativeBF16() {
		t.Errorf("the default run's recipe.yaml (%v):\n%s", err, saved)
	}
	recipe := filepath.Join(dir, "r.yaml")
	os.WriteFile(recipe, []byte("model: "+model+"\nbf16: true\ndata:\n  path: "+alpaca+"\n  limit: 4\ntrain:\n  steps: 1\n  batch_size: 2\noutput: "+filepath.Join(dir, "r")+"\n"), 0o644)
	if out, err := run(t, "train", "--config", recipe, "--fp32"); err != nil || !strings.Contains(out, "precision: float32") {
		t.Errorf("--fp32 over a recipe's bf16: true: %v\n%s", err, out)
	}
}

// A run on a llama2.c file fingerprints its q/k row order, so a checkpoint
// from before the rows were permuted on load is refused on resume; a run
// on a Hugging Face model keeps the fingerprint it always had.
func TestFingerprintNamesLlama2cRowOrder(t *testing.T) {
	old := func(r *Recipe) string {
		fp, err := train.Fingerprint(struct {
			Model, Method string
			Peft          map[string]any
			Data          DataRecipe
			Train         train.Config
		}{r.Model, r.Method, r.Peft, r.Data, r.Train})
		if err != nil {
			t.Fatal(err)
		}
		return fp
	}
	for _, c := range []struct {
		model   string
		changed bool
	}{
		{shared.Path(t, "data/models/stories260K/stories260K.bin"), true},
		{shared.Path(t, "golden/stories260K/hf"), false},
	} {
		r := &Recipe{Model: c.model, Method: "LORA", Train: train.DefaultConfig()}
		fp, err := r.fingerprint()
		if err != nil {
			t.Fatal(err)
		}
		if changed := fp != old(r); changed != c.changed {
			t.Errorf("%s: fingerprint changed %v, want %v", c.model, changed, c.changed)
		}
	}
}
