package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/serve"
)

func newLoadgenCmd() *cobra.Command {
	var o serve.LoadOptions
	var models string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "loadgen",
		Short: "Load a local gopeft (or any OpenAI-compatible) server and report throughput and latency",
		Long: `loadgen sends --num-prompts streamed completions to a server on this machine: models
drawn by power-law popularity (--alpha), Gamma arrivals of mean rate --rate and coefficient of
variation --cv (1: Poisson; --rate 0: all at once, or the Azure trace's own arrival times), prompt
and output lengths from --dataset. It reports completed and failed requests, throughput, TTFT,
TPOT, inter-token and end-to-end latency (mean, p50, p90, p99) and SLO attainment.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Models = splitList(models)
			if !asJSON {
				o.Progress = cmd.ErrOrStderr()
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			rep, err := serve.RunLoad(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				return enc.Encode(rep)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "completed %d, failed %d (429: %d) in %.2f s\n", rep.Completed, rep.Failed, rep.Rejected, rep.DurationS)
			fmt.Fprintf(w, "request throughput %.2f req/s, output throughput %.1f tok/s (%d in, %d out)\n", rep.RequestThroughput, rep.OutputThroughput, rep.TotalInputTokens, rep.TotalOutputTokens)
			for _, s := range []struct {
				name string
				s    serve.Stats
			}{{"TTFT", rep.TTFT}, {"TPOT", rep.TPOT}, {"ITL", rep.ITL}, {"E2E", rep.E2E}} {
				fmt.Fprintf(w, "%-5s ms: mean %8.2f  p50 %8.2f  p90 %8.2f  p99 %8.2f\n", s.name, s.s.Mean, s.s.P50, s.s.P90, s.s.P99)
			}
			fmt.Fprintf(w, "SLO attainment (TTFT ≤ %g ms): %.1f%%\n", o.SLOTTFTms, 100*rep.SLOAttainment)
			if rep.FirstError != "" {
				fmt.Fprintf(w, "first error: %s\n", rep.FirstError)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.URL, "url", "http://127.0.0.1:8000", "server to load (this machine only)")
	fl.StringVar(&models, "model", "", "comma-separated models (the base's served name, adapters), most popular first")
	fl.Float64Var(&o.Alpha, "alpha", 1, "power-law popularity exponent: model i is asked for ∝ (i+1)^-alpha")
	fl.Float64Var(&o.Rate, "rate", 0, "mean requests per second (0: all at once)")
	fl.Float64Var(&o.CV, "cv", 1, "coefficient of variation of the inter-arrival times (1: Poisson)")
	fl.IntVar(&o.NumPrompts, "num-prompts", 100, "requests to send")
	fl.IntVar(&o.MaxConcurrency, "max-concurrency", 0, "most requests in flight (0: no limit)")
	fl.StringVar(&o.Dataset, "dataset", "random", "random, sharegpt, azure-conv or azure-code")
	fl.StringVar(&o.DatasetPath, "dataset-path", "", "the dataset's file")
	fl.IntVar(&o.InputLen, "input-len", 32, "prompt tokens (random dataset)")
	fl.IntVar(&o.OutputLen, "output-len", 32, "tokens to generate (random and sharegpt datasets)")
	fl.Float64Var(&o.SLOTTFTms, "slo-ttft-ms", 1000, "TTFT objective for SLO attainment")
	fl.Uint64Var(&o.Seed, "seed", 0, "random seed of the workload")
	fl.BoolVar(&asJSON, "json", false, "print the report as one JSON object")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}
