package serve

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/gopeft/internal/shared"
)

// The load generator runs the random, ShareGPT and Azure workloads against
// a loopback server and reports every key; it refuses other hosts.
func TestLoadgen(t *testing.T) {
	f := getFixture(t)
	e, ts := start(t, f, Config{MaxBatch: 8, MaxQueue: 64})
	for _, o := range []LoadOptions{
		{Dataset: "random", InputLen: 12, OutputLen: 6, Rate: 200, CV: 4},
		{Dataset: "sharegpt", DatasetPath: shared.Path(t, "data/serving/ShareGPT_V3_filtered_1000_prompts.json"), OutputLen: 5, Rate: 0},
		{Dataset: "azure-conv", DatasetPath: shared.Path(t, "data/serving/AzureLLMInferenceTrace_conv.csv"), Rate: 200, CV: 1},
	} {
		o.URL, o.Models, o.Alpha, o.NumPrompts, o.MaxConcurrency, o.Seed = ts.URL, []string{"alpha", "stories260K", "beta", "gamma"}, 1, 12, 6, 1
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		rep, err := RunLoad(ctx, o)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", o.Dataset, err)
		}
		if rep.Completed != 12 || rep.Failed != 0 || rep.TotalOutputTokens == 0 || rep.TTFT.P50 <= 0 || rep.E2E.P99 < rep.E2E.P50 {
			t.Errorf("%s: %+v", o.Dataset, rep)
		}
		b, _ := json.Marshal(rep)
		for _, k := range []string{"completed", "failed", "duration_s", "request_throughput", "output_throughput", "ttft_ms", "tpot_ms", "e2e_ms", "slo_attainment", `"p99"`} {
			if !strings.Contains(string(b), k) {
				t.Errorf("the JSON report lacks %s: %s", k, b)
			}
		}
	}
	waitEmpty(t, e)
	if _, err := RunLoad(context.Background(), LoadOptions{URL: "http://example.com:8000", Models: []string{"x"}, NumPrompts: 1}); err == nil {
		t.Error("loadgen sent to another host")
	}
}

// Gamma inter-arrival times have the asked mean and coefficient of
// variation; popularity follows the power law.
func TestWorkloadShape(t *testing.T) {
	for _, cv := range []float64{1, 4} {
		reqs, err := buildWorkload(LoadOptions{Models: []string{"a", "b", "c"}, Alpha: 1, Rate: 10, CV: cv, NumPrompts: 20000, InputLen: 4, OutputLen: 2, Seed: 3}, 0)
		if err != nil {
			t.Fatal(err)
		}
		var gaps []float64
		count := map[string]int{}
		for i, r := range reqs {
			count[r.model]++
			if i > 0 {
				gaps = append(gaps, (r.at - reqs[i-1].at).Seconds())
			}
		}
		mean, sd := meanSD(gaps)
		if mean < 0.09 || mean > 0.11 || sd/mean < cv*0.85 || sd/mean > cv*1.15 {
			t.Errorf("cv %g: gaps of mean %.4f s and cv %.3f, want 0.1 s and %g", cv, mean, sd/mean, cv)
		}
		if r := float64(count["a"]) / float64(count["b"]); r < 1.8 || r > 2.2 {
			t.Errorf("popularity a/b %.2f, want 2 (alpha 1)", r)
		}
	}
}

func meanSD(xs []float64) (float64, float64) {
	var s, s2 float64
	for _, x := range xs {
		s += x
	}
	m := s / float64(len(xs))
	for _, x := range xs {
		s2 += (x - m) * (x - m)
	}
	return m, math.Sqrt(s2 / float64(len(xs)))
}
