package kernels

import (
	"testing"
	"github.com/gopeft/gopeft/tensor/parallel"
)

func BenchmarkTmpPeak1(b *testing.B) {
	old := parallel.SetThreads(1)
	defer parallel.SetThreads(old)
	BenchmarkFMAPeak(b)
}
func BenchmarkTmpPath1(b *testing.B) {
	old := parallel.SetThreads(1)
	defer parallel.SetThreads(old)
	BenchmarkGemmPath(b)
}
