package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/model/format"
)

// bench llama2c writes the benchmark's weights as a checkpoint that loads
// back (and so runs in llama2.c's runner); bench generate runs on a preset.
func TestBenchLlama2cAndGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s15.bin")
	if _, err := run(t, "bench", "llama2c", "--preset", "stories15M", "--seq-len", "300", "-o", path); err != nil {
		t.Fatal(err)
	}
	h, _, err := format.ReadLlama2c(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := (format.Llama2cHeader{Dim: 288, HiddenDim: 768, NLayers: 6, NHeads: 6, NKVHeads: 6, VocabSize: 32000, SeqLen: 300, SharedClassifier: true}); h != want {
		t.Errorf("header %+v, want %+v", h, want)
	}
	if _, err := run(t, "bench", "llama2c", "--preset", "stories15M"); err == nil {
		t.Error("no --output accepted")
	}
	if testing.Short() {
		return
	}
	out, err := run(t, "bench", "generate", "--preset", "stories15M", "--prompt-len", "8", "-n", "2", "--runs", "1", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r generateBench
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if r.PromptTokensPerS <= 0 || r.DecodeTokensPerS <= 0 || r.WeightBytesPerToken != 4*(6*(4*288*288+3*288*768)+32000*288) {
		t.Errorf("bench result %+v", r)
	}
}

// Bench lengths and counts are checked before anything is allocated.
func TestBenchRefusesBadSizes(t *testing.T) {
	for args, want := range map[string]string{
		"bench train --batch -1":                     "--batch and --steps must be at least 1",
		"bench train --seq 100000":                   "--seq 100000: must be in [1, 256]",
		"bench train --batch 1000 --seq 256":         "256000 tokens a step",
		"bench train --rank 0":                       "--rank (recipe peft.r) is 0",
		"bench train --optimizer sgd":                `--optimizer "sgd": want adamw or adamw_8bit`,
		"bench generate --prompt-len 100000000":      "KV cache; at most 4 GiB",
		"bench train --method full --targets q_proj": "--targets is not a setting of method FULL",
	} {
		if _, err := run(t, strings.Fields(args)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", args, err, want)
		}
	}
}
