package format

import (
	"bytes"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// ggufFixture starts a hand-built GGUF file: magic, version and counts.
func ggufFixture(version uint32, nTensors, nKV uint64) *le {
	b := &le{}
	b.WriteString("GGUF")
	b.u32(version)
	b.u64(nTensors)
	b.u64(nKV)
	return b
}

func (b *le) pad(align int) {
	for b.Len()%align != 0 {
		b.u8(0)
	}
}

// tensorInfo appends a tensor info with dims given innermost first.
func (b *le) tensorInfo(name string, typ uint32, offset uint64, dims ...uint64) {
	b.str(name)
	b.u32(uint32(len(dims)))
	for _, d := range dims {
		b.u64(d)
	}
	b.u32(typ)
	b.u64(offset)
}

func validGGUFFixture() []byte {
	b := ggufFixture(3, 1, 1)
	b.str("general.architecture")
	b.u32(8) // string
	b.str("llama")
	b.tensorInfo("w", 0, 0, 3, 2) // ne = {3, 2}: 2 rows of 3
	b.pad(32)
	for i := 1; i <= 6; i++ {
		b.f32(float32(i))
	}
	return b.Bytes()
}

func TestGGUFHandBuilt(t *testing.T) {
	f, err := ParseGGUF("fix.gguf", validGGUFFixture())
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || f.Alignment != 32 || !slices.Equal(f.Keys, []string{"general.architecture"}) {
		t.Fatalf("file %+v", f)
	}
	if s, err := f.MetaString("general.architecture"); err != nil || s != "llama" {
		t.Fatalf("architecture %q %v", s, err)
	}
	w, err := f.Tensor("w")
	if err != nil {
		t.Fatal(err)
	}
	v, err := w.Float32()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.Shape, []int{2, 3}) || !slices.Equal(v, []float32{1, 2, 3, 4, 5, 6}) || w.DType != F32 {
		t.Fatalf("tensor %v %s %v", w.Shape, w.DType, v)
	}
	if !slices.Equal(f.Tensors[0].Dims, []uint64{3, 2}) {
		t.Fatalf("dims %v", f.Tensors[0].Dims)
	}
	_, err = f.Tensor("nope")
	wantErr(t, err, "fix.gguf", `"nope"`)
	_, err = f.MetaInt("general.architecture")
	wantErr(t, err, "general.architecture", "not an integer")
}

func TestGGUFHeaderErrors(t *testing.T) {
	// kv builds a file with one metadata entry written by body and no
	// tensors.
	kv := func(body func(b *le)) []byte {
		b := ggufFixture(3, 0, 1)
		body(b)
		b.pad(32)
		return b.Bytes()
	}
	// ti builds a file with the given tensor infos and dataLen data bytes.
	ti := func(n uint64, dataLen int, body func(b *le)) []byte {
		b := ggufFixture(3, n, 0)
		body(b)
		b.pad(32)
		b.Write(make([]byte, dataLen))
		return b.Bytes()
	}
	valid := validGGUFFixture()
	magic := slices.Clone(valid)
	magic[3] = 'X'
	nested := func(b *le) {
		b.str("deep")
		b.u32(9)
		for i := 0; i < 20; i++ {
			b.u32(9) // array of arrays
			b.u64(1)
		}
	}
	for _, c := range []struct {
		name string
		file []byte
		frag []string
	}{
		{"magic", magic, []string{"bad magic"}},
		{"empty", nil, []string{"bad magic"}},
		{"v1", ggufFixture(1, 0, 0).Bytes(), []string{"version 1"}},
		{"bigendian", ggufFixture(0x03000000, 0, 0).Bytes(), []string{"big-endian"}},
		{"v4", ggufFixture(4, 0, 0).Bytes(), []string{"version 4"}},
		{"truncated", valid[:10], []string{"truncated"}},
		{"tensors", ggufFixture(3, 1<<60, 0).Bytes(), []string{"cannot fit"}},
		{"kvs", ggufFixture(3, 0, 1<<60).Bytes(), []string{"cannot fit"}},
		{"keylen", kv(func(b *le) { b.u64(1 << 62); b.u32(0); b.u8(0) }), []string{"exceeds"}},
		{"valtype", kv(func(b *le) { b.str("k"); b.u32(13); b.u8(0) }), []string{`k`, "unknown GGUF value type 13"}},
		{"arraylen", kv(func(b *le) { b.str("k"); b.u32(9); b.u32(0); b.u64(1 << 61) }), []string{"array length of k", "cannot fit"}},
		{"strarraylen", kv(func(b *le) { b.str("k"); b.u32(9); b.u32(8); b.u64(1 << 40) }), []string{"array length of k", "cannot fit"}},
		{"arraytype", kv(func(b *le) { b.str("k"); b.u32(9); b.u32(99); b.u64(0) }), []string{"k", "element type 99"}},
		{"bool", kv(func(b *le) { b.str("flag"); b.u32(7); b.u8(2) }), []string{"flag", "bool"}},
		{"nested", kv(nested), []string{"deep", "nested"}},
		{"align3", kv(func(b *le) { b.str("general.alignment"); b.u32(4); b.u32(3) }), []string{"general.alignment", "power of two"}},
		{"align64bit", kv(func(b *le) { b.str("general.alignment"); b.u32(10); b.u64(32) }), []string{"general.alignment", "uint64"}},
		{"dupkey", func() []byte {
			b := ggufFixture(3, 0, 2)
			for i := 0; i < 2; i++ {
				b.str("k")
				b.u32(0)
				b.u8(1)
			}
			return b.Bytes()
		}(), []string{"duplicate metadata key", `"k"`}},
		{"ndims", ti(1, 0, func(b *le) { b.tensorInfo("w", 0, 0, 1, 1, 1, 1, 1) }), []string{`"w"`, "5 dimensions"}},
		{"dimsoverflow", ti(1, 0, func(b *le) { b.tensorInfo("w", 0, 0, 1<<40, 1<<40) }), []string{`"w"`, "overflow"}},
		{"hugedim", ti(1, 0, func(b *le) { b.tensorInfo("w", 0, 0, 1<<63) }), []string{`"w"`, "overflow"}},
		{"ggmltype", ti(1, 0, func(b *le) { b.tensorInfo("w", 4, 0, 32) }), []string{`"w"`, "unknown GGML type 4"}},
		{"block", ti(1, 34, func(b *le) { b.tensorInfo("q", 8, 0, 16, 2) }), []string{`"q"`, "block size 32"}},
		{"misaligned", ti(1, 64, func(b *le) { b.tensorInfo("w", 0, 4, 2) }), []string{`"w"`, "alignment"}},
		{"pastend", ti(1, 16, func(b *le) { b.tensorInfo("w", 0, 0, 8) }), []string{`"w"`, "run past"}},
		{"hugeoffset", ti(1, 16, func(b *le) { b.tensorInfo("w", 0, 1<<63, 2) }), []string{`"w"`, "run past"}},
		{"overlap", ti(2, 64, func(b *le) { b.tensorInfo("a", 0, 0, 16); b.tensorInfo("b", 0, 32, 8) }), []string{`"a"`, `"b"`, "overlaps"}},
		{"duptensor", ti(2, 64, func(b *le) { b.tensorInfo("a", 0, 0, 2); b.tensorInfo("a", 0, 32, 2) }), []string{`"a"`, "duplicate tensor"}},
	} {
		_, err := ParseGGUF(c.name+".gguf", c.file)
		wantErr(t, err, append(c.frag, c.name+".gguf")...)
	}
}

func ggufTestMetadata() map[string]any {
	return map[string]any{
		"general.architecture": "llama",
		"general.name":         "tést \x00 name",
		"u8":                   uint8(200), "i8": int8(-100), "u16": uint16(60000), "i16": int16(-30000),
		"u32": uint32(4000000000), "i32": int32(-2000000000), "f32": float32(1.5), "t": true, "f": false,
		"u64": uint64(1 << 63), "i64": int64(math.MinInt64), "f64": math.Pi,
		"a.u8": []uint8{1, 2, 3}, "a.i8": []int8{-1}, "a.u16": []uint16{}, "a.i16": []int16{-2, 2},
		"a.u32": []uint32{7}, "a.i32": []int32{-7, 0}, "a.f32": []float32{0.5, -0.25}, "a.bool": []bool{true, false},
		"a.str": []string{"", "x", "ü"}, "a.u64": []uint64{1 << 40}, "a.i64": []int64{-1 << 40}, "a.f64": []float64{1e300},
		"a.nested": []any{[]uint8{9}, []string{"in"}, []any{[]int32{1}}},
	}
}

func TestGGUFRoundTrip(t *testing.T) {
	rng := newRng(13)
	x := randF32(rng, 4*64)
	q4k := make([]byte, 2*144)
	for i := range q4k {
		q4k[i] = byte(rng.Uint32())
	}
	bf, _ := TensorFromF32("", []int{32}, x[:32]).BF16()
	f16 := make([]byte, 64)
	for i := 0; i < 32; i++ {
		h := f32ToF16(x[i])
		f16[2*i], f16[2*i+1] = byte(h), byte(h>>8)
	}
	tensors := []*Tensor{
		TensorFromF32("f32", []int{3, 5}, x[:15]),
		{Name: "f16", DType: F16, Shape: []int{2, 16}, Data: f16},
		TensorFromBF16("bf16", []int{4, 8}, bf),
		TensorQ8_0("q8", []int{4, 64}, x),
		{Name: "q4k", DType: "Q4_K", Shape: []int{2, 256}, Data: q4k},
		{Name: "i32", DType: "I32", Shape: []int{5}, Data: make([]byte, 20)},
		{Name: "cube", DType: F32, Shape: []int{2, 1, 3}, Data: make([]byte, 24)},
	}
	for _, c := range []struct {
		version uint32
		align   uint32
	}{{2, 0}, {3, 0}, {3, 64}, {3, 1}} {
		meta := ggufTestMetadata()
		want := 32
		if c.align != 0 {
			meta["general.alignment"] = c.align
			want = int(c.align)
		}
		var f *GGUFFile
		var err error
		if c.version == 3 {
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := WriteGGUF(path, meta, tensors); err != nil {
				t.Fatal(err)
			}
			f, err = ReadGGUF(path)
		} else {
			var buf bytes.Buffer
			if err := EncodeGGUF(&buf, c.version, meta, tensors); err != nil {
				t.Fatal(err)
			}
			f, err = ParseGGUF("v2", buf.Bytes())
		}
		if err != nil {
			t.Fatalf("v%d align %d: %v", c.version, c.align, err)
		}
		if f.Version != c.version || f.Alignment != want {
			t.Errorf("version %d alignment %d, want %d and %d", f.Version, f.Alignment, c.version, want)
		}
		if !reflect.DeepEqual(f.Metadata, meta) {
			t.Errorf("metadata differs:\n got %#v\nwant %#v", f.Metadata, meta)
		}
		if !slices.IsSorted(f.Keys) || len(f.Keys) != len(meta) {
			t.Errorf("keys %v", f.Keys)
		}
		for i, tt := range tensors {
			ti := f.Tensors[i]
			if ti.Name != tt.Name || ti.Offset%uint64(want) != 0 {
				t.Errorf("tensor %d: %s at offset %d", i, ti.Name, ti.Offset)
			}
			rev := slices.Clone(tt.Shape)
			slices.Reverse(rev)
			for j, d := range rev {
				if ti.Dims[j] != uint64(d) {
					t.Errorf("%s: dims %v, want %v (innermost first)", tt.Name, ti.Dims, rev)
				}
			}
			got, err := f.Tensor(tt.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got.DType != tt.DType || !slices.Equal(got.Shape, tt.Shape) || !bytes.Equal(got.Data, tt.Data) {
				t.Errorf("%s differs after the round trip", tt.Name)
			}
		}
		q8, _ := f.Tensor("q8")
		dq, err := q8.Float32()
		if err != nil {
			t.Fatal(err)
		}
		for i := range x {
			if math.Abs(float64(dq[i]-x[i])) > 0.03 {
				t.Fatalf("Q8_0 value %d: %g vs %g", i, dq[i], x[i])
			}
		}
		q, _ := f.Tensor("q4k")
		_, err = q.Float32()
		wantErr(t, err, `"q4k"`, "Q4_K")
		if n, err := f.MetaInt("u64"); err == nil {
			t.Errorf("uint64 1<<63 read as int64 %d", n)
		}
		if n, err := f.MetaInt("i16"); err != nil || n != -30000 {
			t.Errorf("MetaInt(i16) = %d, %v", n, err)
		}
		if v, err := f.MetaFloat("f32"); err != nil || v != 1.5 {
			t.Errorf("MetaFloat(f32) = %g, %v", v, err)
		}
	}
}

func TestGGUFWriteErrors(t *testing.T) {
	var buf bytes.Buffer
	ok := TensorFromF32("w", []int{2}, []float32{1, 2})
	for _, c := range []struct {
		version uint32
		meta    map[string]any
		tensors []*Tensor
		frag    string
	}{
		{1, nil, nil, "version 1"},
		{3, map[string]any{"n": 5}, nil, `"n"`},
		{3, map[string]any{"a": []any{1}}, nil, `"a"`},
		{3, map[string]any{"general.alignment": uint32(48)}, nil, "power of two"},
		{3, nil, []*Tensor{ok, ok}, "duplicate"},
		{3, nil, []*Tensor{{Name: "u", DType: "U32", Shape: []int{1}, Data: make([]byte, 4)}}, `"u"`},
		{3, nil, []*Tensor{{Name: "s", DType: F32, Shape: []int{1}, Data: make([]byte, 8)}}, `"s"`},
		{3, nil, []*Tensor{{Name: "d", DType: F32, Shape: []int{1, 1, 1, 1, 1}, Data: make([]byte, 4)}}, `"d"`},
	} {
		wantErr(t, EncodeGGUF(&buf, c.version, c.meta, c.tensors), c.frag)
	}
}

func TestGGUFNames(t *testing.T) {
	for g, hf := range map[string]string{
		"token_embd.weight":        "model.embed_tokens.weight",
		"output_norm.weight":       "model.norm.weight",
		"output.weight":            "lm_head.weight",
		"blk.0.attn_q.weight":      "model.layers.0.self_attn.q_proj.weight",
		"blk.12.attn_k.weight":     "model.layers.12.self_attn.k_proj.weight",
		"blk.3.attn_v.weight":      "model.layers.3.self_attn.v_proj.weight",
		"blk.3.attn_output.weight": "model.layers.3.self_attn.o_proj.weight",
		"blk.3.ffn_gate.weight":    "model.layers.3.mlp.gate_proj.weight",
		"blk.3.ffn_down.weight":    "model.layers.3.mlp.down_proj.weight",
		"blk.3.ffn_up.weight":      "model.layers.3.mlp.up_proj.weight",
		"blk.3.attn_norm.weight":   "model.layers.3.input_layernorm.weight",
		"blk.107.ffn_norm.weight":  "model.layers.107.post_attention_layernorm.weight",
	} {
		if got, ok := GGUFToHFName(g); !ok || got != hf {
			t.Errorf("GGUFToHFName(%q) = %q, %v; want %q", g, got, ok, hf)
		}
		if got, ok := HFToGGUFName(hf); !ok || got != g {
			t.Errorf("HFToGGUFName(%q) = %q, %v; want %q", hf, got, ok, g)
		}
	}
	for _, bad := range []string{"rope_freqs.weight", "blk.01.attn_q.weight", "blk.-1.attn_q.weight", "blk.x.attn_q.weight",
		"blk.1.attn_q.bias", "blk.1.attn_qq.weight", "blk..attn_q.weight", "blk.+1.attn_q.weight", "blk.99999999999999999999.attn_q.weight"} {
		if got, ok := GGUFToHFName(bad); ok {
			t.Errorf("GGUFToHFName(%q) = %q, want no mapping", bad, got)
		}
	}
	if got, ok := HFToGGUFName("model.layers.1.self_attn.rotary_emb.inv_freq"); ok {
		t.Errorf("HFToGGUFName mapped inv_freq to %q", got)
	}
}

// A GGUF made from the llama2.c tensors (the interleaved order llama.cpp's
// converter produces) must come back through HFTensors as the golden HF model.
func TestGGUFHFTensorsMatchGolden(t *testing.T) {
	h, l2c, err := ReadLlama2c(sharedPath(t, stories260KBin))
	if err != nil {
		t.Fatal(err)
	}
	golden, _, err := ReadSafetensors(sharedPath(t, stories260KHFFile))
	if err != nil {
		t.Fatal(err)
	}
	var tensors []*Tensor
	for name, tt := range l2c {
		g, ok := HFToGGUFName(name)
		if !ok {
			t.Fatalf("no GGUF name for %s", name)
		}
		tensors = append(tensors, &Tensor{Name: g, DType: tt.DType, Shape: tt.Shape, Data: tt.Data})
	}
	tensors = append(tensors, TensorFromF32("rope_freqs.weight", []int{4}, []float32{1, 1, 1, 1}))
	meta := map[string]any{
		"general.architecture":          "llama",
		"llama.block_count":             uint32(h.NLayers),
		"llama.attention.head_count":    uint32(h.NHeads),
		"llama.attention.head_count_kv": uint32(h.NKVHeads),
	}
	path := filepath.Join(t.TempDir(), "stories260K.gguf")
	if err := WriteGGUF(path, meta, tensors); err != nil {
		t.Fatal(err)
	}
	f, err := ReadGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	hf, unmapped, err := f.HFTensors()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(unmapped, []string{"rope_freqs.weight"}) || len(hf) != len(golden) {
		t.Fatalf("unmapped %v, %d tensors (want %d)", unmapped, len(hf), len(golden))
	}
	for name, g := range golden {
		if got := hf[name]; got == nil || !bytes.Equal(got.Data, g.Data) || !slices.Equal(got.Shape, g.Shape) {
			t.Errorf("%s differs from the golden HF tensor", name)
		}
	}
	delete(meta, "llama.block_count")
	if err := WriteGGUF(path, meta, tensors); err != nil {
		t.Fatal(err)
	}
	f, _ = ReadGGUF(path)
	_, _, err = f.HFTensors()
	wantErr(t, err, "llama.block_count")
}

func TestGGMLTypeNames(t *testing.T) {
	for id, name := range map[GGMLType]string{0: "F32", 1: "F16", 8: "Q8_0", 12: "Q4_K", 30: "BF16", 39: "MXFP4", 4: "GGML_TYPE_4", 1000: "GGML_TYPE_1000"} {
		if got := id.String(); got != name {
			t.Errorf("GGMLType(%d) = %q, want %q", id, got, name)
		}
	}
	if GGMLType(4).DType() != "" || GGMLType(24).DType() != "I8" {
		t.Error("DType of GGML types")
	}
}
