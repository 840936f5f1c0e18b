package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/tokenizer"
)

// runConvertGGUF is convert --to gguf: the model (llama.SaveGGUF) or, with
// --adapter, the adapter (lora.WriteGGUF) as one GGUF file.
func runConvertGGUF(cmd *cobra.Command, mf *modelFlags, output, typ string, overwrite bool) error {
	if mf.q.quant != "" || mf.q.double {
		return fmt.Errorf("--quant writes bitsandbytes' layout for --to hf; GGUF has its own types: use --gguf-type q8_0 or q4_0")
	}
	if err := checkFileOutput("--output", output, mf.inputs()); err != nil {
		return err
	}
	if st, err := os.Stat(output); err == nil {
		if st.IsDir() {
			return fmt.Errorf("--output %s is a directory; --to gguf writes one file", output)
		}
		if !overwrite {
			return fmt.Errorf("--output %s already exists: pass --overwrite to replace it, or choose another name", output)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--output %s: %w", output, err)
	}
	title := strings.TrimSuffix(filepath.Base(output), filepath.Ext(output))
	if mf.adapter != "" {
		if typ == "" {
			typ = "f32"
		}
		if !slices.Contains(lora.GGUFAdapterTypes, typ) {
			return fmt.Errorf("--gguf-type %q: a GGUF LoRA is written as %s (convert_lora_to_gguf.py's types)", typ, strings.Join(lora.GGUFAdapterTypes, ", "))
		}
		if _, err := mf.load(); err != nil {
			return err
		}
		if err := lora.WriteGGUF(mf.pm, peft.DefaultAdapter, output, typ, title); err != nil {
			return fmt.Errorf("--adapter %s: %w", mf.adapter, err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (GGUF LoRA, %s)\n", output, typ)
		return nil
	}
	if typ == "" {
		typ = "f16"
	}
	if !slices.Contains(llama.GGUFTypes, typ) {
		return fmt.Errorf("--gguf-type %q: want one of %s", typ, strings.Join(llama.GGUFTypes, ", "))
	}
	m, tok, err := mf.loadWithTokenizer()
	if err != nil {
		return err
	}
	l2c, ok := tok.(*tokenizer.Llama2c)
	if !ok {
		return fmt.Errorf("--to gguf writes the vocabulary of a llama2.c tokenizer.bin (SentencePiece); %T tokenizers are not written to GGUF yet", tok)
	}
	if err := llama.SaveGGUF(m, output, llama.GGUFOptions{Type: typ, Vocab: l2c.GGUFMetadata(), Name: title}); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (GGUF, %s)\n", output, typ)
	return nil
}
