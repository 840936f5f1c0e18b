package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/train"
)

// pipelineRecipe writes a two-stage recipe (a LoRA on Shakespeare,
// continued on Wikipedia, with EWC) to dir and returns its path.
func pipelineRecipe(t *testing.T, dir, out string, extra string) string {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	wiki := shared.Path(t, "data/text/wiki_demo.txt")
	path := filepath.Join(dir, "pipeline.yaml")
	os.WriteFile(path, []byte(`model: `+model+`
method: LORA
peft: {r: 4, lora_alpha: 8, lora_dropout: 0.1, target_modules: all-linear}
data: {format: text, seq_len: 32, limit: 32, eval_fraction: 0.1, eval_limit: 8}
train: {steps: 6, batch_size: 4, lr: 3e-3, save_every: 2}
output: `+out+`
stages:
  - name: shakespeare
    data: {path: `+text+`}
  - name: wiki
    data: {path: `+wiki+`}
    train: {seed: 7}
continual: {strategy: ewc, ewc_lambda: 100, fisher_samples: 8}
`+extra), 0o644)
	return path
}

// TestPipelineResumeAfterSIGKILL kills a pipeline in its second stage and
// resumes it: both stages' losses equal the uninterrupted run's exactly.
func TestPipelineResumeAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("trains twice")
	}
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref")
	out, err := run(t, "train", "--config", pipelineRecipe(t, dir, ref, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Forgetting matrix") {
		t.Errorf("no forgetting matrix printed:\n%s", out)
	}
	killed := filepath.Join(dir, "killed")
	kdir := t.TempDir()
	args := []string{"train", "--config", pipelineRecipe(t, kdir, killed, "")}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(exe)
	child.Env = append(os.Environ(), "GOPEFT_TEST_ARGS="+strings.Join(args, "\x1f"))
	child.Stdout, child.Stderr = io.Discard, io.Discard
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once the second stage has logged step 3 (its checkpoint is
	// at step 2).
	metrics := filepath.Join(killed, "wiki", "checkpoints", "metrics.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		if recs, err := train.ReadMetricsFile(metrics); err == nil && len(recs) >= 3 {
			break
		}
		if ctx.Err() != nil {
			child.Process.Kill()
			t.Fatal("the child never reached step 3 of stage 2")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()
	if _, err := os.Stat(filepath.Join(killed, "wiki", "adapter_model.safetensors")); err == nil {
		t.Fatal("the child finished before it was killed; the test proves nothing")
	}
	if _, err := run(t, append(args, "--resume")...); err != nil {
		t.Fatal(err)
	}
	for _, stage := range []string{"shakespeare", "wiki"} {
		want := losses(t, filepath.Join(ref, stage, "metrics.jsonl"))
		got := losses(t, filepath.Join(killed, stage, "metrics.jsonl"))
		if len(want) != 6 {
			t.Fatalf("%s: the reference logged %d steps", stage, len(want))
		}
		for s := 1; s <= 6; s++ {
			if got[s] != want[s] {
				t.Errorf("%s step %d: resumed loss %v, uninterrupted %v", stage, s, got[s], want[s])
			}
		}
	}
	a, _ := os.ReadFile(filepath.Join(ref, "continual.json"))
	b, _ := os.ReadFile(filepath.Join(killed, "continual.json"))
	if string(a) != string(b) || len(a) == 0 {
		t.Errorf("continual.json after the resume:\n%s\nuninterrupted:\n%s", b, a)
	}
	// The finished pipeline's directory is refused without --resume or
	// --overwrite-output-dir.
	if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), "already holds results") {
		t.Errorf("a second run over a finished pipeline: %v", err)
	}
}

// Bad pipelines are refused naming the stage and the key.
func TestPipelineRecipeErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	base, _ := os.ReadFile(pipelineRecipe(t, dir, out, ""))
	for _, c := range []struct {
		edit func(string) string
		want string
	}{
		{func(s string) string { return strings.Replace(s, "name: wiki", "name: shakespeare", 1) }, `stage "shakespeare": name: used twice`},
		{func(s string) string { return strings.Replace(s, "train: {seed: 7}", "method: full", 1) }, `stage "wiki": method: FULL cannot continue stage "shakespeare"'s LORA adapter: set merge_before: true`},
		{func(s string) string { return strings.Replace(s, "train: {seed: 7}", "peft: {r: 8}", 1) }, `stage "wiki": peft: continuing stage "shakespeare"'s LORA adapter needs the same peft settings`},
		{func(s string) string { return strings.Replace(s, "train: {seed: 7}", "train: {lr: -1}", 1) }, `stage "wiki": recipe stages[1].train.lr is -1`},
		{func(s string) string { return strings.Replace(s, "wiki_demo.txt}", "wiki_demo.txt, seq_len: 0}", 1) }, `stage "wiki": recipe stages[1].data.seq_len is 0`},
		{func(s string) string { return strings.Replace(s, "train: {seed: 7}", "peft: {lora_dropout: 2}", 1) }, `stage "wiki": recipe stages[1].peft.lora_dropout is 2`},
		// A bad value the stage takes from the top level names the top level's flag.
		{func(s string) string { return strings.Replace(s, "lr: 3e-3,", "lr: 3e-3, weight_decay: -1,", 1) }, `stage "shakespeare": --weight-decay (recipe train.weight_decay), which the stage takes from the top level, is -1`},
		{func(s string) string { return strings.Replace(s, "train: {seed: 7}", "train: {sed: 7}", 1) }, `stage "wiki": train:`},
		{func(s string) string { return strings.Replace(s, "train: {seed: 7}", "colour: red", 1) }, `colour`},
		{func(s string) string {
			return s[:strings.Index(s, "stages:")] + "continual: {strategy: replay, replay_fraction: 0.5}\n"
		}, "continual: needs stages"},
		{func(s string) string { return strings.Replace(s, "strategy: ewc", "strategy: forget", 1) }, "continual.strategy"},
	} {
		os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(c.edit(string(base))), 0o644)
		_, err := run(t, "train", "--config", filepath.Join(dir, "bad.yaml"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want an error with %q, got %v", c.want, err)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused pipeline wrote its output directory")
	}
}

// The example recipes the README points to run as written (here one step
// a stage, from the repository root as the README says).
func TestExampleRecipesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("loads every example's data")
	}
	shared.Path(t, "data/models/stories260K/stories260K.bin") // skip without the shared data
	recipes, _ := filepath.Glob("../../examples/regimes/*.yaml")
	if len(recipes) < 4 {
		t.Fatalf("found %d example recipes", len(recipes))
	}
	out := t.TempDir()
	t.Chdir("../..")
	if _, err := os.Stat("../shared/data/models/stories260K/stories260K.bin"); err != nil {
		t.Skip("../shared/data is not beside the repository")
	}
	for _, r := range recipes {
		if strings.HasSuffix(r, "task-only.yaml") { // domain-adaptive.yaml's task stage alone
			continue
		}
		name := strings.TrimSuffix(filepath.Base(r), ".yaml")
		if _, err := run(t, "train", "--config", filepath.Join("examples/regimes", filepath.Base(r)), "--steps", "1", "--output", filepath.Join(out, name)); err != nil {
			t.Errorf("%s: %v", r, err)
		}
	}
}
