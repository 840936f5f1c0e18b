//go:build mpi

package dist

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/tensor"
)

// mpiRun returns the command that starts n copies of argv under mpirun on
// this machine: --oversubscribe lets 2 ranks share fewer cores, and root
// (a CI container) needs --allow-run-as-root.
func mpiRun(t *testing.T, n int, argv ...string) *exec.Cmd {
	t.Helper()
	path, err := exec.LookPath("mpirun")
	if err != nil {
		t.Fatalf("this test was built with -tags mpi but finds no mpirun (install openmpi-bin): %v", err)
	}
	args := []string{"-np", fmt.Sprint(n), "--oversubscribe"}
	if os.Geteuid() == 0 {
		args = append(args, "--allow-run-as-root")
	}
	return exec.Command(path, append(args, argv...)...)
}

// TestMPICollectives runs itself as 2 ranks under mpirun; each rank
// checks the collectives against what the group must give.
func TestMPICollectives(t *testing.T) {
	if os.Getenv("GOPEFT_MPI_WORKER") == "" {
		cmd := mpiRun(t, 2, os.Args[0], "-test.run", "^TestMPICollectives$", "-test.v")
		cmd.Env = append(os.Environ(), "GOPEFT_MPI_WORKER=1")
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Count(string(out), "rank ok") != 2 {
			t.Fatalf("mpirun: %v\n%s", err, out)
		}
		return
	}
	c, err := Init()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, n := c.Rank(), c.Size()
	if n != 2 || c.Transport() != "MPI" || Describe(c) != "data-parallel: 2 ranks over MPI" {
		t.Fatalf("rank %d: size %d, %q", r, n, Describe(c))
	}
	f := []float32{float32(r + 1), 0.5, -float32(r)}
	if err := c.SumFloat32(f); err != nil || f[0] != 3 || f[1] != 1 || f[2] != -1 {
		t.Fatalf("rank %d: SumFloat32 = %v, %v", r, f, err)
	}
	d := []float64{float64(r), 1e-300}
	if err := c.SumFloat64(d); err != nil || d[0] != 1 || d[1] != 2e-300 {
		t.Fatalf("rank %d: SumFloat64 = %v, %v", r, d, err)
	}
	b, err := c.Broadcast(1, []byte(fmt.Sprintf("from %d", r)))
	if err != nil || string(b) != "from 1" {
		t.Fatalf("rank %d: Broadcast = %q, %v", r, b, err)
	}
	all, err := c.Gather(bytes.Repeat([]byte{'x'}, r*3))
	if err != nil || len(all) != 2 || len(all[0]) != 0 || string(all[1]) != "xxx" {
		t.Fatalf("rank %d: Gather = %q, %v", r, all, err)
	}
	var mine error
	if r == 1 {
		mine = errors.New("cannot read shard.jsonl")
	}
	if err := Agree(c, mine); err == nil || err.Error() != "rank 1 of 2: cannot read shard.jsonl" {
		t.Fatalf("rank %d: Agree = %v", r, err)
	}
	if err := Same(c, "recipe", []byte{byte(r)}); err == nil || !strings.Contains(err.Error(), "rank 1 has a different recipe") {
		t.Fatalf("rank %d: Same = %v", r, err)
	}
	fmt.Println("rank ok")
}

// TestMPISumTiming times SumFloat32 over 2 ranks for the gradient sizes
// of docs/performance.md (GOPEFT_MPI_TIMING=1; a measurement, not a check).
func TestMPISumTiming(t *testing.T) {
	if os.Getenv("GOPEFT_MPI_TIMING") == "" {
		t.Skip("a measurement: set GOPEFT_MPI_TIMING=1")
	}
	if os.Getenv("GOPEFT_MPI_WORKER") == "" {
		cmd := mpiRun(t, 2, os.Args[0], "-test.run", "^TestMPISumTiming$", "-test.v")
		cmd.Env = append(os.Environ(), "GOPEFT_MPI_WORKER=1")
		out, err := cmd.CombinedOutput()
		t.Logf("%s", out)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	c, err := Init()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range []int{46240, 55296, 260032, DefaultBucketElems, 15191712} {
		buf := make([]float32, n)
		b := NewBuckets([]*autograd.Var{autograd.Param("g", tensor.FromData(buf, n), true)}, 0)
		b.vars[0].Grad = tensor.New(n)
		times := make([]time.Duration, 7)
		for i := range times {
			start := time.Now()
			if err := b.Sum(c, nil); err != nil {
				t.Fatal(err)
			}
			times[i] = time.Since(start)
		}
		slices.Sort(times)
		if c.Rank() == 0 {
			fmt.Printf("%10d floats (%9d bytes, %d buckets): median %v, best %v\n", n, 4*n, b.Count(), times[3], times[0])
		}
	}
}
