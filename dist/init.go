//go:build !mpi

package dist

import "fmt"

// WithMPI reports whether this build can join MPI ranks (-tags mpi).
const WithMPI = false

// Init returns this process's communicator. This build has no MPI: it
// trains alone (Single), and refuses to start when an MPI launcher
// started it as one of several ranks, since each copy would train the
// whole run by itself and write the same files as the others.
func Init() (Communicator, error) {
	if rank, size, ok := Launched(); ok && size > 1 {
		return nil, fmt.Errorf("rank %d of %d: this gopeft was built without MPI, so the %d copies mpirun started would each train alone and write the same files; "+
			"build it with `go build -tags mpi ./cmd/gopeft` (needs Open MPI's libopenmpi-dev), or run it without mpirun", rank, size, size)
	}
	return Single(), nil
}
