package format

import (
	"bytes"
	"slices"
	"testing"
)

// The fuzz targets check that parsers of untrusted bytes never panic and
// that whatever they accept is internally consistent. `go test` runs only
// the seeds; use `go test -fuzz FuzzGGUF` (etc.) to explore.

func FuzzSafetensors(f *testing.F) {
	f.Add(stFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	f.Add(stFile(`{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]},"b":{"dtype":"Q8_0","shape":[32],"data_offsets":[4,38]}}`, 38))
	var buf bytes.Buffer
	EncodeSafetensors(&buf, []*Tensor{
		TensorFromF32("x", []int{2, 2}, []float32{1, 2, 3, 4}),
		{Name: "h", DType: F16, Shape: []int{3}, Data: []byte{0, 0x3c, 0, 0xc0, 0xff, 0x7b}},
	}, map[string]string{"k": "v"})
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		tensors, meta, err := ParseSafetensors("fuzz", data)
		if err != nil {
			return
		}
		list := make([]*Tensor, 0, len(tensors))
		for _, tt := range tensors {
			if err := tt.Validate(); err != nil {
				t.Fatalf("accepted an invalid tensor: %v", err)
			}
			tt.Float32() // may fail for types it cannot decode, must not panic
			list = append(list, tt)
		}
		// What was accepted re-encodes and parses to the same tensors.
		var out bytes.Buffer
		if err := EncodeSafetensors(&out, list, meta); err != nil {
			t.Fatalf("cannot re-encode an accepted file: %v", err)
		}
		back, _, err := ParseSafetensors("again", out.Bytes())
		if err != nil {
			t.Fatalf("re-encoded file rejected: %v", err)
		}
		for name, tt := range tensors {
			b := back[name]
			if b == nil || b.DType != tt.DType || !slices.Equal(b.Shape, tt.Shape) || !bytes.Equal(b.Data, tt.Data) {
				t.Fatalf("tensor %q changed in the re-encoding", name)
			}
		}
	})
}

func FuzzGGUF(f *testing.F) {
	f.Add(validGGUFFixture())
	var buf bytes.Buffer
	meta := map[string]any{
		"general.architecture": "llama", "llama.block_count": uint32(1),
		"llama.attention.head_count": uint32(2), "a": []any{[]string{"x"}}, "general.alignment": uint32(8),
	}
	EncodeGGUF(&buf, 3, meta, []*Tensor{
		TensorQ8_0("blk.0.attn_q.weight", []int{4, 32}, make([]float32, 128)),
		TensorFromF32("blk.0.attn_k.weight", []int{4, 2}, make([]float32, 8)),
		{Name: "blk.0.ffn_up.weight", DType: "Q4_K", Shape: []int{1, 256}, Data: make([]byte, 144)},
		{Name: "blk.0.ffn_down.weight", DType: Q4_0, Shape: []int{2, 32}, Data: make([]byte, 36)},
	})
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := ParseGGUF("fuzz", data)
		if err != nil {
			return
		}
		for name, tt := range g.TensorMap() {
			if err := tt.Validate(); err != nil {
				t.Fatalf("accepted an invalid tensor %q: %v", name, err)
			}
			tt.Float32()
		}
		g.HFTensors() // may fail on odd files, must not panic
	})
}

func FuzzLlama2c(f *testing.F) {
	f.Add(llama2cFile([7]int32{8, 12, 2, 2, 1, -10, 3}, 1172))
	f.Add(llama2cFile([7]int32{4, 4, 1, 2, 1, 3, 1}, 4*3+4+16+8+8+16+4+16+16+16+4+2))
	f.Add(llama2cFile([7]int32{1 << 30, 1, 1, 1, 1, 1, 1}, 3))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, tensors, err := ParseLlama2c("fuzz", data)
		if err != nil {
			return
		}
		for name, tt := range tensors {
			if err := tt.Validate(); err != nil {
				t.Fatalf("accepted an invalid tensor %q: %v", name, err)
			}
		}
		// A header that passed validation always permits the q/k permutation.
		if err := ConvertQKToHF(tensors, h.NLayers, h.NHeads, h.NKVHeads); err != nil {
			t.Fatalf("valid header %+v but q/k permutation failed: %v", h, err)
		}
	})
}
