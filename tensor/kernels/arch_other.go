//go:build !amd64 || purego

package kernels

func archImpls() []*impl { return nil }

// haveAsm reports whether the assembly packing helpers exist.
var haveAsm = false

var (
	packBTrans  func(kc, nr int, b []float32, ldb int, dst []float32)
	packBTransH func(kc, nr int, b []BF16, ldb int, dst []float32)
)

func fmaPeakNames() []string { return nil }

func fmaPeak(name string, iters int) int { return 0 }

func copyPanel(kc, w int, src []float32, ld int, dst []float32) bool { return false }

func transposeBlock(k8 int, src []float32, ld int, dst []float32, ldd int) {}

func copyPanelH(kc, w int, src []BF16, ld int, dst []float32) bool { return false }

// roundBF16 rounds src into dst (the bf16 kernels' activations; unused
// here, where no path has them).
func roundBF16(dst []BF16, src []float32) { F32ToBF16(dst, src) }
