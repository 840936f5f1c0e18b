package main

import (
	"testing"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/train"
)

// FuzzRecipe: any recipe bytes are refused with an error, or give a recipe
// that validate accepts only if it can also be fingerprinted and written
// back as recipe.yaml (a NaN that slipped through would fail there, late
// and naming nothing); never a panic.
func FuzzRecipe(f *testing.F) {
	f.Add([]byte("model: m.bin\nmethod: LORA\npeft:\n  r: 8\n  lora_alpha: 16\n  target_modules: all-linear\ndata:\n  path: d.txt\n  format: text\n  seq_len: 128\ntrain:\n  steps: 4\n  lr: 0.003\noutput: out\n"))
	f.Add([]byte("train:\n  lr: .nan\n"))
	f.Add([]byte("train:\n  batch_size: -1\n  max_grad_norm: .inf\n"))
	f.Add([]byte("data:\n  eval_fraction: .nan\n  template: foo\n"))
	f.Add([]byte("peft:\n  lora_alpha: .nan\n"))
	f.Add([]byte("peft: [1, 2]\n"))
	f.Add([]byte("train: {steps: 99999999999999999999}\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &Recipe{Method: lora.PeftType, Data: DataRecipe{Format: data.FormatAuto, SeqLen: 128, MaxLen: 512}, Train: train.DefaultConfig()}
		if err := parseRecipe(b, "r.yaml", r); err != nil {
			return
		}
		if err := r.validate(); err != nil {
			return
		}
		if _, err := r.fingerprint(); err != nil {
			t.Fatalf("a valid recipe cannot be fingerprinted: %v", err)
		}
		if _, err := r.yaml(); err != nil {
			t.Fatalf("a valid recipe cannot be written back: %v", err)
		}
	})
}
