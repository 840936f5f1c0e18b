package format

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestReadHFDirGolden(t *testing.T) {
	cfg, tensors, err := ReadHFDir(sharedPath(t, stories260KHFDir))
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(cfg, &c); err != nil {
		t.Fatal(err)
	}
	if c["model_type"] != "llama" || c["hidden_size"] != 64.0 {
		t.Errorf("config %v", c)
	}
	checkShapes(t, tensors, goldenHFShapes(t))
}

// writeShardedDir writes tensors as two shards plus an index.
func writeShardedDir(t *testing.T, weightMap map[string]string, shards map[string][]*Tensor) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, HFConfigFile), []byte(`{"model_type":"llama"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, ts := range shards {
		if err := WriteSafetensors(filepath.Join(dir, name), ts, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	if err := os.WriteFile(filepath.Join(dir, HFIndexFile), idx, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReadHFDirSharded(t *testing.T) {
	rng := newRng(11)
	a := TensorFromF32("a", []int{2, 3}, randF32(rng, 6))
	b := TensorFromF32("b", []int{4}, randF32(rng, 4))
	c := TensorFromF32("c", []int{1}, randF32(rng, 1))
	s1, s2 := "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	dir := writeShardedDir(t, map[string]string{"a": s1, "b": s2, "c": s2},
		map[string][]*Tensor{s1: {a}, s2: {b, c}})
	cfg, ts, err := ReadHFDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(cfg) != `{"model_type":"llama"}` || len(ts) != 3 {
		t.Fatalf("config %s, %d tensors", cfg, len(ts))
	}
	for _, want := range []*Tensor{a, b, c} {
		if got := ts[want.Name]; got == nil || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("tensor %s differs", want.Name)
		}
	}

	// Listed in the wrong shard.
	dir = writeShardedDir(t, map[string]string{"a": s2, "b": s2}, map[string][]*Tensor{s1: {a}, s2: {b}})
	_, _, err = ReadHFDir(dir)
	wantErr(t, err, `"a"`, s2, "not found")
	// The same tensor in two shards.
	dir = writeShardedDir(t, map[string]string{"a": s1, "b": s2}, map[string][]*Tensor{s1: {a}, s2: {a, b}})
	_, _, err = ReadHFDir(dir)
	wantErr(t, err, `"a"`, "both")
	// A shard path leaving the directory.
	dir = writeShardedDir(t, map[string]string{"a": "../x.safetensors"}, nil)
	_, _, err = ReadHFDir(dir)
	wantErr(t, err, HFIndexFile, "../x.safetensors")
	// A missing shard file.
	dir = writeShardedDir(t, map[string]string{"a": s1}, nil)
	_, _, err = ReadHFDir(dir)
	wantErr(t, err, s1)
	// An empty weight map.
	dir = writeShardedDir(t, map[string]string{}, nil)
	_, _, err = ReadHFDir(dir)
	wantErr(t, err, HFIndexFile, "weight_map")
}

func TestReadHFDirErrors(t *testing.T) {
	dir := t.TempDir()
	_, _, err := ReadHFDir(dir)
	wantErr(t, err, HFConfigFile)
	os.WriteFile(filepath.Join(dir, HFConfigFile), []byte(`[1,2]`), 0o644)
	_, _, err = ReadHFDir(dir)
	wantErr(t, err, HFConfigFile, "not a JSON object")
	os.WriteFile(filepath.Join(dir, HFConfigFile), []byte(`{}`), 0o644)
	_, _, err = ReadHFDir(dir)
	wantErr(t, err, dir, HFSafetensorsFile, HFIndexFile)
	os.WriteFile(filepath.Join(dir, HFSafetensorsFile), []byte(`garbage`), 0o644)
	_, _, err = ReadHFDir(dir)
	wantErr(t, err, HFSafetensorsFile)
}
