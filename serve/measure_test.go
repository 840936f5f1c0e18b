package serve

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tokenizer"
)

// The measurements of docs/serving.md. Each benchmark builds a preset
// shape with random weights, 100 random LoRA adapters (rank 8 on q, k, v,
// o; B non-zero, so every adapter changes the model) and a copy of the
// base with the first adapter merged, serves both over loopback HTTP and
// runs the load generator against them. They take minutes: run them with
//
//	GOPEFT_MEASURE=1 go test ./serve -run '^$' -bench 'ServeAdapters|ServeLatency' -benchtime 1x -timeout 90m
//
// Each runs every side in turn, then all of them again (GOPEFT_MEASURE_REPS
// times, default 2), so the sides alternate on a machine whose load
// changes; -count would repeat each side back to back instead.

type measureSetup struct {
	tok           tokenizer.Tokenizer
	multi, merged *httptest.Server
	adapters      []string
}

var (
	measureMu     sync.Mutex
	measureSetups = map[string]*measureSetup{}
)

const measureAdapters = 100

func measureServers(b *testing.B, preset string) *measureSetup {
	measureMu.Lock()
	defer measureMu.Unlock()
	if s := measureSetups[preset]; s != nil {
		return s
	}
	tok, err := tokenizer.Load(shared.Path(b, "data/tokenizers/llama2/tokenizer.bin"))
	if err != nil {
		b.Fatal(err)
	}
	s := &measureSetup{tok: tok}
	newModel := func() *peft.Model {
		m, err := llama.NewPreset(preset, 1)
		if err != nil {
			b.Fatal(err)
		}
		return peft.Wrap(m)
	}
	addRandom := func(pm *peft.Model, name string, seed uint64) {
		cfg := lora.NewConfig()
		if err := peft.DecodeConfig([]byte(`{"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "r": 8, "lora_alpha": 16}`), cfg, "measure", false); err != nil {
			b.Fatal(err)
		}
		a, err := pm.AddAdapter(name, lora.New(cfg))
		if err != nil {
			b.Fatal(err)
		}
		g := tensor.NewRNG(seed)
		for _, p := range a.Params {
			p.Var.Value.Normal(g, 0, 0.02)
		}
	}
	multi := newModel()
	for i := range measureAdapters {
		name := fmt.Sprintf("a%03d", i)
		addRandom(multi, name, uint64(1000+i))
		s.adapters = append(s.adapters, name)
	}
	merged := newModel()
	addRandom(merged, "a000", 1000)
	if _, err := merged.MergeAndUnload(); err != nil {
		b.Fatal(err)
	}
	cfg := Config{MaxBatch: 32, MaxQueue: 4096, MaxCPULoras: measureAdapters}
	s.multi = httptest.NewServer(NewServer(NewEngine(multi, cfg, nil), preset, tok))
	s.merged = httptest.NewServer(NewServer(NewEngine(peft.Wrap(merged.Base), cfg, nil), preset, tok))
	measureSetups[preset] = s
	return s
}

func measureRun(b *testing.B, o LoadOptions) *LoadReport {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rep, err := RunLoad(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	if rep.Failed > 0 {
		b.Fatalf("%d requests failed: %s", rep.Failed, rep.FirstError)
	}
	return rep
}

func measureShort(b *testing.B) int {
	if os.Getenv("GOPEFT_MEASURE") == "" {
		b.Skip("set GOPEFT_MEASURE=1: these runs take minutes (see measure_test.go)")
	}
	reps := 2
	if v := os.Getenv("GOPEFT_MEASURE_REPS"); v != "" {
		fmt.Sscan(v, &reps)
	}
	return reps
}

// BenchmarkServeAdapters: request throughput at saturation (every request
// sent at once, random prompts, exactly --output-len tokens each) with 1,
// 10 and 100 distinct adapters (popularity α = 1) against the merged model.
func BenchmarkServeAdapters(b *testing.B) {
	reps := measureShort(b)
	shapes := []struct {
		preset           string
		prompts, in, out int
	}{{"stories15M", 128, 32, 32}, {"stories110M", 64, 16, 16}}
	if v := os.Getenv("GOPEFT_MEASURE_PRESET"); v != "" {
		shapes = slices.DeleteFunc(shapes, func(s struct {
			preset           string
			prompts, in, out int
		}) bool {
			return s.preset != v
		})
	}
	for _, sh := range shapes {
		s := measureServers(b, sh.preset)
		for rep := range reps * 4 {
			n := []int{0, 1, 10, 100}[rep%4]
			name := fmt.Sprintf("%s/adapters=%d/rep=%d", sh.preset, n, rep/4+1)
			if n == 0 {
				name = fmt.Sprintf("%s/merged/rep=%d", sh.preset, rep/4+1)
			}
			b.Run(name, func(b *testing.B) {
				o := LoadOptions{URL: s.multi.URL, Models: s.adapters[:n], Alpha: 1, Dataset: "random",
					NumPrompts: sh.prompts, InputLen: sh.in, OutputLen: sh.out, Seed: 1}
				if n == 0 {
					o.URL, o.Models = s.merged.URL, []string{sh.preset}
				}
				var rep *LoadReport
				for b.Loop() {
					rep = measureRun(b, o)
				}
				b.ReportMetric(rep.RequestThroughput, "req/s")
				b.ReportMetric(rep.OutputThroughput, "tok/s")
				b.ReportMetric(rep.TPOT.P50, "TPOT-p50-ms")
			})
		}
	}
}

// BenchmarkServeLatency: TTFT and TPOT under the Azure conversation
// trace's arrivals (its first requests, lengths scaled into the context,
// times stretched to this machine) and under Gamma arrivals with C = 1 and
// C = 4, over 10 adapters (α = 1) and the merged model.
func BenchmarkServeLatency(b *testing.B) {
	reps := measureShort(b)
	trace := shared.Path(b, "data/serving/AzureLLMInferenceTrace_conv.csv")
	const preset = "stories15M"
	s := measureServers(b, preset)
	scale := 4.0
	if v := os.Getenv("GOPEFT_MEASURE_TIME_SCALE"); v != "" {
		fmt.Sscan(v, &scale)
	}
	// The Gamma runs keep the replayed segment's mean rate.
	const prompts = 40
	seg, err := buildWorkload(LoadOptions{Models: []string{preset}, Dataset: "azure-conv", DatasetPath: trace, NumPrompts: prompts, TimeScale: scale}, 0)
	if err != nil {
		b.Fatal(err)
	}
	rate := float64(prompts-1) / seg[prompts-1].at.Seconds()
	b.Logf("Azure trace, first %d requests, times ×%g: %.3f req/s", prompts, scale, rate)
	for _, arr := range []string{"azure", "gamma-c1", "gamma-c4"} {
		for rep := range 2 * reps {
			side := []string{"merged", "adapters=10"}[rep%2]
			b.Run(fmt.Sprintf("%s/%s/%s/rep=%d", preset, arr, side, rep/2+1), func(b *testing.B) {
				o := LoadOptions{URL: s.multi.URL, Models: s.adapters[:10], Alpha: 1, Dataset: "azure-conv", DatasetPath: trace,
					NumPrompts: prompts, TimeScale: scale, Seed: 2}
				if side == "merged" {
					o.URL, o.Models = s.merged.URL, []string{preset}
				}
				switch arr {
				case "gamma-c1":
					o.Rate, o.CV = rate, 1
				case "gamma-c4":
					o.Rate, o.CV = rate, 4
				}
				var rep *LoadReport
				for b.Loop() {
					rep = measureRun(b, o)
				}
				b.ReportMetric(rep.RequestThroughput, "req/s")
				for _, m := range []struct {
					name string
					s    Stats
				}{{"TTFT", rep.TTFT}, {"TPOT", rep.TPOT}} {
					b.ReportMetric(m.s.P50, m.name+"-p50-ms")
					b.ReportMetric(m.s.P90, m.name+"-p90-ms")
					b.ReportMetric(m.s.P99, m.name+"-p99-ms")
				}
			})
		}
	}
}
