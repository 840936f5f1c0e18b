package format

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// roundTripLlama2c writes h and tensors, reads the file back and checks
// every tensor is byte-identical; it returns the file.
func roundTripLlama2c(t *testing.T, h Llama2cHeader, tensors map[string]*Tensor) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.bin")
	if err := WriteLlama2c(path, h, tensors); err != nil {
		t.Fatal(err)
	}
	h2, back, err := ReadLlama2c(path)
	if err != nil {
		t.Fatal(err)
	}
	if h2 != h {
		t.Errorf("header read back as %+v, wrote %+v", h2, h)
	}
	if len(back) != len(tensors) {
		t.Errorf("%d tensors read back, wrote %d", len(back), len(tensors))
	}
	for name, want := range tensors {
		got := back[name]
		if got == nil || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("%s differs after the round trip", name)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestWriteLlama2cStories260K(t *testing.T) {
	orig, err := os.ReadFile(sharedPath(t, stories260KBin))
	if err != nil {
		t.Fatal(err)
	}
	h, tensors, err := ParseLlama2c("stories260K.bin", orig)
	if err != nil {
		t.Fatal(err)
	}
	data := roundTripLlama2c(t, h, tensors)
	if len(data) != len(orig) {
		t.Fatalf("wrote %d bytes, the original has %d", len(data), len(orig))
	}
	// Only the freq_cis tables may differ (export.py computes them in
	// float32, the writer in float64); they sit after model.norm.
	norm := tensors["model.norm.weight"]
	start := bytes.Index(orig, norm.Data) + len(norm.Data)
	n := h.SeqLen * h.HeadDim() / 2 * 2 // real and imaginary tables
	if !bytes.Equal(data[:start], orig[:start]) || !bytes.Equal(data[start+4*n:], orig[start+4*n:]) {
		t.Error("bytes outside the freq_cis tables differ from the original checkpoint")
	}
	for i := 0; i < n; i++ {
		a := math.Float32frombits(binary.LittleEndian.Uint32(data[start+4*i:]))
		b := math.Float32frombits(binary.LittleEndian.Uint32(orig[start+4*i:]))
		if math.Abs(float64(a-b)) > 1e-4 {
			t.Fatalf("freq_cis value %d is %g, export.py wrote %g", i, a, b)
		}
	}
}

func TestWriteLlama2cUnshared(t *testing.T) {
	// The hand-checked layout of TestLlama2cLayoutUnshared, written back.
	h, tensors, err := ParseLlama2c("tiny.bin", llama2cFile([7]int32{8, 12, 2, 2, 1, -10, 3}, 1172))
	if err != nil {
		t.Fatal(err)
	}
	data := roundTripLlama2c(t, h, tensors)
	if int32(binary.LittleEndian.Uint32(data[20:])) != -10 {
		t.Error("an unshared classifier must be written as a negative vocab size")
	}
}

func TestWriteLlama2cErrors(t *testing.T) {
	h, good, err := ParseLlama2c("tiny.bin", llama2cFile([7]int32{8, 12, 2, 2, 1, 10, 3}, 1092))
	if err != nil {
		t.Fatal(err)
	}
	without := func(name string) map[string]*Tensor {
		m := map[string]*Tensor{}
		for k, v := range good {
			if k != name {
				m[k] = v
			}
		}
		return m
	}
	reshaped := without("")
	reshaped["model.norm.weight"] = TensorFromF32("model.norm.weight", []int{4}, make([]float32, 4))
	extra := without("")
	extra["lm_head.weight"] = TensorFromF32("lm_head.weight", []int{10, 8}, make([]float32, 80))
	badHeader := h
	badHeader.NKVHeads = 3
	for _, c := range []struct {
		h       Llama2cHeader
		tensors map[string]*Tensor
		want    string
	}{
		{h, without("model.layers.1.mlp.up_proj.weight"), "missing tensor model.layers.1.mlp.up_proj.weight"},
		{h, reshaped, "model.norm.weight has shape [4]"},
		{h, extra, "lm_head.weight has no place"},
		{badHeader, good, "n_kv_heads 3"},
		{Llama2cHeader{Dim: 8}, good, "hidden_dim = 0"},
	} {
		err := WriteLlama2c(filepath.Join(t.TempDir(), "bad.bin"), c.h, c.tensors)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.bin") {
			t.Errorf("error %v, want one naming bad.bin and %q", err, c.want)
		}
	}
}
