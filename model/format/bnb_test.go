package format

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/quant"
)

func bnbTensors(t *testing.T, mod string, q *quant.Tensor4, into map[string]*Tensor) {
	t.Helper()
	for k, r := range q.StateDict() {
		into[mod+"."+k] = &Tensor{Name: mod + "." + k, DType: DType(r.DType), Shape: r.Shape, Data: r.Data}
	}
}

func randWeight(r *rand.Rand, n int) []float32 {
	w := make([]float32, n)
	for i := range w {
		w[i] = float32(r.NormFloat64()) * 0.02
	}
	return w
}

// TestReadBnbWeights: 4-bit modules (with and without double quantization)
// and an 8-bit one come back as written; other tensors stay in the map.
func TestReadBnbWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, double := range []bool{false, true} {
		ts := map[string]*Tensor{
			"model.norm.weight": {Name: "model.norm.weight", DType: F32, Shape: []int{4}, Data: make([]byte, 16)},
		}
		q := quant.Quantize4(quant.NF4, randWeight(r, 48*70), []int{48, 70}, double)
		bnbTensors(t, "model.layers.0.self_attn.q_proj", q, ts)
		q2 := quant.Quantize4(quant.NF4, randWeight(r, 64*64), []int{64, 64}, double)
		bnbTensors(t, "model.layers.1.mlp.down_proj", q2, ts)
		cfg, err := ParseQuantizationConfig("config.json", []byte(`{"hidden_size": 4, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": `+map[bool]string{true: "true", false: "false"}[double]+`, "bnb_4bit_compute_dtype": "bfloat16"}}`))
		if err != nil {
			t.Fatal(err)
		}
		w, err := ReadBnbWeights(cfg, ts)
		if err != nil {
			t.Fatal(err)
		}
		if len(w.Q4) != 2 || len(ts) != 1 || ts["model.norm.weight"] == nil {
			t.Fatalf("double=%v: %d 4-bit modules, %d tensors left", double, len(w.Q4), len(ts))
		}
		got, want := w.Q4["model.layers.0.self_attn.q_proj"].Dequantize(nil), q.Dequantize(nil)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("double=%v: element %d: %g, want %g", double, i, got[i], want[i])
			}
		}
		// The config disagrees with the tensors: an error naming one.
		ts2 := map[string]*Tensor{}
		bnbTensors(t, "m.q_proj", q, ts2)
		bad := *cfg
		bad.DoubleQuant = !double
		if _, err := ReadBnbWeights(&bad, ts2); err == nil || !strings.Contains(err.Error(), "m.q_proj.weight.quant_state.bitsandbytes__nf4") {
			t.Errorf("double=%v: config mismatch gave %v", double, err)
		}
	}

	// 8-bit.
	w8 := quant.QuantizeInt8(randWeight(r, 6*10), 6, 10)
	cb := make([]byte, len(w8.CB))
	for i, c := range w8.CB {
		cb[i] = byte(c)
	}
	scb := make([]byte, 4*6)
	for i, s := range w8.SCB {
		b := math.Float32bits(s)
		scb[4*i], scb[4*i+1], scb[4*i+2], scb[4*i+3] = byte(b), byte(b>>8), byte(b>>16), byte(b>>24)
	}
	ts := map[string]*Tensor{
		"l.weight":        {DType: "I8", Shape: []int{6, 10}, Data: cb},
		"l.SCB":           {DType: F32, Shape: []int{6}, Data: scb},
		"l.weight_format": {DType: "U8", Shape: []int{}, Data: []byte{0}},
	}
	cfg, err := ParseQuantizationConfig("config.json", []byte(`{"quantization_config": {"load_in_8bit": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	w, err := ReadBnbWeights(cfg, ts)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 0 || w.Q8["l"] == nil || w.Q8["l"].SCB[3] != w8.SCB[3] || w.Q8["l"].CB[17] != w8.CB[17] {
		t.Fatalf("8-bit weight not read back: %d tensors left", len(ts))
	}
	ts = map[string]*Tensor{
		"l.weight": {DType: "I8", Shape: []int{6, 10}, Data: cb},
		"l.SCB":    {DType: F32, Shape: []int{5}, Data: scb[:20]},
	}
	if _, err := ReadBnbWeights(nil, ts); err == nil || !strings.Contains(err.Error(), "l.SCB") {
		t.Errorf("SCB of the wrong length gave %v", err)
	}
}

func TestParseQuantizationConfigRefuses(t *testing.T) {
	for _, c := range []struct{ cfg, want string }{
		{`{"quantization_config": {"quant_method": "gptq", "bits": 4}}`, `"gptq"`},
		{`{"quantization_config": {"quant_method": "awq", "bits": 4}}`, `"awq"`},
		{`{"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "int4"}}`, `"int4"`},
		{`{"quantization_config": {"load_in_4bit": true, "load_in_8bit": true}}`, "exactly one"},
	} {
		_, err := ParseQuantizationConfig("config.json", []byte(c.cfg))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "config.json") {
			t.Errorf("%s: error %v, want one naming config.json and %s", c.cfg, err, c.want)
		}
	}
	if c, err := ParseQuantizationConfig("config.json", []byte(`{"hidden_size": 8}`)); c != nil || err != nil {
		t.Errorf("unquantized config: %v, %v", c, err)
	}
}

func FuzzParseQuantizationConfig(f *testing.F) {
	f.Add([]byte(`{"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true}}`))
	f.Add([]byte(`{"quantization_config": {"quant_method": "gptq"}}`))
	f.Add([]byte(`{"quantization_config": null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseQuantizationConfig("config.json", data)
		if err == nil && c != nil && c.Load4bit == c.Load8bit {
			t.Fatalf("accepted %q with load_in_4bit == load_in_8bit", data)
		}
	})
}
