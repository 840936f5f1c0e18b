package format

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLlama2cStories260K(t *testing.T) {
	h, tensors, err := ReadLlama2c(sharedPath(t, stories260KBin))
	if err != nil {
		t.Fatal(err)
	}
	// The values the data README gives for this checkpoint.
	want := Llama2cHeader{Dim: 64, HiddenDim: 172, NLayers: 5, NHeads: 8, NKVHeads: 4, VocabSize: 512, SeqLen: 512, SharedClassifier: true}
	if h != want {
		t.Fatalf("header %+v, want %+v", h, want)
	}
	checkShapes(t, tensors, goldenHFShapes(t))

	golden, _, err := ReadSafetensors(sharedPath(t, stories260KHFFile))
	if err != nil {
		t.Fatal(err)
	}
	// Everything but q/k is stored identically; q/k match after the HF
	// permutation, and the inverse permutation takes the golden back.
	for name, tt := range tensors {
		g := golden[name]
		isQ, isK := strings.HasSuffix(name, "q_proj.weight"), strings.HasSuffix(name, "k_proj.weight")
		if !isQ && !isK {
			if !bytes.Equal(tt.Data, g.Data) {
				t.Errorf("%s differs from the golden HF tensor", name)
			}
			continue
		}
		heads := h.NHeads
		if isK {
			heads = h.NKVHeads
		}
		w, _ := tt.Float32()
		gw, _ := g.Float32()
		rows, cols := tt.Shape[0], tt.Shape[1]
		if p := PermuteQKForHF(w, heads, rows, cols); !slices.Equal(p, gw) {
			t.Errorf("%s: permuted llama2.c weight differs from the golden HF one", name)
		}
		if slices.Equal(w, gw) {
			t.Errorf("%s: llama2.c and HF orders are identical; the permutation test proves nothing", name)
		}
		if u := UnpermuteQKFromHF(gw, heads, rows, cols); !slices.Equal(u, w) {
			t.Errorf("%s: unpermuted golden differs from llama2.c", name)
		}
	}
	if !bytes.Equal(tensors["model.embed_tokens.weight"].Data, golden["model.embed_tokens.weight"].Data) {
		t.Error("embed_tokens differ")
	}
	// The map-level conversion gives the golden file byte for byte.
	if err := ConvertQKToHF(tensors, h.NLayers, h.NHeads, h.NKVHeads); err != nil {
		t.Fatal(err)
	}
	for name, tt := range tensors {
		if !bytes.Equal(tt.Data, golden[name].Data) {
			t.Errorf("after ConvertQKToHF, %s differs from the golden HF tensor", name)
		}
	}
}

// llama2cFile builds a version-0 checkpoint whose float at position i (after
// the header) is i, so every tensor's first value is its offset in floats.
func llama2cFile(hdr [7]int32, nFloats int) []byte {
	var b le
	for _, v := range hdr {
		b.i32(v)
	}
	for i := 0; i < nFloats; i++ {
		b.f32(float32(i))
	}
	return b.Bytes()
}

func TestLlama2cLayoutUnshared(t *testing.T) {
	// dim 8, hidden 12, 2 layers, 2 heads, 1 kv head, vocab 10 unshared,
	// seq 3: head size 4, kv dim 4. Offsets (in floats) worked out by hand
	// from export.py's legacy_export order.
	data := llama2cFile([7]int32{8, 12, 2, 2, 1, -10, 3}, 1172)
	h, ts, err := ParseLlama2c("tiny.bin", data)
	if err != nil {
		t.Fatal(err)
	}
	if h.SharedClassifier || h.VocabSize != 10 || h.HeadDim() != 4 || h.KVDim() != 4 {
		t.Fatalf("header %+v", h)
	}
	for _, c := range []struct {
		name  string
		shape []int
		first float32
	}{
		{"model.embed_tokens.weight", []int{10, 8}, 0},
		{"model.layers.0.input_layernorm.weight", []int{8}, 80},
		{"model.layers.1.input_layernorm.weight", []int{8}, 88},
		{"model.layers.0.self_attn.q_proj.weight", []int{8, 8}, 96},
		{"model.layers.1.self_attn.q_proj.weight", []int{8, 8}, 160},
		{"model.layers.0.self_attn.k_proj.weight", []int{4, 8}, 224},
		{"model.layers.1.self_attn.k_proj.weight", []int{4, 8}, 256},
		{"model.layers.0.self_attn.v_proj.weight", []int{4, 8}, 288},
		{"model.layers.1.self_attn.o_proj.weight", []int{8, 8}, 416},
		{"model.layers.0.post_attention_layernorm.weight", []int{8}, 480},
		{"model.layers.0.mlp.gate_proj.weight", []int{12, 8}, 496},
		{"model.layers.1.mlp.down_proj.weight", []int{8, 12}, 784},
		{"model.layers.1.mlp.up_proj.weight", []int{12, 8}, 976},
		{"model.norm.weight", []int{8}, 1072},
		{"lm_head.weight", []int{10, 8}, 1092},
	} {
		tt := ts[c.name]
		if tt == nil {
			t.Fatalf("missing %s", c.name)
		}
		v, err := tt.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tt.Shape, c.shape) || v[0] != c.first || v[len(v)-1] != c.first+float32(len(v)-1) {
			t.Errorf("%s: shape %v first %g last %g, want shape %v first %g", c.name, tt.Shape, v[0], v[len(v)-1], c.shape, c.first)
		}
	}
	if len(ts) != 2*9+3 {
		t.Errorf("%d tensors, want %d", len(ts), 2*9+3)
	}
	// Shared classifier: no lm_head, 80 fewer floats.
	h, ts, err = ParseLlama2c("tied.bin", llama2cFile([7]int32{8, 12, 2, 2, 1, 10, 3}, 1092))
	if err != nil || !h.SharedClassifier || ts["lm_head.weight"] != nil {
		t.Fatalf("shared classifier: %+v lm_head=%v err=%v", h, ts["lm_head.weight"] != nil, err)
	}
}

func TestLlama2cHostileHeaders(t *testing.T) {
	const max = math.MaxInt32
	for _, c := range []struct {
		hdr  [7]int32
		data int // floats after the header
		frag []string
	}{
		{[7]int32{0, 12, 2, 2, 1, 10, 3}, 0, []string{"dim = 0"}},
		{[7]int32{8, -12, 2, 2, 1, 10, 3}, 0, []string{"hidden_dim = -12"}},
		{[7]int32{8, 12, 0, 2, 1, 10, 3}, 0, []string{"n_layers"}},
		{[7]int32{8, 12, 2, 0, 1, 10, 3}, 0, []string{"n_heads"}},
		{[7]int32{8, 12, 2, 2, 0, 10, 3}, 0, []string{"n_kv_heads"}},
		{[7]int32{8, 12, 2, 2, 1, 0, 3}, 0, []string{"vocab_size"}},
		{[7]int32{8, 12, 2, 2, 1, 10, -3}, 0, []string{"seq_len"}},
		{[7]int32{8, 12, 2, 3, 1, 10, 3}, 0, []string{"n_heads 3 does not divide dim 8"}},
		{[7]int32{8, 12, 2, 2, 3, 10, 3}, 0, []string{"n_kv_heads 3 does not divide n_heads 2"}},
		{[7]int32{6, 12, 2, 2, 1, 10, 3}, 0, []string{"head size 3"}},
		{[7]int32{8, 12, 2, 2, 1, 10, 3}, 1091, []string{"needs 4396 bytes, file has 4392"}},
		{[7]int32{8, 12, 2, 2, 1, 10, 3}, 1093, []string{"needs 4396 bytes, file has 4400"}},
		{[7]int32{max - 1, max, max, 1, 1, math.MinInt32, max}, 4, []string{"impossibly large"}},
		{[7]int32{1 << 30, 1 << 30, 1 << 20, 1 << 10, 1 << 10, 1 << 30, 1 << 30}, 4, []string{"impossibly large"}},
		{[7]int32{1 << 20, 1 << 20, 64, 1 << 10, 1 << 10, 1 << 20, 1 << 20}, 4, []string{"file has 44"}},
	} {
		_, _, err := ParseLlama2c("hostile.bin", llama2cFile(c.hdr, c.data))
		wantErr(t, err, append(c.frag, "hostile.bin")...)
	}
	_, _, err := ParseLlama2c("short.bin", []byte{1, 0, 0, 0})
	wantErr(t, err, "short.bin", "too short")
	_, _, err = ParseLlama2c("v1.bin", append([]byte{0x32, 0x34, 0x6b, 0x61}, make([]byte, 300)...))
	wantErr(t, err, "v1.bin", "version 1")
}

func TestReadLlama2cFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.bin")
	if err := os.WriteFile(path, llama2cFile([7]int32{8, 12, 2, 2, 1, 10, 3}, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := ReadLlama2c(path)
	wantErr(t, err, path, "needs 4396 bytes")
	_, _, err = ReadLlama2c(filepath.Join(t.TempDir(), "nope.bin"))
	wantErr(t, err, "nope.bin")
}

func TestPermuteQKHandExamples(t *testing.T) {
	// One head of 4 rows: interleaved pairs (0,1), (2,3) become halves
	// (0,2 | 1,3): HF rows are in[0], in[2], in[1], in[3].
	in := []float32{0, 1, 2, 3, 4, 5, 6, 7}
	if got := PermuteQKForHF(in, 2, 8, 1); !slices.Equal(got, []float32{0, 2, 1, 3, 4, 6, 5, 7}) {
		t.Errorf("2 heads of 4: %v", got)
	}
	if got := PermuteQKForHF(in, 1, 8, 1); !slices.Equal(got, []float32{0, 2, 4, 6, 1, 3, 5, 7}) {
		t.Errorf("1 head of 8: %v", got)
	}
	if got := PermuteQKForHF(in, 1, 4, 2); !slices.Equal(got, []float32{0, 1, 4, 5, 2, 3, 6, 7}) {
		t.Errorf("rows of 2 columns: %v", got)
	}
	if got := UnpermuteQKFromHF([]float32{0, 2, 4, 6, 1, 3, 5, 7}, 1, 8, 1); !slices.Equal(got, in) {
		t.Errorf("inverse: %v", got)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "heads") {
			t.Errorf("bad shape did not panic with a message: %v", r)
		}
	}()
	PermuteQKForHF(in, 3, 8, 1)
}

func TestConvertQKStorageTypes(t *testing.T) {
	// Permuting stored rows must equal permuting decoded values, for types
	// whose rows are whole blocks.
	rows, cols := 16, 64
	x := randF32(newRng(9), rows*cols)
	for _, mk := range []func(name string) *Tensor{
		func(n string) *Tensor { return TensorFromF32(n, []int{rows, cols}, x) },
		func(n string) *Tensor { return TensorQ8_0(n, []int{rows, cols}, x) },
		func(n string) *Tensor {
			b, _ := TensorFromF32(n, []int{rows, cols}, x).BF16()
			return TensorFromBF16(n, []int{rows, cols}, b)
		},
	} {
		q, k := mk("model.layers.0.self_attn.q_proj.weight"), mk("model.layers.0.self_attn.k_proj.weight")
		before, _ := q.Float32()
		m := map[string]*Tensor{q.Name: q, k.Name: k}
		if err := ConvertQKToHF(m, 1, 4, 2); err != nil {
			t.Fatal(err)
		}
		gotQ, _ := q.Float32()
		gotK, _ := k.Float32()
		if !slices.Equal(gotQ, PermuteQKForHF(before, 4, rows, cols)) || !slices.Equal(gotK, PermuteQKForHF(before, 2, rows, cols)) {
			t.Errorf("%s: row permutation differs from the float permutation", q.DType)
		}
		if err := ConvertQKFromHF(m, 1, 4, 2); err != nil {
			t.Fatal(err)
		}
		if back, _ := q.Float32(); !slices.Equal(back, before) {
			t.Errorf("%s: ConvertQKFromHF is not the inverse", q.DType)
		}
		// In place: the same rows, written into the tensors' own bytes.
		q2, k2 := mk(q.Name), mk(k.Name)
		qData := q2.Data
		if err := ConvertQKToHFInPlace(map[string]*Tensor{q.Name: q2, k.Name: k2}, 1, 4, 2); err != nil {
			t.Fatal(err)
		}
		gotQ2, _ := q2.Float32()
		gotK2, _ := k2.Float32()
		if !slices.Equal(gotQ2, gotQ) || !slices.Equal(gotK2, gotK) || &q2.Data[0] != &qData[0] {
			t.Errorf("%s: the in-place permutation differs from the copying one, or copied", q.DType)
		}
	}
	m := map[string]*Tensor{"model.layers.0.self_attn.q_proj.weight": TensorFromF32("q", []int{6, 1}, make([]float32, 6))}
	wantErr(t, ConvertQKToHF(m, 1, 4, 2), `"q"`, "6 rows")
	wantErr(t, ConvertQKToHF(m, 2, 3, 3), "model.layers.0.self_attn.k_proj.weight", "missing")
}
