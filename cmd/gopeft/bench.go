package main

import (
	"encoding/json"
	"fmt"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/tensor"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure speed and memory on models of published shapes with random weights",
	}
	cmd.AddCommand(newBenchGenerateCmd())
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

type generateBench struct {
	Preset           string  `json:"preset"`
	DType            string  `json:"dtype"`
	PromptLen        int     `json:"prompt_len"`
	NewTokens        int     `json:"new_tokens"`
	PromptTokensPerS float64 `json:"prompt_tokens_per_s"`
	DecodeTokensPerS float64 `json:"decode_tokens_per_s"`
	// WeightBytesPerToken is what one decode step reads (every matrix once).
	WeightBytesPerToken int64   `json:"weight_bytes_per_token"`
	DecodeGBPerS        float64 `json:"decode_gb_per_s"`
	PeakRSSBytes        int64   `json:"peak_rss_bytes"`
}

func newBenchGenerateCmd() *cobra.Command {
	var preset string
	var promptLen, n int
	var bf16, asJSON bool
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Prompt-processing and decode tokens/s and peak memory of a preset",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := llama.NewPreset(preset, 1)
			if err != nil {
				return err
			}
			var weightBytes int64
			for _, p := range m.Params() {
				if bf16 && len(p.Var.Value.Shape) == 2 && p.Name != llama.NameEmbed {
					p.Var.Value = p.Var.Value.ToBF16()
				}
				if len(p.Var.Value.Shape) == 2 && p.Name == llama.NameEmbed && !m.Config.TieWordEmbeddings {
					continue // decoding reads one embedding row, not the table
				}
				size := int64(4)
				if p.Var.Value.DType() == tensor.BF16 {
					size = 2
				}
				weightBytes += size * int64(p.Var.Value.Numel())
			}
			g := tensor.NewRNG(2)
			prompt := make([]int, promptLen)
			for i := range prompt {
				prompt[i] = 3 + g.IntN(m.Config.VocabSize-3)
			}
			cache := m.NewKVCache(1, promptLen+n)
			start := time.Now()
			h, err := m.Forward(nil, llama.Input{IDs: prompt, Batch: 1, T: promptLen, Cache: cache})
			if err != nil {
				return err
			}
			_ = h
			prefill := time.Since(start)
			tok := prompt[len(prompt)-1]
			start = time.Now()
			for i := 0; i < n; i++ {
				h, err := m.Forward(nil, llama.Input{IDs: []int{tok}, Batch: 1, T: 1, Cache: cache})
				if err != nil {
					return err
				}
				logits := m.Logits(nil, h).Value.Data
				tok = 3 + i%(m.Config.VocabSize-3)
				_ = logits
			}
			decode := time.Since(start)
			r := generateBench{
				Preset: preset, DType: "f32", PromptLen: promptLen, NewTokens: n,
				PromptTokensPerS:    float64(promptLen) / prefill.Seconds(),
				DecodeTokensPerS:    float64(n) / decode.Seconds(),
				WeightBytesPerToken: weightBytes,
				PeakRSSBytes:        peakRSSBytes(),
			}
			if bf16 {
				r.DType = "bf16"
			}
			r.DecodeGBPerS = r.DecodeTokensPerS * float64(weightBytes) / 1e9
			out := cmd.OutOrStdout()
			if asJSON {
				b, _ := json.MarshalIndent(r, "", "  ")
				fmt.Fprintln(out, string(b))
				return nil
			}
			fmt.Fprintf(out, "%s (%s): prompt %d tokens at %.0f tokens/s; decode %d tokens at %.1f tokens/s (%.1f GB/s of weights); peak RSS %.0f MiB\n",
				preset, r.DType, promptLen, r.PromptTokensPerS, n, r.DecodeTokensPerS, r.DecodeGBPerS, float64(r.PeakRSSBytes)/(1<<20))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&preset, "preset", "stories15M", fmt.Sprintf("model shape: one of %v", llama.PresetNames()))
	fl.IntVar(&promptLen, "prompt-len", 256, "prompt tokens processed in one forward")
	fl.IntVarP(&n, "max-new-tokens", "n", 64, "tokens decoded one at a time")
	fl.BoolVar(&bf16, "bf16", false, "hold weight matrices in bfloat16")
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
