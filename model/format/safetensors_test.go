package format

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// goldenHFShapes derives every tensor's shape from the golden config.json.
func goldenHFShapes(t *testing.T) map[string][]int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(sharedPath(t, stories260KHFDir), "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Hidden   int  `json:"hidden_size"`
		Inter    int  `json:"intermediate_size"`
		Layers   int  `json:"num_hidden_layers"`
		Heads    int  `json:"num_attention_heads"`
		KVHeads  int  `json:"num_key_value_heads"`
		Vocab    int  `json:"vocab_size"`
		TieEmbed bool `json:"tie_word_embeddings"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	kv := c.KVHeads * c.Hidden / c.Heads
	s := map[string][]int{
		"model.embed_tokens.weight": {c.Vocab, c.Hidden},
		"model.norm.weight":         {c.Hidden},
	}
	if !c.TieEmbed {
		s["lm_head.weight"] = []int{c.Vocab, c.Hidden}
	}
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		s[p+"input_layernorm.weight"] = []int{c.Hidden}
		s[p+"post_attention_layernorm.weight"] = []int{c.Hidden}
		s[p+"self_attn.q_proj.weight"] = []int{c.Hidden, c.Hidden}
		s[p+"self_attn.k_proj.weight"] = []int{kv, c.Hidden}
		s[p+"self_attn.v_proj.weight"] = []int{kv, c.Hidden}
		s[p+"self_attn.o_proj.weight"] = []int{c.Hidden, c.Hidden}
		s[p+"mlp.gate_proj.weight"] = []int{c.Inter, c.Hidden}
		s[p+"mlp.up_proj.weight"] = []int{c.Inter, c.Hidden}
		s[p+"mlp.down_proj.weight"] = []int{c.Hidden, c.Inter}
	}
	return s
}

func checkShapes(t *testing.T, tensors map[string]*Tensor, want map[string][]int) {
	t.Helper()
	if len(tensors) != len(want) {
		t.Errorf("%d tensors, want %d", len(tensors), len(want))
	}
	for name, shape := range want {
		tt, ok := tensors[name]
		if !ok {
			t.Errorf("missing tensor %s", name)
			continue
		}
		if !slices.Equal(tt.Shape, shape) {
			t.Errorf("%s: shape %v, want %v", name, tt.Shape, shape)
		}
	}
}

func TestSafetensorsGolden(t *testing.T) {
	path := sharedPath(t, stories260KHFFile)
	tensors, meta, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(meta, map[string]string{"format": "pt"}) {
		t.Errorf("metadata %v", meta)
	}
	checkShapes(t, tensors, goldenHFShapes(t))
	for name, tt := range tensors {
		if tt.DType != F32 {
			t.Errorf("%s: dtype %s", name, tt.DType)
		}
	}
}

// The Python library (Rust core) writes "__metadata__" first; the golden file
// was written by another tool that put it last, so the expected header is the
// golden one with that entry moved to the front. Everything else (key order,
// separators, offsets, padding) must match byte for byte, and so must the
// data section.
func TestSafetensorsWriteMatchesPython(t *testing.T) {
	path := sharedPath(t, stories260KHFFile)
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(golden)
	gh := strings.TrimRight(string(golden[8:8+n]), " ")
	const metaJSON = `"__metadata__":{"format":"pt"}`
	if !strings.HasSuffix(gh, ","+metaJSON+"}") {
		t.Fatalf("golden header does not end with __metadata__: ...%s", gh[len(gh)-60:])
	}
	want := "{" + metaJSON + "," + gh[1:len(gh)-len(metaJSON)-2] + "}"
	for len(want)%8 != 0 {
		want += " "
	}

	tensors, meta, err := ParseSafetensors(path, golden)
	if err != nil {
		t.Fatal(err)
	}
	// Shuffle the input order: the writer must sort.
	list := slices.Collect(maps.Values(tensors))
	rand.New(rand.NewPCG(5, 6)).Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
	out := filepath.Join(t.TempDir(), "model.safetensors")
	if err := WriteSafetensors(out, list, meta); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	gn := binary.LittleEndian.Uint64(got)
	if string(got[8:8+gn]) != want {
		t.Fatalf("header differs from the Python library's:\n got %.300s\nwant %.300s", got[8:8+gn], want)
	}
	if !bytes.Equal(got[8+gn:], golden[8+n:]) {
		t.Fatal("data section differs from the golden file")
	}
	back, meta2, err := ReadSafetensors(out)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(meta, meta2) || len(back) != len(tensors) {
		t.Fatal("round trip lost metadata or tensors")
	}
	for name, tt := range tensors {
		b := back[name]
		if b == nil || b.DType != tt.DType || !slices.Equal(b.Shape, tt.Shape) || !bytes.Equal(b.Data, tt.Data) {
			t.Fatalf("tensor %s differs after the round trip", name)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

// Expected bytes written by hand from the Rust library's rules: metadata
// first, tensors by descending dtype rank (I64 > F32 > BF16 > U8) then name,
// serde_json string escaping (only ", \ and control characters).
func TestSafetensorsHeaderBytes(t *testing.T) {
	tensors := []*Tensor{
		{Name: "b", DType: F32, Shape: []int{2}, Data: make([]byte, 8)},
		{Name: "a", DType: BF16, Shape: []int{3}, Data: make([]byte, 6)},
		{Name: "z", DType: "U8", Shape: []int{2, 2}, Data: make([]byte, 4)},
		{Name: "c", DType: "I64", Shape: []int{1}, Data: make([]byte, 8)},
		{Name: "e\"<é\n\x01", DType: F32, Shape: []int{}, Data: make([]byte, 4)},
		{Name: "y\\\t\r\b\f\x1f\x7f/", DType: "U8", Shape: []int{0}, Data: nil},
	}
	var buf bytes.Buffer
	if err := EncodeSafetensors(&buf, tensors, map[string]string{"format": "pt", "a": "x<y"}); err != nil {
		t.Fatal(err)
	}
	want := `{"__metadata__":{"a":"x<y","format":"pt"},` +
		`"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},` +
		`"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},` +
		`"e\"<é\n\u0001":{"dtype":"F32","shape":[],"data_offsets":[16,20]},` +
		`"a":{"dtype":"BF16","shape":[3],"data_offsets":[20,26]},` +
		`"y\\\t\r\b\f\u001f` + "\x7f" + `/":{"dtype":"U8","shape":[0],"data_offsets":[26,26]},` +
		`"z":{"dtype":"U8","shape":[2,2],"data_offsets":[26,30]}}`
	for len(want)%8 != 0 {
		want += " "
	}
	b := buf.Bytes()
	if n := binary.LittleEndian.Uint64(b); n != uint64(len(want)) || string(b[8:8+n]) != want {
		t.Fatalf("header\n got %q\nwant %q", b[8:], want)
	}
	if len(b) != 8+len(want)+30 {
		t.Fatalf("file is %d bytes, want %d", len(b), 8+len(want)+30)
	}
	back, meta, err := ParseSafetensors("enc", b)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 6 || meta["a"] != "x<y" || back["e\"<é\n\x01"] == nil {
		t.Fatalf("parse of the encoding lost entries: %v %v", back, meta)
	}

	// No metadata, no tensors: just "{}" padded.
	buf.Reset()
	if err := EncodeSafetensors(&buf, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "\x08\x00\x00\x00\x00\x00\x00\x00{}      " {
		t.Fatalf("empty file %q", got)
	}
}

func TestSafetensorsRoundTripDTypes(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var tensors []*Tensor
	for i, dt := range []DType{"F64", "F32", "F16", "BF16", "I64", "I32", "U16", "I8", "BOOL", "F8_E4M3", "F4"} {
		shape := []int{1 + rng.IntN(4), 2 * (1 + rng.IntN(5))}
		size, err := dt.ByteSize(shape[0] * shape[1])
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		tensors = append(tensors, &Tensor{Name: fmt.Sprintf("t%02d.%s", 10-i, dt), DType: dt, Shape: shape, Data: data})
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := WriteSafetensors(path, tensors, nil); err != nil {
		t.Fatal(err)
	}
	back, meta, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	if meta != nil {
		t.Errorf("metadata %v, want none", meta)
	}
	for _, tt := range tensors {
		b := back[tt.Name]
		if b == nil || b.DType != tt.DType || !slices.Equal(b.Shape, tt.Shape) || !bytes.Equal(b.Data, tt.Data) {
			t.Errorf("%s differs after the round trip", tt.Name)
		}
	}
	// Data offsets of every tensor are aligned to its element size because
	// of the dtype ordering.
	raw, _ := os.ReadFile(path)
	hn := binary.LittleEndian.Uint64(raw)
	var hdr map[string]struct {
		DType   string   `json:"dtype"`
		Offsets []uint64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(raw[8:8+hn], &hdr); err != nil {
		t.Fatal(err)
	}
	for name, e := range hdr {
		if _, bb := DType(e.DType).BlockSize(); e.Offsets[0]%uint64(bb) != 0 {
			t.Errorf("%s (%s) starts at unaligned offset %d", name, e.DType, e.Offsets[0])
		}
	}
}

// stFile builds a safetensors file from a literal header and a data length.
func stFile(header string, dataLen int) []byte {
	var b le
	b.u64(uint64(len(header)))
	b.WriteString(header)
	b.Write(make([]byte, dataLen))
	return b.Bytes()
}

func TestSafetensorsErrors(t *testing.T) {
	ok := `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	if _, _, err := ParseSafetensors("ok", stFile(ok, 8)); err != nil {
		t.Fatalf("valid fixture rejected: %v", err)
	}
	huge := make([]byte, 16)
	binary.LittleEndian.PutUint64(huge, 1<<62)
	big := make([]byte, 16)
	binary.LittleEndian.PutUint64(big, 9)
	for _, c := range []struct {
		name string
		file []byte
		frag []string
	}{
		{"short", []byte{1, 2, 3}, []string{"short", "too short"}},
		{"huge", huge, []string{"huge", "exceeds"}},
		{"past", big, []string{"past", "exceeds the file size"}},
		{"notjson", stFile(`{"w":`, 0), []string{"notjson"}},
		{"array", stFile(`[1]`, 0), []string{"array", "not a JSON object"}},
		{"null", stFile(`null`, 0), []string{"null", "not a JSON object"}},
		{"utf8", stFile("{\"\xff\":1}", 0), []string{"utf8", "UTF-8"}},
		{"dtype", stFile(`{"w":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}`, 8), []string{"dtype", `"w"`, "F12"}},
		{"ggmltype", stFile(`{"w":{"dtype":"Q8_0","shape":[32],"data_offsets":[0,34]}}`, 34), []string{"ggmltype", `"w"`, "Q8_0"}},
		{"missing", stFile(`{"w":{"dtype":"F32","shape":[2]}}`, 8), []string{"missing", `"w"`, "data_offsets"}},
		{"offsets3", stFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}`, 8), []string{"offsets3", `"w"`, "2 entries"}},
		{"negshape", stFile(`{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, 8), []string{"negshape", `"w"`, "shape"}},
		{"backwards", stFile(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, 8), []string{"backwards", `"w"`, "end before"}},
		{"outside", stFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), []string{"outside", `"w"`, "run past"}},
		{"size", stFile(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8), []string{"size", `"w"`, "12 bytes"}},
		{"overflow", stFile(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, 8), []string{"overflow", `"w"`}},
		{"overlap", stFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), []string{"overlap", `"v"`, `"w"`}},
		{"gap", stFile(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), []string{"gap", `"w"`}},
		{"trailing", stFile(ok, 12), []string{"trailing", "cover 8 bytes", "has 12"}},
		{"meta", stFile(`{"__metadata__":{"a":1}}`, 0), []string{"meta", "__metadata__"}},
	} {
		_, _, err := ParseSafetensors(c.name, c.file)
		wantErr(t, err, c.frag...)
	}
	// __metadata__ is read, not taken for a tensor.
	ts, meta, err := ParseSafetensors("m", stFile(`{"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8))
	if err != nil || len(ts) != 1 || meta["k"] != "v" {
		t.Fatalf("metadata file: %v %v %v", ts, meta, err)
	}
}

func TestSafetensorsWriteErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.safetensors")
	w := &Tensor{Name: "w", DType: F32, Shape: []int{2}, Data: make([]byte, 8)}
	for _, c := range []struct {
		tensors []*Tensor
		meta    map[string]string
		frag    string
	}{
		{[]*Tensor{w, w}, nil, "duplicate"},
		{[]*Tensor{{Name: "__metadata__", DType: F32, Shape: []int{2}, Data: make([]byte, 8)}}, nil, "reserved"},
		{[]*Tensor{{Name: "q", DType: Q8_0, Shape: []int{32}, Data: make([]byte, 34)}}, nil, `"q"`},
		{[]*Tensor{{Name: "s", DType: F32, Shape: []int{3}, Data: make([]byte, 8)}}, nil, `"s"`},
		{[]*Tensor{{Name: "\xff", DType: F32, Shape: []int{2}, Data: make([]byte, 8)}}, nil, "UTF-8"},
		{[]*Tensor{w}, map[string]string{"k": "\xfe"}, "UTF-8"},
	} {
		wantErr(t, WriteSafetensors(path, c.tensors, c.meta), "bad.safetensors", c.frag)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed writes left files: %v", entries)
	}
}
