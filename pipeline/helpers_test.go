package pipeline

import (
	"testing"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	_ "github.com/gopeft/gopeft/peft/full"
	"github.com/gopeft/gopeft/peft/lora"
	"github.com/gopeft/gopeft/tokenizer"
	"github.com/gopeft/gopeft/train"
)

// stories loads the stories260K checkpoint (fresh each call).
func stories(t testing.TB) *llama.Model {
	t.Helper()
	m, err := llama.Load(shared.Path(t, "data/models/stories260K/stories260K.bin"), llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// textSets packs a shared text file into 32-token windows: the first n
// for training and the first nEval of its held-out last 10%.
func textSets(t testing.TB, rel string, n, nEval int) (trainSet, evalSet []data.Example) {
	t.Helper()
	tok, err := tokenizer.LoadLlama2c(shared.Path(t, "data/models/stories260K/tok512.bin"), 512)
	if err != nil {
		t.Fatal(err)
	}
	load := func(split string, k int) []data.Example {
		ds, err := data.Load(shared.Path(t, rel), data.FormatText, tok, data.Options{SeqLen: 32, EvalFraction: 0.1, Split: split})
		if err != nil {
			t.Fatal(err)
		}
		return ds.Examples[:min(k, len(ds.Examples))]
	}
	return load("train", n), load("eval", nEval)
}

func cfg(steps int, seed uint64) train.Config {
	c := train.DefaultConfig()
	c.Steps, c.BatchSize, c.LR, c.Warmup, c.Seed, c.Keep, c.EvalEvery = steps, 4, 3e-3, 0, seed, 2, 0
	c.Schedule = "constant"
	return c
}

func loraMethod(r int, dropout float64) func() (peft.Method, error) {
	return func() (peft.Method, error) {
		c := lora.NewConfig()
		m := lora.New(c)
		c.R, c.LoraAlpha, c.LoraDropout = r, float64(2*r), dropout
		c.TargetModules = peft.ModuleRegex(`.*(q_proj|v_proj|o_proj|down_proj)$`)
		return m, nil
	}
}

func fullMethod() (peft.Method, error) { return peft.NewMethod("FULL") }
