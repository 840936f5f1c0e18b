package nn

import (
	"strings"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/kernels"
)

func TestTrainableLineMatchesPEFT(t *testing.T) {
	// PEFT prints f"trainable params: {t:,d} || all params: {a:,d} || trainable%: {100*t/a:.4f}".
	cases := map[[2]int]string{
		{4480, 264512}:        "trainable params: 4,480 || all params: 264,512 || trainable%: 1.6937",
		{0, 999}:              "trainable params: 0 || all params: 999 || trainable%: 0.0000",
		{4194304, 6742609920}: "trainable params: 4,194,304 || all params: 6,742,609,920 || trainable%: 0.0622",
		{1000000, 1000000}:    "trainable params: 1,000,000 || all params: 1,000,000 || trainable%: 100.0000",
	}
	for c, want := range cases {
		if got := TrainableLine(c[1], c[0]); got != want {
			t.Errorf("TrainableLine(%d, %d) = %q, want %q", c[1], c[0], got, want)
		}
	}
}

func TestCountSkipsTiedDuplicates(t *testing.T) {
	shared := autograd.Param("embed", tensor.New(10, 4), false)
	lora := autograd.Param("lora", tensor.New(2, 4), true)
	ps := Params{{Name: "embed", Var: shared}, {Name: "lm_head", Var: shared}, {Name: "lora", Var: lora}}
	all, trainable := ps.Count()
	if all != 48 || trainable != 8 {
		t.Errorf("Count = %d, %d; want 48 (tied head counted once), 8", all, trainable)
	}
	if v, ok := ps.Get("lora"); !ok || v != lora {
		t.Error("Get(lora) failed")
	}
}

// A quantized base cannot take a delta in place: MergeInto says so and
// leaves it untouched.
func TestMergeIntoQuantizedRefuses(t *testing.T) {
	q := &kernels.Q8{Rows: 2, Cols: 3, CB: make([]int8, 6), SCB: []float32{1, 1}}
	w := tensor.FromQ8(q, nil)
	err := MergeInto(w, make([]float32, 6), 1)
	if err == nil || !strings.Contains(err.Error(), "quantized (int8)") || !strings.Contains(err.Error(), "dequantize") {
		t.Fatalf("got %v, want a refusal naming the storage", err)
	}
}
