package peft_test

import (
	"math"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	_ "github.com/gopeft/gopeft/peft/adalora"
	_ "github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/peft/methodtest"
)

// One batch whose rows use different adapters (LoRA, DoRA, AdaLoRA, none),
// as PEFT's adapter_names argument: every row's logits equal that row run
// alone with its adapter, within 1e-5 (the kernels may group rows
// differently), with and without a tape.
func TestMixedAdapterBatch(t *testing.T) {
	pm := methodtest.BaseModel(t)
	dirs := map[string]string{
		"lora":    shared.Path(t, "golden/stories260K/lora"),
		"dora":    methodtest.LoadGolden(t, "dora").Dir,
		"adalora": methodtest.LoadGolden(t, "adalora").Dir,
	}
	for _, name := range []string{"lora", "dora", "adalora"} {
		if _, err := pm.LoadAdapter(dirs[name], name); err != nil {
			t.Fatal(err)
		}
	}
	seqs := [][]int{
		{1, 122, 17, 325, 219, 139, 450, 273},
		{1, 201, 17, 323, 68, 453, 21, 43},
		{1, 328, 384, 353, 219, 207, 297, 389},
		{1, 99, 17, 88, 219, 139, 450, 7},
		{1, 5, 6, 7, 8, 9, 10, 11},
	}
	rows := []string{"dora", "", "lora", "adalora", "dora"}
	T, vocab := len(seqs[0]), pm.Base.Config.VocabSize
	in := llama.Input{Batch: len(seqs), T: T}
	for _, s := range seqs {
		in.IDs = append(in.IDs, s...)
	}
	alone := func(i int) []float32 {
		p := &nn.Pass{Adapters: []string{rows[i]}}
		h, err := pm.Base.Forward(p, llama.Input{IDs: seqs[i], Batch: 1, T: T})
		if err != nil {
			t.Fatal(err)
		}
		return pm.Base.Logits(p, h).Value.Data
	}
	for _, tape := range []bool{false, true} {
		p := &nn.Pass{Adapters: rows}
		if tape {
			p.Tape = autograd.NewTape()
		}
		h, err := pm.Base.Forward(p, in)
		if err != nil {
			t.Fatal(err)
		}
		mixed := pm.Base.Logits(p, h).Value.Data
		var differ float64
		for i := range seqs {
			want := alone(i)
			got := mixed[i*T*vocab : (i+1)*T*vocab]
			var d float64
			for j := range want {
				d = math.Max(d, math.Abs(float64(got[j]-want[j])))
			}
			if d > 1e-5 {
				t.Errorf("tape %v: row %d (adapter %q) differs from the row run alone by %g", tape, i, rows[i], d)
			}
			if i > 0 { // rows 0 and 4 share an adapter; the others must differ from row 0's adapter
				other := &nn.Pass{Adapters: []string{rows[0]}}
				h, _ := pm.Base.Forward(other, llama.Input{IDs: seqs[i], Batch: 1, T: T})
				o := pm.Base.Logits(other, h).Value.Data
				for j := range o {
					differ = math.Max(differ, math.Abs(float64(o[j]-want[j])))
				}
			}
		}
		if differ < 1e-2 {
			t.Fatal("the adapters hardly change the logits; the test would prove nothing")
		}
	}
}
