//go:build mpi

package main

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/gopeft/train"
)

// The multi-rank tests (go test -tags mpi -run MPI ./cmd/gopeft) start
// this test binary under mpirun as the gopeft command (TestMain runs the
// CLI when GOPEFT_TEST_ARGS is set). .ci/run runs them.

// mpirunArgs are mpirun's options on one machine: --oversubscribe lets 2
// ranks share fewer cores, and root (a CI container) needs
// --allow-run-as-root.
func mpirunArgs(t *testing.T) (string, []string) {
	t.Helper()
	path, err := exec.LookPath("mpirun")
	if err != nil {
		t.Fatalf("built with -tags mpi, but there is no mpirun (install openmpi-bin): %v", err)
	}
	args := []string{"--oversubscribe"}
	if os.Geteuid() == 0 {
		args = append(args, "--allow-run-as-root")
	}
	return path, args
}

// mpiCmd runs n ranks of gopeft with args (an app context per argument
// list: ranks with different command lines).
func mpiCmd(t *testing.T, ranks ...[]string) *exec.Cmd {
	t.Helper()
	path, args := mpirunArgs(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range ranks {
		if i > 0 {
			args = append(args, ":")
		}
		args = append(args, "-np", "1", "-x", "GOPEFT_TEST_ARGS="+strings.Join(a, "\x1f"), exe)
	}
	return exec.Command(path, args...)
}

func mpiTrainArgs(t *testing.T, out string) []string {
	a := trainArgs(t, out, 16)
	// No dropout: ranks draw masks over their own batch (see train/dist.go),
	// so only without it do they compute exactly one process's sums.
	for i := range a {
		if a[i] == "--dropout" {
			a[i+1] = "0"
		}
	}
	// float32: with bf16 products (the default where the CPU has them) a
	// rank's fewer rows take the GEMV path where one process takes the
	// blocked one, and the activations' rounding to bf16 turns those
	// paths' last-bit differences into bf16-sized ones; the test checks
	// the data-parallel sums, not the precision.
	return append(a, "--eval-fraction", "0.1", "--eval-limit", "12", "--eval-every", "4", "--fp32")
}

func records(t *testing.T, path string) []train.Record {
	t.Helper()
	recs, err := train.ReadMetricsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// Two ranks under mpirun train as one process does (the same loss at
// every step, within float32 summation tolerance); a rank killed mid-run
// ends the job with a message on the other rank, and --resume on two
// ranks continues from the last checkpoint bitwise as the uninterrupted
// two-rank run.
func TestMPITrain(t *testing.T) {
	dir := t.TempDir()
	one := filepath.Join(dir, "one")
	if _, err := run(t, mpiTrainArgs(t, one)...); err != nil {
		t.Fatal(err)
	}
	want := records(t, filepath.Join(one, "metrics.jsonl"))

	two := filepath.Join(dir, "two")
	a := mpiTrainArgs(t, two)
	out, err := mpiCmd(t, a, a).CombinedOutput()
	if err != nil {
		t.Fatalf("mpirun: %v\n%s", err, out)
	}
	if n := strings.Count(string(out), "data-parallel: 2 ranks over MPI"); n != 1 {
		t.Errorf("the start line appears %d times:\n%s", n, out)
	}
	got := records(t, filepath.Join(two, "metrics.jsonl"))
	if len(got) != len(want) {
		t.Fatalf("2 ranks logged %d steps, 1 process %d", len(got), len(want))
	}
	var worst float64
	for i, g := range got {
		d := math.Abs(g.Loss-want[i].Loss) / want[i].Loss
		worst = max(worst, d)
		if d > 1e-5 || (g.EvalLoss == nil) != (want[i].EvalLoss == nil) || g.EvalLoss != nil && math.Abs(*g.EvalLoss-*want[i].EvalLoss) > 1e-5**want[i].EvalLoss {
			t.Errorf("step %d: 2 ranks loss %v eval %v, 1 process %v eval %v", g.Step, g.Loss, g.EvalLoss, want[i].Loss, want[i].EvalLoss)
		}
	}
	t.Logf("largest relative loss difference, 2 ranks vs 1 process: %.2g", worst)

	// Kill rank 1 once step 7 is logged (checkpoint 6 exists).
	killed := filepath.Join(dir, "killed")
	a = mpiTrainArgs(t, killed)
	cmd := mpiCmd(t, a, a)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		if recs, err := train.ReadMetricsFile(filepath.Join(killed, "checkpoints", "metrics.jsonl")); err == nil && len(recs) >= 7 {
			break
		}
		if ctx.Err() != nil {
			cmd.Process.Kill()
			t.Fatalf("the job never reached step 7:\n%s", buf.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	pid := rankPID(t, cmd.Process.Pid, 1)
	if err := syscallKill(pid); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatalf("mpirun succeeded after rank 1 was killed:\n%s", buf.String())
	}
	if _, err := os.Stat(filepath.Join(killed, "adapter_model.safetensors")); err == nil {
		t.Fatal("the job finished before rank 1 was killed; the test proves nothing")
	}
	for _, w := range []string{"rank 0 of 2: stopped: mpirun is ending the job", "--resume continues from its latest checkpoint", "exited on signal 9"} {
		if !strings.Contains(buf.String(), w) {
			t.Errorf("the killed job's output lacks %q:\n%s", w, buf.String())
		}
	}
	a = append(mpiTrainArgs(t, killed), "--resume")
	if out, err := mpiCmd(t, a, a).CombinedOutput(); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	resumed := records(t, filepath.Join(killed, "metrics.jsonl"))
	if len(resumed) != len(got) {
		t.Fatalf("the resumed run logged %d steps, want %d", len(resumed), len(got))
	}
	for i, r := range resumed {
		if r.Loss != got[i].Loss {
			t.Errorf("step %d: resumed loss %v, uninterrupted 2-rank run %v", r.Step, r.Loss, got[i].Loss)
		}
	}
}

// rankPID finds the process of MPI rank rank among mpirun's children.
func rankPID(t *testing.T, mpirun, rank int) int {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", mpirun))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, p := range strings.Fields(string(b)) {
			env, _ := os.ReadFile("/proc/" + p + "/environ")
			for _, kv := range bytes.Split(env, []byte{0}) {
				if string(kv) == fmt.Sprintf("OMPI_COMM_WORLD_RANK=%d", rank) {
					var pid int
					fmt.Sscan(p, &pid)
					return pid
				}
			}
		}
	}
	t.Fatalf("no child of mpirun (pid %d) is rank %d", mpirun, rank)
	return 0
}

func syscallKill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// Ranks that cannot all start stop together, each saying which rank
// failed and why, and nothing is written: a rank whose data file is
// missing, a rank with another learning rate.
func TestMPIBadInput(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	good := mpiTrainArgs(t, out)
	missing := append(append([]string(nil), good...), "--data", filepath.Join(dir, "shard-1.txt"))
	otherLR := append(append([]string(nil), good...), "--lr", "1e-2")
	for _, c := range []struct {
		rank1 []string
		want  string
	}{
		{missing, "rank 1 of 2: "},
		{otherLR, "rank 1 has a different recipe and data from rank 0's"},
	} {
		b, err := mpiCmd(t, good, c.rank1).CombinedOutput()
		if err == nil {
			t.Fatalf("mpirun succeeded:\n%s", b)
		}
		if n := strings.Count(string(b), c.want); n != 2 {
			t.Errorf("%q appears %d times, want once per rank:\n%s", c.want, n, b)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s was created", out)
		}
	}
}
