package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/tensor"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure speed and memory on models of published shapes with random weights",
	}
	cmd.AddCommand(newBenchGenerateCmd(), newBenchTrainCmd(), newBenchLlama2cCmd())
	return cmd
}

// benchSeed seeds the random weights of bench generate and bench llama2c.
const benchSeed = 1

// newBenchLlama2cCmd writes the random weights bench generate measures as a
// llama2.c checkpoint, so that llama2.c's runner can be timed on the very
// same model.
func newBenchLlama2cCmd() *cobra.Command {
	var preset, output string
	var seqLen int
	cmd := &cobra.Command{
		Use:   "llama2c",
		Short: "Write a preset's benchmark weights as a llama2.c checkpoint (for run.c)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output == "" {
				return fmt.Errorf("bench llama2c: --output is required")
			}
			m, err := llama.NewPreset(preset, benchSeed)
			if err != nil {
				return err
			}
			if err := llama.SaveLlama2c(m, output, seqLen); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %d positions)\n", output, preset, seqLen)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&preset, "preset", "stories15M", fmt.Sprintf("model shape: one of %v", llama.PresetNames()))
	fl.StringVarP(&output, "output", "o", "", "checkpoint file to write")
	fl.IntVar(&seqLen, "seq-len", 1024, "positions in the header (run.c caps its steps there)")
	return cmd
}

// peakRSSBytes is the process's peak resident set size.
func peakRSSBytes() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024 // Linux reports KiB
}

// cpuSeconds is the CPU time (user + system) the process has used. Where
// other work shares the cores, CPU time a step varies less than wall time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

type generateBench struct {
	Preset    string `json:"preset"`
	DType     string `json:"dtype"`
	PromptLen int    `json:"prompt_len"`
	NewTokens int    `json:"new_tokens"`
	Runs      int    `json:"runs"`
	// Tokens/s are medians over the runs (each: the prompt in one forward,
	// then NewTokens decoded one at a time, LM head included).
	PromptTokensPerS float64 `json:"prompt_tokens_per_s"`
	DecodeTokensPerS float64 `json:"decode_tokens_per_s"`
	// WeightBytesPerToken is what one decode step reads of the weights
	// (every matrix once; the LM head, not the embedding table, unless
	// tied); KVBytesPerToken is the KV cache it reads, averaged over the
	// decoded positions.
	WeightBytesPerToken int64   `json:"weight_bytes_per_token"`
	KVBytesPerToken     int64   `json:"kv_bytes_per_token"`
	DecodeGBPerS        float64 `json:"decode_gb_per_s"`
	PeakRSSBytes        int64   `json:"peak_rss_bytes"`
}

// decodeBytes counts what one decode step reads: each weight matrix once
// (2 bytes an element in bf16) and, on average over the decoded positions,
// every layer's cached keys and values.
func decodeBytes(m *llama.Model, promptLen, n int) (weights, kv int64) {
	for _, p := range m.Params() {
		v := p.Var.Value
		if len(v.Shape) != 2 || (p.Name == llama.NameEmbed && !m.Config.TieWordEmbeddings) {
			continue // norms are noise; an untied embedding is one row a token
		}
		size := int64(4)
		if v.DType() == tensor.BF16 {
			size = 2
		}
		weights += size * int64(v.Numel())
	}
	avgCtx := int64(promptLen) + int64(n+1)/2
	kv = 2 * 4 * int64(m.Config.NumHiddenLayers) * int64(m.Config.KVDim()) * avgCtx
	return weights, kv
}

// maxBenchCache bounds bench generate's KV cache.
const maxBenchCache = 4 << 30

func newBenchGenerateCmd() *cobra.Command {
	var preset string
	var promptLen, n, runs int
	var bf16, asJSON bool
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Prompt-processing and decode tokens/s and peak memory of a preset",
		Long: `Builds a model of a preset's shape with random weights and measures, after
one warm-up, the median over --runs runs of: a --prompt-len prompt processed
in one forward pass (tokens/s), then -n tokens decoded one at a time through
the KV cache with the LM head (tokens/s). Decode GB/s counts the weight and
KV-cache bytes each step reads. Threads: GOMAXPROCS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if promptLen < 1 || n < 1 || runs < 1 {
				return fmt.Errorf("bench generate: --prompt-len, -n and --runs must be at least 1 (got %d, %d, %d)", promptLen, n, runs)
			}
			cfg, err := llama.PresetConfig(preset)
			if err != nil {
				return err
			}
			// Positions past the context are computable with random weights,
			// but the KV cache must fit: 2 × layers × positions × kv width.
			if cache := 8 * int64(cfg.NumHiddenLayers) * int64(promptLen+n) * int64(cfg.KVDim()); promptLen+n > 1<<20 || cache > maxBenchCache {
				return fmt.Errorf("bench generate: --prompt-len %d + -n %d need a %.1f GiB KV cache; at most %d GiB", promptLen, n, float64(cache)/(1<<30), maxBenchCache>>30)
			}
			m, err := llama.NewPreset(preset, benchSeed)
			if err != nil {
				return err
			}
			if bf16 {
				m.ToBF16()
			}
			g := tensor.NewRNG(2)
			prompt := make([]int, promptLen)
			for i := range prompt {
				prompt[i] = 3 + g.IntN(m.Config.VocabSize-3)
			}
			cache := m.NewKVCache(1, promptLen+n)
			// once runs the prompt and decodes steps tokens, timing both.
			once := func(steps int) (prefill, decode time.Duration, err error) {
				cache.Reset()
				start := time.Now()
				h, err := m.Forward(nil, llama.Input{IDs: prompt, Batch: 1, T: promptLen, Cache: cache})
				if err != nil {
					return 0, 0, err
				}
				m.Logits(nil, autograd.Const(h.Value.RowsView(promptLen-1, promptLen))) // the next token's logits
				prefill = time.Since(start)
				tok := prompt[len(prompt)-1]
				start = time.Now()
				for i := 0; i < steps; i++ {
					h, err := m.Forward(nil, llama.Input{IDs: []int{tok}, Batch: 1, T: 1, Cache: cache})
					if err != nil {
						return 0, 0, err
					}
					m.Logits(nil, h)
					tok = 3 + i%(m.Config.VocabSize-3)
				}
				return prefill, time.Since(start), nil
			}
			if _, _, err := once(1); err != nil { // warm-up: page in weights and buffers
				return err
			}
			var pps, dps []float64
			for r := 0; r < runs; r++ {
				p, d, err := once(n)
				if err != nil {
					return err
				}
				pps = append(pps, float64(promptLen)/p.Seconds())
				dps = append(dps, float64(n)/d.Seconds())
			}
			weightBytes, kvBytes := decodeBytes(m, promptLen, n)
			r := generateBench{
				Preset: preset, DType: "f32", PromptLen: promptLen, NewTokens: n, Runs: runs,
				PromptTokensPerS:    median(pps),
				DecodeTokensPerS:    median(dps),
				WeightBytesPerToken: weightBytes,
				KVBytesPerToken:     kvBytes,
				PeakRSSBytes:        peakRSSBytes(),
			}
			if bf16 {
				r.DType = "bf16"
			}
			r.DecodeGBPerS = r.DecodeTokensPerS * float64(weightBytes+kvBytes) / 1e9
			return writeBench(cmd.OutOrStdout(), asJSON, r, fmt.Sprintf(
				"%s (%s, median of %d): prompt %d tokens at %.0f tokens/s; decode %d tokens at %.1f tokens/s (%.1f GB/s of weights and KV cache); peak RSS %.0f MiB",
				preset, r.DType, runs, promptLen, r.PromptTokensPerS, n, r.DecodeTokensPerS, r.DecodeGBPerS, float64(r.PeakRSSBytes)/(1<<20)))
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&preset, "preset", "stories15M", fmt.Sprintf("model shape: one of %v", llama.PresetNames()))
	fl.IntVar(&promptLen, "prompt-len", 256, "prompt tokens processed in one forward")
	fl.IntVarP(&n, "max-new-tokens", "n", 64, "tokens decoded one at a time")
	fl.IntVar(&runs, "runs", 3, "timed runs after one warm-up; the median is reported")
	fl.BoolVar(&bf16, "bf16", false, "hold weight matrices (the embedding/LM head too) in bfloat16")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// median of xs (which it sorts).
func median(xs []float64) float64 {
	slices.Sort(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2]
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
}

// writeBench prints a benchmark result as indented JSON, or as its one-line
// summary.
func writeBench(w io.Writer, asJSON bool, result any, summary string) error {
	if asJSON {
		b, err := json.MarshalIndent(result, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	_, err := fmt.Fprintln(w, summary)
	return err
}
