package llama

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
)

var quantOpts = []LoadOptions{
	{Quant: quant.KindNF4}, {Quant: quant.KindNF4, DoubleQuant: true}, {Quant: quant.KindFP4}, {Quant: quant.KindInt8},
	{Quant: quant.KindNF4, BF16: true},
}

// quantSeq is longer than kernels.RowInvariantRows, so that the products
// take the blocked path, whose sums match Gemm's on the dequantized weights
// bit for bit (the GEMV paths group the sums differently).
var quantSeq = func() []int {
	s := []int{1}
	for i := 1; i < 70; i++ {
		s = append(s, 3+(i*157)%500)
	}
	return s
}()

// Quantizing on load replaces exactly the decoder Linears (the embedding,
// norms and LM head keep their storage), the model computes what it
// computes over the dequantized weights, in bf16 with BF16 (bit for bit: more rows than the
// GEMV path takes), and its logits stay near the float32 model's.
func TestLoadQuantized(t *testing.T) {
	path := shared.Path(t, "golden/stories260K/hf")
	f32 := load(t, path, LoadOptions{})
	ref := logitsOf(t, f32, quantSeq)
	for _, opt := range quantOpts {
		m := load(t, path, opt)
		for _, p := range m.Params() {
			if IsDecoderLinear(p.Name) != p.Var.Value.Quantized() {
				t.Fatalf("%+v: %s is %v", opt, p.Name, p.Var.Value.DType())
			}
		}
		if opt.BF16 && m.Embed.Weight.Value.DType() != tensor.BF16 {
			t.Fatalf("%+v: the embedding is %v", opt, m.Embed.Weight.Value.DType())
		}
		got := logitsOf(t, m, quantSeq)
		deq := load(t, path, opt)
		// With BF16 the 4-bit products are bf16 ones (bitsandbytes'
		// compute dtype): the same as on the weights dequantized to bf16.
		deq.Dequantize(opt.BF16)
		if d := maxDiff(got, logitsOf(t, deq, quantSeq)); d != 0 {
			t.Errorf("%+v: logits differ from the dequantized model's by %g", opt, d)
		}
		if d := maxDiff(got, ref); d > 8 || d == 0 { // a 260K-parameter model: 4-bit moves its logits by a few units
			t.Errorf("%+v: max |logit - float32 logit| = %g", opt, d)
		}
		t.Logf("%s: max |logit − f32| = %.3f", m.Quantization(), maxDiff(got, ref))
	}
}

// A model written in bitsandbytes' layout loads back through Load as a
// pre-quantized checkpoint: the same codes and scales, the same logits bit
// for bit as quantizing on load; its config carries quantization_config.
// A llama2.c model (q/k rows permuted on the way) gives the same greedy
// text.
func TestSaveLoadBnb(t *testing.T) {
	hf := shared.Path(t, "golden/stories260K/hf")
	f32 := load(t, hf, LoadOptions{})
	for _, opt := range quantOpts[:4] {
		dir := filepath.Join(t.TempDir(), string(opt.Quant))
		if err := SaveHFWith(f32, dir, SaveOptions{Quant: opt.Quant, DoubleQuant: opt.DoubleQuant}); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, format.HFConfigFile))
		if err != nil {
			t.Fatal(err)
		}
		bc, err := format.ParseQuantizationConfig("config.json", raw)
		if err != nil || bc == nil {
			t.Fatalf("%+v: quantization_config: %v %v", opt, bc, err)
		}
		back := load(t, dir, LoadOptions{})
		if back.Quantization() == "" {
			t.Fatalf("%+v: loaded back unquantized", opt)
		}
		want := load(t, hf, opt)
		if d := maxDiff(logitsOf(t, back, quantSeq), logitsOf(t, want, quantSeq)); d != 0 {
			t.Errorf("%+v: logits of the written checkpoint differ by %g", opt, d)
		}
		// Written again from the loaded quantized model: the same bytes.
		dir2 := filepath.Join(t.TempDir(), "again")
		if err := SaveHF(back, dir2); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(filepath.Join(dir, format.HFSafetensorsFile))
		b, _ := os.ReadFile(filepath.Join(dir2, format.HFSafetensorsFile))
		if string(a) != string(b) {
			t.Errorf("%+v: rewriting a loaded bitsandbytes checkpoint changed its bytes", opt)
		}
		// Asking for another quantization of a quantized checkpoint.
		if _, err := Load(dir, LoadOptions{Quant: quant.KindFP4}); opt.Quant != quant.KindFP4 && (err == nil || !strings.Contains(err.Error(), "already quantized")) {
			t.Errorf("%+v: loading as fp4 gave %v", opt, err)
		}
	}
	// llama2.c → bitsandbytes HF (q/k permuted before quantizing).
	l2c := load(t, shared.Path(t, "data/models/stories260K/stories260K.bin"), LoadOptions{})
	dir := filepath.Join(t.TempDir(), "l2c")
	if err := SaveHFWith(l2c, dir, SaveOptions{Quant: quant.KindNF4}); err != nil {
		t.Fatal(err)
	}
	a := logitsOf(t, load(t, dir, LoadOptions{}), quantSeq)
	b := logitsOf(t, load(t, shared.Path(t, "data/models/stories260K/stories260K.bin"), LoadOptions{Quant: quant.KindNF4}), quantSeq)
	if d := maxDiff(a, b); d > 1e-4 {
		t.Errorf("llama2.c model written as nf4: logits differ from nf4 on load by %g", d)
	}
}

// Bad quantization options are refused before anything is read.
func TestQuantOptionErrors(t *testing.T) {
	path := shared.Path(t, "golden/stories260K/hf")
	for _, c := range []struct {
		opt  LoadOptions
		want string
	}{
		{LoadOptions{Quant: "int4"}, "unknown quantization"},
		{LoadOptions{Quant: quant.KindInt8, DoubleQuant: true}, "double quantization"},
		{LoadOptions{DoubleQuant: true}, "double quantization"},
	} {
		if _, err := Load(path, c.opt); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.opt, err, c.want)
		}
	}
}

// A preset drawn with quantization holds what NewPreset's weights give
// quantized.
func TestNewRandomWithQuant(t *testing.T) {
	cfg := Presets["stories15M"]
	cfg.NumHiddenLayers, cfg.VocabSize = 1, 512
	a, err := NewRandomWith(cfg, 3, LoadOptions{Quant: quant.KindNF4})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewRandom(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Quantize(quant.KindNF4, false); err != nil {
		t.Fatal(err)
	}
	for i, p := range a.Params() {
		x, y := p.Var.Value.ToF32().Data, b.Params()[i].Var.Value.ToF32().Data
		for j := range x {
			if math.Float32bits(x[j]) != math.Float32bits(y[j]) {
				t.Fatalf("%s differs at %d", p.Name, j)
			}
		}
	}
}

// Gradient checkpointing, of every block or of the first few
// (CheckpointBlocks), changes no loss and no gradient, bit for bit.
func TestGradientCheckpointingSameGradients(t *testing.T) {
	cfg := Presets["stories15M"]
	cfg.HiddenSize, cfg.IntermediateSize, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.NumHiddenLayers, cfg.VocabSize = 64, 96, 4, 2, 3, 50
	m, err := NewRandomWith(cfg, 4, LoadOptions{Quant: quant.KindNF4})
	if err != nil {
		t.Fatal(err)
	}
	// Train the norms, so that gradients cross every block.
	var ps []*autograd.Var
	for _, b := range m.Layers {
		b.InputNorm.Weight.SetTrainable(true)
		ps = append(ps, b.InputNorm.Weight)
	}
	in := Input{IDs: []int{1, 5, 9, 3, 7, 2, 11, 4}, Batch: 2, T: 4}
	run := func(ckpt bool, blocks int) (float32, [][]float32) {
		m.GradientCheckpointing, m.CheckpointBlocks = ckpt, blocks
		tp := autograd.NewTape()
		loss, err := m.Loss(&nn.Pass{Tape: tp, Training: true}, in, LMLabels(in))
		if err != nil {
			t.Fatal(err)
		}
		tp.Backward(loss)
		var g [][]float32
		for _, p := range ps {
			g = append(g, append([]float32(nil), p.Grad.Data...))
			p.ZeroGrad()
		}
		return loss.Value.Data[0], g
	}
	l1, g1 := run(false, 0)
	for _, c := range []struct {
		all    bool
		blocks int
		want   []bool // which blocks are recomputed
	}{{true, 0, []bool{true, true, true}}, {false, 2, []bool{true, true, false}}, {true, 1, []bool{true, false, false}}} {
		for i, w := range c.want {
			m.GradientCheckpointing, m.CheckpointBlocks = c.all, c.blocks
			if m.checkpointed(i) != w {
				t.Errorf("gradient checkpointing %v, %d blocks: block %d recomputed %v, want %v", c.all, c.blocks, i, !w, w)
			}
		}
		l2, g2 := run(c.all, c.blocks)
		if l1 != l2 {
			t.Fatalf("loss %g plain, %g checkpointed (%v, %d blocks)", l1, l2, c.all, c.blocks)
		}
		for i := range g1 {
			for j := range g1[i] {
				if g1[i][j] != g2[i][j] {
					t.Fatalf("layer %d norm gradient %d: %g plain, %g checkpointed (%v, %d blocks)", i, j, g1[i][j], g2[i][j], c.all, c.blocks)
				}
			}
		}
	}
}

// A quantization_config we cannot honour is an error naming it.
func TestLoadBadQuantizationConfig(t *testing.T) {
	hf := shared.Path(t, "golden/stories260K/hf")
	cfg, err := os.ReadFile(filepath.Join(hf, format.HFConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.ReadFile(filepath.Join(hf, format.HFSafetensorsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ qc, want string }{
		{`{"quant_method":"gptq","bits":4}`, `quant_method "gptq" is not supported`},
		{`{"quant_method":"bitsandbytes","load_in_4bit":true,"bnb_4bit_quant_type":"nf4"}`, "no tensor is quantized"},
	} {
		dir := t.TempDir()
		js := strings.Replace(string(cfg), "{", `{"quantization_config":`+c.qc+",", 1)
		if err := os.WriteFile(filepath.Join(dir, format.HFConfigFile), []byte(js), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, format.HFSafetensorsFile), st, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, LoadOptions{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.qc, err, c.want)
		}
	}
}
