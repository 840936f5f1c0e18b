package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/train"
)

// selectiveArgs is a short stories260K run of a selective method,
// checkpointing every 3 updates.
func selectiveArgs(t *testing.T, out string, steps int, method ...string) []string {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	args := []string{"train", "--model", model, "--data", text, "--format", "text", "--seq-len", "32", "--limit", "64",
		"--steps", itoa(steps), "--batch", "4", "--grad-accum", "2", "--lr", "3e-3", "--save-every", "3", "--output", out}
	return append(args, method...)
}

// latestCheckpoint is the step of the newest finished checkpoint under dir
// (0: none).
func latestCheckpoint(dir string) int {
	ents, _ := os.ReadDir(dir)
	var steps []int
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, train.CheckpointPrefix) || strings.HasSuffix(name, ".tmp") {
			continue
		}
		if s, err := strconv.Atoi(strings.TrimPrefix(name, train.CheckpointPrefix)); err == nil {
			steps = append(steps, s)
		}
	}
	if len(steps) == 0 {
		return 0
	}
	sort.Ints(steps)
	return steps[len(steps)-1]
}

// killAfterCheckpoint runs args in a child process, SIGKILLs it as soon as
// the checkpoint of step ckpt is on disk, and returns the newest
// checkpoint's step at that moment (the one --resume continues from).
func killAfterCheckpoint(t *testing.T, args []string, out string, ckpt int) int {
	t.Helper()
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
	dir := filepath.Join(out, "checkpoints")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for latestCheckpoint(dir) < ckpt {
		if ctx.Err() != nil {
			child.Process.Kill()
			child.Wait()
			t.Fatalf("the child never wrote the checkpoint of step %d", ckpt)
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
	return latestCheckpoint(dir)
}

// sameRun requires the resumed run in got to have logged every step's loss
// exactly as the uninterrupted run in want, and to have saved byte-identical
// adapter files.
func sameRun(t *testing.T, want, got string, steps int) {
	t.Helper()
	wl := losses(t, filepath.Join(want, "metrics.jsonl"))
	gl := losses(t, filepath.Join(got, "metrics.jsonl"))
	if len(wl) != steps {
		t.Fatalf("the uninterrupted run logged %d steps, not %d", len(wl), steps)
	}
	for s := 1; s <= steps; s++ {
		if gl[s] != wl[s] {
			t.Errorf("step %d: resumed loss %v, uninterrupted %v", s, gl[s], wl[s])
		}
	}
	for _, f := range []string{"adapter_model.safetensors", "adapter_config.json"} {
		a, err := os.ReadFile(filepath.Join(want, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(got, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s of the resumed run differs from the uninterrupted run's (%d and %d bytes)", f, len(b), len(a))
		}
	}
}

// TestFishDipResumeAfterSIGKILL kills a Fish-Dip run after its mask has
// been refreshed twice (after updates 3 and 6; the checkpoint of step 6
// holds the moved mask, the frozen changes and the slots) and resumes it:
// the later refreshes (after 9 and 12) and every loss and saved byte equal
// the uninterrupted run's.
func TestFishDipResumeAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three times")
	}
	const steps = 15
	method := []string{"--method", "fish_dip", "--density", "0.01", "--num-samples", "4", "--reevaluate-after-steps", "3"}
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref")
	if _, err := run(t, selectiveArgs(t, ref, steps, method...)...); err != nil {
		t.Fatal(err)
	}
	// The refreshes moved the mask: more entries changed than one mask holds.
	var cfg struct {
		Density        float64 `json:"density"`
		ChangedDensity float64 `json:"changed_density"`
	}
	b, _ := os.ReadFile(filepath.Join(ref, "adapter_config.json"))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if !(cfg.ChangedDensity > cfg.Density) {
		t.Fatalf("changed_density %v ≤ density %v: no refresh moved the mask, the test proves nothing", cfg.ChangedDensity, cfg.Density)
	}

	out := filepath.Join(dir, "killed")
	args := selectiveArgs(t, out, steps, method...)
	if from := killAfterCheckpoint(t, args, out, 6); from < 6 {
		t.Fatalf("killed with the checkpoint of step %d, before a refresh", from)
	}
	if _, err := run(t, append(args, "--resume")...); err != nil {
		t.Fatal(err)
	}
	sameRun(t, ref, out, steps)
}

// TestDiffPruningResumeAfterSIGKILL kills a diff pruning run twice over:
// once in the L0 stage (the checkpoint holds w, the gates' log-alphas and
// their moments; the resumed run draws the same gates and prunes after
// update 7 as the uninterrupted one), and once in the fixed-mask stage
// (the checkpoint holds the mask). Both resumed runs log every loss and
// save every byte as the uninterrupted run.
func TestDiffPruningResumeAfterSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("trains five times")
	}
	const steps, l0 = 15, 7
	method := []string{"--method", "diff_pruning", "--density", "0.01", "--l0-steps", itoa(l0)}
	dir := t.TempDir()
	ref := filepath.Join(dir, "ref")
	if _, err := run(t, selectiveArgs(t, ref, steps, method...)...); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ckpt int
		ok   func(from int) bool
	}{
		{"gates", 3, func(from int) bool { return from < l0 }},
		{"mask", 9, func(from int) bool { return from >= l0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, c.name)
			args := selectiveArgs(t, out, steps, method...)
			if from := killAfterCheckpoint(t, args, out, c.ckpt); !c.ok(from) {
				t.Fatalf("killed with the checkpoint of step %d: not in the %s stage", from, c.name)
			}
			if _, err := run(t, append(args, "--resume")...); err != nil {
				t.Fatal(err)
			}
			sameRun(t, ref, out, steps)
		})
	}
}
