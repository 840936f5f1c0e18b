//go:build mpi

package dist

/*
#cgo pkg-config: ompi-c
#include <stdlib.h>
#include <mpi.h>

// MPI_COMM_WORLD and the datatypes are macros over Open MPI's globals,
// which cgo cannot name: these wrappers keep them on the C side.
static int gp_init(int *provided) {
	int done = 0;
	MPI_Initialized(&done);
	if (done) {
		return MPI_Query_thread(provided);
	}
	return MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, provided);
}
static int gp_errors_return(void) { return MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN); }
static int gp_rank(int *r) { return MPI_Comm_rank(MPI_COMM_WORLD, r); }
static int gp_size(int *s) { return MPI_Comm_size(MPI_COMM_WORLD, s); }
static int gp_sum_f32(float *buf, int n) {
	return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
static int gp_sum_f64(double *buf, int n) {
	return MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}
static int gp_bcast_len(long long *n, int root) { return MPI_Bcast(n, 1, MPI_LONG_LONG, root, MPI_COMM_WORLD); }
static int gp_bcast(void *buf, int n, int root) { return MPI_Bcast(buf, n, MPI_BYTE, root, MPI_COMM_WORLD); }
static int gp_gather_len(long long mine, long long *all) {
	return MPI_Allgather(&mine, 1, MPI_LONG_LONG, all, 1, MPI_LONG_LONG, MPI_COMM_WORLD);
}
static int gp_gatherv(void *send, int n, void *recv, int *counts, int *displs) {
	return MPI_Allgatherv(send, n, MPI_BYTE, recv, counts, displs, MPI_BYTE, MPI_COMM_WORLD);
}
static void gp_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); }
static int gp_finalize(void) { return MPI_Finalize(); }
static void gp_error_string(int code, char *buf, int *len) { MPI_Error_string(code, buf, len); }
static int gp_max_error_string(void) { return MPI_MAX_ERROR_STRING; }
static int gp_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
*/
import "C"

import (
	"fmt"
	"math"
	"os"
	"sync"
	"unsafe"
)

// WithMPI reports whether this build can join MPI ranks (-tags mpi).
const WithMPI = true

// This file is our own thin cgo layer over the MPI C API (a dozen calls)
// rather than a Go binding such as sbromberger/gompi: the trainer needs
// only sums, a broadcast, a gather and abort; it finds Open MPI through
// pkg-config (ompi-c) instead of a generated file of fixed include paths;
// it sets MPI_ERRORS_RETURN so a failed collective becomes a Go error
// with MPI's own message; and it adds no module to go.mod.

// mpiComm is MPI_COMM_WORLD. MPI runs at MPI_THREAD_SERIALIZED: Go may
// call it from any OS thread, never from two at once (mu).
type mpiComm struct {
	mu         sync.Mutex
	rank, size int
	closed     bool
}

// Init returns this process's communicator: MPI_COMM_WORLD when an MPI
// launcher (mpirun, Kubeflow's MPIJob) started it, Single otherwise.
//
// Open MPI installs handlers for SIGSEGV, SIGBUS, SIGFPE and SIGABRT to
// print its own backtraces (its opal_signal parameter); they would take
// over signals the Go runtime relies on (a nil dereference becomes a
// SIGSEGV that Go turns into a panic), so Init turns them off unless
// OMPI_MCA_opal_signal is already set.
func Init() (Communicator, error) {
	if _, _, ok := Launched(); !ok {
		return Single(), nil
	}
	if _, set := os.LookupEnv("OMPI_MCA_opal_signal"); !set {
		os.Setenv("OMPI_MCA_opal_signal", "")
	}
	var provided C.int
	if rc := C.gp_init(&provided); rc != 0 {
		return nil, mpiError("MPI_Init_thread", rc)
	}
	if provided < C.gp_thread_serialized() {
		return nil, fmt.Errorf("dist: this MPI library gives thread level %d, gopeft needs MPI_THREAD_SERIALIZED (calls from any thread, one at a time)", int(provided))
	}
	if rc := C.gp_errors_return(); rc != 0 {
		return nil, mpiError("MPI_Comm_set_errhandler", rc)
	}
	c := &mpiComm{}
	var r, s C.int
	if rc := C.gp_rank(&r); rc != 0 {
		return nil, mpiError("MPI_Comm_rank", rc)
	}
	if rc := C.gp_size(&s); rc != 0 {
		return nil, mpiError("MPI_Comm_size", rc)
	}
	c.rank, c.size = int(r), int(s)
	return c, nil
}

// mpiError is an MPI return code with MPI's message for it.
func mpiError(call string, rc C.int) error {
	n := C.gp_max_error_string()
	buf := (*C.char)(C.malloc(C.size_t(n)))
	defer C.free(unsafe.Pointer(buf))
	var l C.int
	C.gp_error_string(rc, buf, &l)
	return fmt.Errorf("%s failed: %s (MPI error %d)", call, C.GoStringN(buf, l), int(rc))
}

func (c *mpiComm) Rank() int         { return c.rank }
func (c *mpiComm) Size() int         { return c.size }
func (c *mpiComm) Transport() string { return "MPI" }

// maxCount bounds one MPI call's element count (an int in the C API).
const maxCount = 1 << 30

func (c *mpiComm) SumFloat32(buf []float32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(buf) > 0 {
		n := min(len(buf), maxCount)
		if rc := C.gp_sum_f32((*C.float)(unsafe.Pointer(&buf[0])), C.int(n)); rc != 0 {
			return mpiError("MPI_Allreduce", rc)
		}
		buf = buf[n:]
	}
	return nil
}

func (c *mpiComm) SumFloat64(buf []float64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(buf) > 0 {
		n := min(len(buf), maxCount)
		if rc := C.gp_sum_f64((*C.double)(unsafe.Pointer(&buf[0])), C.int(n)); rc != 0 {
			return mpiError("MPI_Allreduce", rc)
		}
		buf = buf[n:]
	}
	return nil
}

func (c *mpiComm) Broadcast(root int, b []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := C.longlong(len(b))
	if rc := C.gp_bcast_len(&n, C.int(root)); rc != 0 {
		return nil, mpiError("MPI_Bcast", rc)
	}
	out := b
	if c.rank != root {
		out = make([]byte, int(n))
	}
	for rest := out; len(rest) > 0; {
		k := min(len(rest), maxCount)
		if rc := C.gp_bcast(unsafe.Pointer(&rest[0]), C.int(k), C.int(root)); rc != 0 {
			return nil, mpiError("MPI_Bcast", rc)
		}
		rest = rest[k:]
	}
	return out, nil
}

func (c *mpiComm) Gather(b []byte) ([][]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lens := make([]C.longlong, c.size)
	if rc := C.gp_gather_len(C.longlong(len(b)), &lens[0]); rc != 0 {
		return nil, mpiError("MPI_Allgather", rc)
	}
	counts := make([]C.int, c.size)
	displs := make([]C.int, c.size)
	total := 0
	for i, l := range lens {
		if total+int(l) > math.MaxInt32 {
			return nil, fmt.Errorf("dist: gathering %d bytes: more than one MPI call carries", total+int(l))
		}
		counts[i], displs[i] = C.int(l), C.int(total)
		total += int(l)
	}
	out := make([][]byte, c.size)
	if total == 0 {
		for i := range out {
			out[i] = []byte{}
		}
		return out, nil
	}
	recv := C.malloc(C.size_t(total))
	defer C.free(recv)
	var send unsafe.Pointer
	if len(b) > 0 {
		send = unsafe.Pointer(&b[0])
	}
	if rc := C.gp_gatherv(send, C.int(len(b)), recv, &counts[0], &displs[0]); rc != 0 {
		return nil, mpiError("MPI_Allgatherv", rc)
	}
	all := C.GoBytes(recv, C.int(total))
	for i := range out {
		out[i] = all[displs[i] : int(displs[i])+int(counts[i])]
	}
	return out, nil
}

// Abort ends every rank: mpirun stops the others with SIGTERM (then
// SIGKILL) and reports the code.
func (c *mpiComm) Abort(code int) {
	C.gp_abort(C.int(code))
	os.Exit(code)
}

func (c *mpiComm) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if rc := C.gp_finalize(); rc != 0 {
		return mpiError("MPI_Finalize", rc)
	}
	return nil
}
