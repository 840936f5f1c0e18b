package llama

import (
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

// Benchmarks of inference on preset shapes with random weights:
//
//	go test ./model/llama -run '^$' -bench 'Prefill|Decode' -cpuprofile cpu.out
//
// Prefill processes a 256-token prompt in one forward (ns/op is per
// prompt); Decode generates one token (forward plus the LM head) after it,
// in a cache of 256+128 positions that is refilled off the clock when full.

var benchPresets = []string{"stories15M", "stories110M"}

func benchModel(b *testing.B, preset string, bf16 bool) *Model {
	m, err := NewPreset(preset, 1)
	if err != nil {
		b.Fatal(err)
	}
	if bf16 {
		for _, p := range m.Params() {
			if len(p.Var.Value.Shape) == 2 {
				p.Var.Value = p.Var.Value.ToBF16()
			}
		}
	}
	return m
}

func benchPrompt(m *Model, n int) []int {
	g := tensor.NewRNG(2)
	ids := make([]int, n)
	for i := range ids {
		ids[i] = 3 + g.IntN(m.Config.VocabSize-3)
	}
	return ids
}

func forEachBenchModel(b *testing.B, run func(b *testing.B, m *Model)) {
	for _, p := range benchPresets {
		for _, bf16 := range []bool{false, true} {
			name := p + "/f32"
			if bf16 {
				name = p + "/bf16"
			}
			b.Run(name, func(b *testing.B) { run(b, benchModel(b, p, bf16)) })
		}
	}
}

func BenchmarkPrefill(b *testing.B) {
	const promptLen = 256
	forEachBenchModel(b, func(b *testing.B, m *Model) {
		prompt := benchPrompt(m, promptLen)
		cache := m.NewKVCache(1, promptLen)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			cache.Reset()
			if _, err := m.lastLogits(Input{IDs: prompt, Batch: 1, T: promptLen, Cache: cache}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(promptLen*b.N)/b.Elapsed().Seconds(), "tok/s")
	})
}

func BenchmarkDecode(b *testing.B) {
	const promptLen, newTokens = 256, 128
	forEachBenchModel(b, func(b *testing.B, m *Model) {
		prompt := benchPrompt(m, promptLen)
		cache := m.NewKVCache(1, promptLen+newTokens)
		fill := func() {
			cache.Reset()
			if _, err := m.Forward(nil, Input{IDs: prompt, Batch: 1, T: promptLen, Cache: cache}); err != nil {
				b.Fatal(err)
			}
		}
		fill()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if cache.Len() == promptLen+newTokens {
				b.StopTimer()
				fill()
				b.StartTimer()
			}
			if _, err := m.lastLogits(Input{IDs: []int{3 + i%1000}, Batch: 1, T: 1, Cache: cache}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
	})
}
