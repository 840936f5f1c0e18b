package format

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// ReadGGUFMetadata gives what ReadGGUF's Metadata gives, and refuses the
// same broken files, naming them.
func TestReadGGUFMetadata(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.gguf")
	meta := map[string]any{
		"general.architecture":  "llama",
		"tokenizer.ggml.tokens": []string{"<unk>", "<s>", "</s>", "▁a"},
		"tokenizer.ggml.scores": []float32{0, 0, 0, -1.5},
	}
	if err := WriteGGUF(path, meta, []*Tensor{TensorFromF32("w", []int{64, 64}, make([]float32, 64*64))}); err != nil {
		t.Fatal(err)
	}
	full, err := ReadGGUF(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadGGUFMetadata(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, full.Metadata) {
		t.Errorf("metadata %v, ReadGGUF's %v", got, full.Metadata)
	}
	data, _ := os.ReadFile(path)
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty.gguf", nil, "not a GGUF file"},
		{"cut.gguf", data[:len(data)-100], "run past"},
	} {
		p := filepath.Join(dir, c.name)
		os.WriteFile(p, c.data, 0o644)
		_, err := ReadGGUFMetadata(p)
		wantErr(t, err, c.want)
		wantErr(t, err, c.name)
	}
	_, err = ReadGGUFMetadata(dir)
	wantErr(t, err, "not a regular file")
}
