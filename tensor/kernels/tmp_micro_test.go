package kernels

import (
	"fmt"
	"testing"
)

func BenchmarkTmpMicro(b *testing.B) {
	for _, kc := range []int{64, 128, 192, 256, 384} {
		b.Run(fmt.Sprint(kc), func(b *testing.B) {
			a, w, c := benchRand(12*kc), benchRand(32*kc), make([]float32, 12*32)
			for b.Loop() {
				micro12x32AVX512(kc, &a[0], &w[0], &c[0], 32, true)
			}
			b.ReportMetric(float64(2*12*32*kc)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
