//go:build !amd64 || purego

package kernels

func archImpls() []*impl { return nil }

var (
	packBTrans  func(kc, nr int, b []float32, ldb int, dst []float32)
	packBTransH func(kc, nr int, b []BF16, ldb int, dst []float32)
)

func fmaPeakNames() []string { return nil }

func fmaPeak(name string, iters int) int { return 0 }
