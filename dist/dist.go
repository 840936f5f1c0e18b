// Package dist is what data-parallel training needs from a group of
// processes: each process (a rank) trains on its share of every global
// batch, and the ranks add up their gradients before an identical
// optimizer step on every rank.
//
// The group is a Communicator. The default build has one implementation
// that runs alone (Single) and an in-process group for tests (NewLocal);
// built with -tags mpi (cgo, Open MPI's libmpi), Init joins the ranks
// that mpirun, or Kubeflow's MPIJob, started. A plain build that mpirun
// starts refuses to run (see Init), so N copies never train side by side
// each believing it is alone.
//
// Buckets flattens the gradients of the trainable parameters into a few
// contiguous buffers, as Horovod's tensor fusion and PyTorch DDP's buckets
// do, and sums them across the ranks in a fixed order.
package dist

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Communicator is a group of ranks. Every rank must call the collective
// methods (all but Rank, Size and Transport) in the same order with
// buffers of the same length; a rank that calls none blocks the others,
// which is why the trainer's decisions (stop, skip, fail) are taken from
// reduced values that every rank sees alike.
type Communicator interface {
	// Rank is this process's index, 0 ≤ Rank < Size. Rank 0 writes the
	// run's files.
	Rank() int
	// Size is the number of ranks.
	Size() int
	// Transport names what carries the messages ("MPI"; "" alone).
	Transport() string
	// SumFloat32 replaces buf, on every rank, by the element-wise sum of
	// the ranks' bufs. Every rank receives the same bits.
	SumFloat32(buf []float32) error
	// SumFloat64 is SumFloat32 for float64 (counts, metrics).
	SumFloat64(buf []float64) error
	// Broadcast returns root's b on every rank (b is ignored elsewhere).
	Broadcast(root int, b []byte) ([]byte, error)
	// Gather returns every rank's b, indexed by rank, on every rank.
	Gather(b []byte) ([][]byte, error)
	// Abort ends every rank of the job with code (it does not return
	// where the transport can end the others).
	Abort(code int)
	// Close leaves the group (MPI_Finalize); call it once, at the end.
	Close() error
}

// single is a group of one.
type single struct{}

// Single is the communicator of a process that trains alone: it has rank
// 0 of 1 and its collectives return their input.
func Single() Communicator { return single{} }

func (single) Rank() int                                 { return 0 }
func (single) Size() int                                 { return 1 }
func (single) Transport() string                         { return "" }
func (single) SumFloat32([]float32) error                { return nil }
func (single) SumFloat64([]float64) error                { return nil }
func (single) Broadcast(_ int, b []byte) ([]byte, error) { return b, nil }
func (single) Gather(b []byte) ([][]byte, error)         { return [][]byte{b}, nil }
func (single) Abort(code int)                            { os.Exit(code) }
func (single) Close() error                              { return nil }

// Or returns c, or Single when c is nil.
func Or(c Communicator) Communicator {
	if c == nil {
		return Single()
	}
	return c
}

// Describe is the line a data-parallel run prints at its start, e.g.
// "data-parallel: 2 ranks over MPI"; "" for a process alone.
func Describe(c Communicator) string {
	c = Or(c)
	if c.Size() == 1 && c.Transport() == "" {
		return ""
	}
	ranks := "ranks"
	if c.Size() == 1 {
		ranks = "rank"
	}
	return fmt.Sprintf("data-parallel: %d %s over %s", c.Size(), ranks, c.Transport())
}

// ErrRank reports the errors of one or more ranks, as every rank sees
// them after Agree.
type ErrRank struct {
	Ranks  []int    // the failing ranks, ascending
	Errors []string // their messages
	Size   int
}

func (e *ErrRank) Error() string {
	var b strings.Builder
	for i, r := range e.Ranks {
		if i > 0 {
			b.WriteString("; ")
		}
		if e.Size > 1 {
			fmt.Fprintf(&b, "rank %d of %d: ", r, e.Size)
		}
		b.WriteString(e.Errors[i])
	}
	return b.String()
}

// Agree is a collective: every rank passes its own outcome (nil or an
// error) and receives the same answer, nil when every rank succeeded and
// otherwise an *ErrRank naming each failing rank and its message. Ranks
// go on, or stop, together: no rank waits forever in the next collective
// for one that gave up. A single process gets its own error back
// unchanged.
func Agree(c Communicator, err error) error {
	c = Or(c)
	if c.Size() == 1 {
		return err
	}
	msg := []byte{}
	if err != nil {
		msg = append([]byte{1}, err.Error()...)
	}
	all, gerr := c.Gather(msg)
	if gerr != nil {
		return errors.Join(err, gerr)
	}
	e := &ErrRank{Size: c.Size()}
	for r, m := range all {
		if len(m) > 0 {
			e.Ranks = append(e.Ranks, r)
			e.Errors = append(e.Errors, string(m[1:]))
		}
	}
	if len(e.Ranks) == 0 {
		return nil
	}
	return e
}

// Same is a collective that checks that every rank holds the same value
// of what (a digest of its recipe, its data): it returns an error, on
// every rank, naming the ranks whose value differs from rank 0's.
func Same(c Communicator, what string, value []byte) error {
	c = Or(c)
	if c.Size() == 1 {
		return nil
	}
	all, err := c.Gather(value)
	if err != nil {
		return err
	}
	var differ []string
	for r := 1; r < len(all); r++ {
		if string(all[r]) != string(all[0]) {
			differ = append(differ, strconv.Itoa(r))
		}
	}
	if len(differ) > 0 {
		ranks := "rank " + differ[0] + " has"
		if len(differ) > 1 {
			ranks = "ranks " + strings.Join(differ, ", ") + " have"
		}
		return fmt.Errorf("dist: %s a different %s from rank 0's: every rank must run the same recipe on the same data", ranks, what)
	}
	return nil
}

// Launched reports the rank and size an MPI launcher (mpirun of Open MPI
// or MPICH, srun with PMI, Kubeflow's MPIJob, which runs mpirun) gave this
// process in its environment, and whether there was one.
func Launched() (rank, size int, ok bool) {
	for _, v := range [][2]string{
		{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
		{"PMI_RANK", "PMI_SIZE"},
		{"PMIX_RANK", "PMIX_SIZE"},
	} {
		s, err1 := strconv.Atoi(os.Getenv(v[1]))
		r, err2 := strconv.Atoi(os.Getenv(v[0]))
		if err1 == nil && err2 == nil && s >= 1 {
			return r, s, true
		}
	}
	return 0, 1, false
}

// shared marks an error every rank returns alike.
type shared struct{ error }

func (e shared) Unwrap() error { return e.error }

// Shared marks err (when non-nil) as one every rank of the group returns
// alike, from a decision they took together: a caller can end the ranks
// cleanly rather than abort the job.
func Shared(err error) error {
	if err == nil || IsShared(err) {
		return err
	}
	return shared{err}
}

// IsShared reports whether err came from Shared or Agree.
func IsShared(err error) bool {
	var s shared
	var r *ErrRank
	return errors.As(err, &s) || errors.As(err, &r)
}
