package main

import (
	"context"
	"fmt"
	"io"

	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/internal/demo"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/pipeline"
	"github.com/gopeft/gopeft/tokenizer"
	"github.com/gopeft/gopeft/train"
)

func newDemoCmd() *cobra.Command {
	var output string
	var quick bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a complete two-stage fine-tune with built-in data (no files, no network)",
		Long: `demo trains a small LLaMA from scratch on a built-in corpus of short stories (full
fine-tuning), then fine-tunes a LoRA adapter on a built-in question-answering task the
corpus never mentions. It prints the losses before and after each stage and generations
before and after the LoRA, and leaves the stage-1 model (Hugging Face layout), the adapter
(PEFT layout), metrics.jsonl and loss.png of each stage in --output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			return runDemo(ctx, output, quick, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&output, "output", "demo-out", "output directory")
	cmd.Flags().BoolVar(&quick, "quick", false, "a few steps per stage (for tests)")
	return cmd
}

// demoConfig is the stage-1 model: a 4-layer LLaMA with grouped-query
// attention over a byte vocabulary.
func demoConfig() llama.Config {
	return llama.Config{HiddenSize: 64, IntermediateSize: 176, NumHiddenLayers: 4, NumAttentionHeads: 4, NumKeyValueHeads: 2,
		VocabSize: tokenizer.NewBytes().VocabSize(), MaxPositionEmbeddings: 256, RMSNormEps: 1e-5, RopeTheta: 10000,
		TieWordEmbeddings: true, BOSTokenID: 1, EOSTokenID: 2, RoPE: autograd.RoPEHalf}
}

func runDemo(ctx context.Context, outDir string, quick bool, out, progress io.Writer) error {
	start := time.Now()
	tok := tokenizer.NewBytes()
	base, err := llama.NewRandom(demoConfig(), 1)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "gopeft demo: stage 1 trains a small LLaMA from scratch on built-in stories (full fine-tuning);")
	fmt.Fprintln(out, "stage 2 fine-tunes a LoRA on a question-answering task the stories never mention.")

	// Stage 1: general corpus, every weight trains.
	steps1, steps2 := 300, 120
	if quick {
		steps1, steps2 = 4, 4
	}
	var st data.Stats
	// One document a story, so each starts with BOS as generation does.
	var docs []data.Document
	for _, story := range strings.Split(strings.TrimSpace(demo.Corpus(1, 100_000)), "\n") {
		docs = append(docs, data.Document{Text: story + "\n", Source: "built-in stories"})
	}
	windows, err := data.PackText(docs, tok, 64, &st)
	if err != nil {
		return err
	}
	trainSet, evalSet, err := data.SplitExamples(windows, 0.05)
	if err != nil {
		return err
	}
	r1 := &Recipe{Model: "built-in random LLaMA (4 layers, dim 64, byte vocabulary)", Method: "FULL",
		Data:  DataRecipe{Path: "built-in stories", SeqLen: 64},
		Train: demoTrainConfig(steps1, 16, 4e-3, 20, 1, 100)}

	// Stage 2: the task, a LoRA on every linear layer; the base is frozen.
	tmpl, err := data.LookupTemplate("plain")
	if err != nil {
		return err
	}
	enc, err := data.NewEncoder(tok, tmpl, data.EncoderOptions{MaxLen: 128})
	if err != nil {
		return err
	}
	qas := demo.Task()
	var convs []data.Conversation
	for _, qa := range qas {
		convs = append(convs, data.Conversation{Turns: []data.Turn{{User: qa.Prompt, Assistant: qa.Answer}}, Source: "built-in task"})
	}
	taskSet, err := enc.EncodeAll(convs, &st)
	if err != nil {
		return err
	}
	r2 := &Recipe{Model: filepath.Join(outDir, "stage1-pretrain"), Method: "LORA",
		Peft:  map[string]any{"r": 8, "lora_alpha": 16, "target_modules": "all-linear"},
		Data:  DataRecipe{Path: "built-in task", Format: "prompt_completion", Template: "plain"},
		Train: demoTrainConfig(steps2, 12, 1e-2, 10, 2, 40)}

	// The two stages are one pipeline: the stage-1 model is stage 2's base.
	p := &pipeline.Pipeline{Base: base, BaseName: r1.Model, OutputDir: outDir, Out: out, Progress: progress}
	for _, s := range []struct {
		name      string
		r         *Recipe
		trn, eval []data.Example
	}{{"stage1-pretrain", r1, trainSet, evalSet}, {"stage2-lora", r2, taskSet, taskSet}} {
		st := pipeline.Stage{Name: s.name, NewMethod: s.r.newMethod, Train: s.trn, Eval: s.eval, Config: s.r.Train}
		if st.Fingerprint, err = s.r.fingerprint(); err != nil {
			return err
		}
		if st.Recipe, err = s.r.yaml(); err != nil {
			return err
		}
		p.Stages = append(p.Stages, st)
	}
	shown := []demo.QA{qas[0], qas[3], qas[9]}
	p.AfterStage = func(i int, _ *peft.Model) error {
		if i == 0 {
			fmt.Fprintf(out, "sample: %q\n", demoGenerate(ctx, base, tok, "Once upon a time,", 60))
			fmt.Fprintf(out, "\nstage 2: LoRA on %d questions (trained on and scored: the point is the change)\nbefore:\n", len(taskSet))
			for _, qa := range shown {
				fmt.Fprintf(out, "  %s%s\n", qa.Prompt, demoGenerate(ctx, base, tok, qa.Prompt, 40))
			}
			return nil
		}
		fmt.Fprintln(out, "after:")
		correct := 0
		for _, qa := range qas {
			got := demoGenerate(ctx, base, tok, qa.Prompt, 40)
			if got == qa.Answer {
				correct++
			}
			for _, s := range shown {
				if s == qa {
					fmt.Fprintf(out, "  %s%s\n", qa.Prompt, got)
				}
			}
		}
		fmt.Fprintf(out, "exact answers after the LoRA: %d of %d\n", correct, len(qas))
		return nil
	}
	// The demo owns its output: a previous demo's pipeline is replaced.
	for _, f := range []string{pipeline.StateFile, "stage1-pretrain", "stage2-lora"} {
		if err := os.RemoveAll(filepath.Join(outDir, f)); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "\nstage 1: %d story windows of 64 bytes\n", len(trainSet))
	if _, err := p.Run(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s (stage1-pretrain: model, stage2-lora: PEFT adapter; metrics.jsonl and loss.png in each) in %v\n",
		outDir, time.Since(start).Round(time.Second))
	return nil
}

// demoGenerate greedily continues prompt (after BOS) until EOS or n tokens.
func demoGenerate(ctx context.Context, m *llama.Model, tok tokenizer.Tokenizer, prompt string, n int) string {
	ids := append([]int{tok.BOS()}, tok.Encode(prompt)...)
	gen, err := m.Generate(ctx, ids, llama.GenerateOptions{MaxNewTokens: n}, nil)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	s := tok.Decode(gen)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

// demoTrainConfig is a stage's training settings: the defaults (AdamW, cosine
// schedule, clipping at 1) with the stage's own length, batch, rate,
// warm-up, seed and evaluation interval.
func demoTrainConfig(steps, batch int, lr float64, warmup int, seed uint64, evalEvery int) train.Config {
	c := train.DefaultConfig()
	c.Steps, c.BatchSize, c.LR, c.Warmup, c.Seed, c.EvalEvery = steps, batch, lr, warmup, seed, evalEvery
	return c
}
