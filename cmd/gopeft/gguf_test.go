package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
)

// TestConvertToGGUF: stories260K written as GGUF carries llama.cpp's
// SentencePiece vocabulary and, read back, generates the reference
// runner's greedy text; an existing output is replaced only with
// --overwrite; bad types are refused.
func TestConvertToGGUF(t *testing.T) {
	dir := shared.Path(t, "data/models/stories260K")
	model := filepath.Join(dir, "stories260K.bin")
	out := filepath.Join(t.TempDir(), "s.gguf")
	if _, err := run(t, "convert", "--model", model, "--to", "gguf", "--gguf-type", "f32", "--output", out); err != nil {
		t.Fatal(err)
	}
	f, err := format.ReadGGUF(out)
	if err != nil {
		t.Fatal(err)
	}
	toks, _ := f.Metadata["tokenizer.ggml.tokens"].([]string)
	types, _ := f.Metadata["tokenizer.ggml.token_type"].([]int32)
	if len(toks) != 512 || toks[0] != "<unk>" || toks[1] != "<s>" || toks[2] != "</s>" || toks[3] != "<0x00>" || toks[300] != "▁ha" {
		t.Fatalf("tokens %q...", toks[:4])
	}
	if types[0] != 2 || types[1] != 3 || types[3] != 6 || types[258] != 6 || types[300] != 1 {
		t.Errorf("token types %v", types[:5])
	}
	if f.Metadata["general.name"] != "s" || f.Metadata["general.file_type"] != uint32(0) {
		t.Errorf("general.name %v, file_type %v", f.Metadata["general.name"], f.Metadata["general.file_type"])
	}
	text, err := run(t, "generate", "--model", out, "--tokenizer", filepath.Join(dir, "tok512.bin"), "--temperature", "0", "-n", "120")
	if err != nil {
		t.Fatal(err)
	}
	if want := greedyGolden(t); strings.TrimSuffix(text, "\n") != want {
		t.Errorf("the GGUF model generated\n%q\nwant\n%q", text, want)
	}
	// Without --tokenizer the file's own vocabulary (tokenizer.ggml.*)
	// encodes the prompt and decodes the text exactly as tok512.bin does.
	for _, prompt := range []string{"", "Once upon a time, Lily saw"} {
		viaBin, err := run(t, "generate", "--model", out, "--tokenizer", filepath.Join(dir, "tok512.bin"), "--prompt", prompt, "--temperature", "0", "-n", "40")
		if err != nil {
			t.Fatal(err)
		}
		own, err := run(t, "generate", "--model", out, "--prompt", prompt, "--temperature", "0", "-n", "40")
		if err != nil || own != viaBin {
			t.Errorf("prompt %q: with the GGUF's own vocabulary (err %v)\n%q\nwith tok512.bin\n%q", prompt, err, own, viaBin)
		}
	}
	mustFail(t, []string{"convert", "--model", model, "--to", "gguf", "--output", out}, out, "already exists", "--overwrite")
	if _, err := run(t, "convert", "--model", model, "--to", "gguf", "--gguf-type", "q4_0", "--overwrite", "--output", out); err != nil {
		t.Fatal(err)
	}
	mustFail(t, []string{"convert", "--model", model, "--to", "gguf", "--gguf-type", "q5_k", "--output", out + "2"}, `"q5_k"`, "q8_0, q4_0")
	mustFail(t, []string{"convert", "--model", model, "--to", "gguf", "--quant", "nf4", "--output", out + "2"}, "--gguf-type")
	mustFail(t, []string{"convert", "--model", model, "--to", "onnx", "--output", out + "2"}, `"onnx"`)
	mustFail(t, []string{"convert", "--model", model, "--gguf-type", "q8_0", "--output", out + "d"}, "--to gguf")
	mustFail(t, []string{"convert", "--model", model, "--to", "gguf", "--output", model}, "input")
}

// TestConvertAdapterToGGUF: a PEFT LoRA adapter becomes a GGUF LoRA file;
// adapters llama.cpp cannot load are refused with the reason.
func TestConvertAdapterToGGUF(t *testing.T) {
	base := shared.Path(t, "golden/stories260K/hf")
	out := filepath.Join(t.TempDir(), "lora.gguf")
	if _, err := run(t, "convert", "--model", base, "--adapter", shared.Path(t, "golden/stories260K/lora"), "--to", "gguf", "--output", out); err != nil {
		t.Fatal(err)
	}
	f, err := format.ReadGGUF(out)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata["general.type"] != "adapter" || f.Metadata["adapter.lora.alpha"] != float32(8) || len(f.Tensors) != 5*2*2 {
		t.Errorf("metadata %v, %d tensors", f.Metadata, len(f.Tensors))
	}
	ia3 := filepath.Join(t.TempDir(), "ia3")
	if _, err := run(t, quickTrain(t, ia3, "--method", "IA3")...); err != nil {
		t.Fatal(err)
	}
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	mustFail(t, []string{"convert", "--model", model, "--adapter", ia3, "--to", "gguf", "--output", out + "2"}, "IA3", "plain LoRA")
	mustFail(t, []string{"convert", "--model", base, "--adapter", shared.Path(t, "golden/stories260K/lora"), "--to", "gguf", "--gguf-type", "q4_0", "--output", out + "3"}, `"q4_0"`)
}
