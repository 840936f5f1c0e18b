package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
)

// convert --quant writes a bitsandbytes checkpoint that generates what
// --quant on load generates; merge into a quantized base writes bf16 or
// re-quantizes with the error reported; the refusals name the flags.
func TestQuantCommands(t *testing.T) {
	dir := shared.Path(t, "data/models/stories260K")
	bin, tok := filepath.Join(dir, "stories260K.bin"), filepath.Join(dir, "tok512.bin")
	tmp := t.TempDir()
	gen := func(args ...string) string {
		t.Helper()
		out, err := run(t, append([]string{"generate", "--tokenizer", tok, "--temperature", "0", "-n", "24", "--prompt", "Lily"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	nf4 := filepath.Join(tmp, "nf4")
	if _, err := run(t, "convert", "--model", bin, "--quant", "nf4", "--double-quant", "--output", nf4); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(nf4, "config.json"))
	if err != nil || !strings.Contains(string(cfg), `"bnb_4bit_quant_type":"nf4"`) && !strings.Contains(string(cfg), `"bnb_4bit_quant_type": "nf4"`) {
		t.Fatalf("config.json lacks the quantization_config: %v\n%s", err, cfg)
	}
	if a, b := gen("--model", nf4), gen("--model", bin, "--quant", "nf4", "--double-quant"); a != b {
		t.Errorf("the converted NF4 checkpoint generates %q, --quant on load %q", a, b)
	}
	m, err := llama.Load(nf4, llama.LoadOptions{})
	if err != nil || m.Quantization() != "nf4+dq" {
		t.Fatalf("loaded back as %q (%v)", m.Quantization(), err)
	}

	// An adapter merged into the quantized base.
	adapter := shared.Path(t, "golden/stories260K/lora")
	hf := shared.Path(t, "golden/stories260K/hf")
	out, err := run(t, "merge", "--model", hf, "--quant", "nf4", "--adapter", adapter, "--requantize", "--output", filepath.Join(tmp, "mq"))
	if err != nil || !strings.Contains(out, "rounding error max") {
		t.Fatalf("merge --requantize: %v\n%s", err, out)
	}
	if m, err := llama.Load(filepath.Join(tmp, "mq"), llama.LoadOptions{}); err != nil || m.Quantization() != "nf4" {
		t.Fatalf("re-quantized merge loads as %q (%v)", m.Quantization(), err)
	}
	if _, err := run(t, "merge", "--model", hf, "--quant", "nf4", "--adapter", adapter, "--output", filepath.Join(tmp, "mb")); err != nil {
		t.Fatal(err)
	}
	raw, ts, err := format.ReadHFDir(filepath.Join(tmp, "mb"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "quantization_config") || ts["model.layers.0.self_attn.q_proj.weight"].DType != format.BF16 || ts[llama.NameEmbed].DType != format.F32 {
		t.Fatalf("the merge into a quantized base: q_proj %s, embedding %s, config %s", ts["model.layers.0.self_attn.q_proj.weight"].DType, ts[llama.NameEmbed].DType, raw)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"merge", "--model", hf, "--adapter", adapter, "--requantize", "--output", filepath.Join(tmp, "x")}, "--requantize: the base is not quantized"},
		{[]string{"generate", "--model", bin, "--quant", "q4_0"}, "--quant: unknown quantization"},
		{[]string{"generate", "--model", bin, "--double-quant"}, "--double-quant"},
		{[]string{"train", "--model", bin, "--quant", "nf4", "--method", "FULL", "--data", filepath.Join(shared.Path(t, "data/text"), "tinyshakespeare.txt"), "--output", filepath.Join(tmp, "full")}, "full fine-tuning"},
	} {
		if _, err := run(t, c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.args, err, c.want)
		}
	}
}
