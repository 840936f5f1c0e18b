package eval

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sampleResults() []Result {
	return []Result{
		{Task: "arc_easy", Data: "qa/arc_easy.jsonl", Shots: 5, N: 2376, Metrics: []Metric{
			{MetricAcc, 0.25, 0.0089}, {MetricAccNorm, 0.3, 0.0094}}},
		{Task: "perplexity", N: 1000, Metrics: []Metric{{MetricWordPPL, 12.5, math.NaN()}}},
	}
}

func TestWriteMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMarkdown(&b, sampleResults()); err != nil {
		t.Fatal(err)
	}
	want := "| task | metric | value | stderr | n |\n|---|---|---|---|---|\n" +
		"| arc_easy (5-shot) | acc | 0.2500 | 0.0089 | 2376 |\n" +
		"|  | acc_norm | 0.3000 | 0.0094 | 2376 |\n" +
		"| perplexity | word_perplexity | 12.5000 | — | 1000 |\n"
	if b.String() != want {
		t.Errorf("markdown:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	in := sampleResults()
	if err := WriteJSONFile(path, in); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"stderr": null`) || !strings.Contains(string(raw), `"name": "acc_norm"`) {
		t.Errorf("results JSON:\n%s", raw)
	}
	out, err := ReadJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Task != "arc_easy" || out[0].Shots != 5 || out[0].N != 2376 || out[0].Metrics[1] != in[0].Metrics[1] {
		t.Errorf("round trip: %+v", out)
	}
	if m := out[1].Metrics[0]; m.Value != 12.5 || !math.IsNaN(m.Stderr) {
		t.Errorf("NaN stderr round trip: %+v", m)
	}
}

func TestSampleNonFinite(t *testing.T) {
	var b bytes.Buffer
	if err := writeSample(&b, Sample{Index: 3, Loglik: []float64{-1.5, math.Inf(-1)}, Pred: 0, Gold: 1}); err != nil {
		t.Fatal(err)
	}
	if got, want := b.String(), `{"index":3,"loglik":[-1.5,null],"pred":0,"gold":1}`+"\n"; got != want {
		t.Errorf("sample line %q, want %q", got, want)
	}
}
