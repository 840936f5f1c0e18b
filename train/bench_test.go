package train

import (
	"testing"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// benchParams is about a stories15M LoRA's worth of trainable elements
// (r = 8 on q and v of 6 layers would be far fewer; this is 4M to make the
// memory traffic visible).
func benchParams() nn.Params {
	rng := tensor.NewRNG(1)
	var ps nn.Params
	for i := 0; i < 16; i++ {
		ps = append(ps, randParam("p"+string(rune('a'+i)), rng, 256, 1024))
	}
	return ps
}

func BenchmarkAdamWStep(b *testing.B) {
	ps := benchParams()
	opt, _ := NewAdamW(ps, DefaultAdamW())
	b.SetBytes(4 * 4 * 16 * 256 * 1024) // p, g, m, v
	for b.Loop() {
		opt.Step(1e-4)
	}
}

func BenchmarkAdamW8bitStep(b *testing.B) {
	ps := benchParams()
	opt, _ := NewAdamW8bit(ps, DefaultAdamW())
	b.SetBytes((4*2 + 2) * 16 * 256 * 1024) // p, g; the 8-bit m, v
	for b.Loop() {
		opt.Step(1e-4)
	}
}

func BenchmarkClipGradNorm(b *testing.B) {
	ps := benchParams()
	b.SetBytes(4 * 16 * 256 * 1024)
	for b.Loop() {
		ClipGradNorm(ps, 1e9)
	}
}
