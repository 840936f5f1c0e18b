//go:build !mpi

package dist

import (
	"strings"
	"testing"
)

// A build without MPI that mpirun starts as one of several ranks refuses
// to train, saying how to build one with MPI; alone it is Single.
func TestInitWithoutMPI(t *testing.T) {
	t.Setenv("OMPI_COMM_WORLD_RANK", "1")
	t.Setenv("OMPI_COMM_WORLD_SIZE", "2")
	if _, err := Init(); err == nil || !strings.Contains(err.Error(), "rank 1 of 2: this gopeft was built without MPI") || !strings.Contains(err.Error(), "-tags mpi") {
		t.Errorf("Init under mpirun -np 2: %v", err)
	}
	t.Setenv("OMPI_COMM_WORLD_SIZE", "1")
	t.Setenv("OMPI_COMM_WORLD_RANK", "0")
	if c, err := Init(); err != nil || c.Size() != 1 {
		t.Errorf("Init under mpirun -np 1: %v", err)
	}
}
