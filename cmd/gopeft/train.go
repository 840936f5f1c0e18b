package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/dist"
	"github.com/gopeft/gopeft/eval"
	"github.com/gopeft/gopeft/internal/atomicfile"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tokenizer"
	"github.com/gopeft/gopeft/train"
)

func newTrainCmd() *cobra.Command {
	var recipePath string
	var resume, overwrite bool
	r := &Recipe{Method: "LORA", Data: DataRecipe{Format: data.FormatAuto}, Train: train.DefaultConfig()}
	d := train.DefaultConfig() // the flags' defaults
	var mf *methodFlags
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Fine-tune a model with a PEFT method (or fully) on a dataset",
		Long: `train fine-tunes from flags or from a YAML recipe (--config); flags given on the
command line override the recipe. The result (a PEFT adapter, or a Hugging Face model for
--method FULL), recipe.yaml, metrics.jsonl, loss.png and checkpoints go to --output.
An interrupted run continues with --resume; --overwrite-output-dir replaces the results
of an earlier run in --output (without either, a directory holding them is refused).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			comm, err := dist.Init()
			if err != nil {
				return err
			}
			r.comm = comm
			return endRanks(comm, dist.Agree(comm, func() error {
				// Every rank reads the recipe; the ranks go on only if all can.
				return readTrainFlags(cmd, recipePath, r, mf)
			}()), func() error {
				ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
				defer stop()
				if len(r.Stages) > 0 || r.Continual != nil {
					if comm.Size() > 1 {
						return fmt.Errorf("a pipeline (stages: or continual:) runs as one process; data-parallel ranks train single stages")
					}
					_, err := runPipeline(ctx, r, resume, overwrite, cmd.OutOrStdout(), cmd.ErrOrStderr())
					return err
				}
				stopRanks := onTermination(comm, r.Output)
				defer stopRanks()
				_, err := runTrain(ctx, r, resume, overwrite, cmd.OutOrStdout(), cmd.ErrOrStderr())
				return err
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&recipePath, "config", "", "YAML recipe (flags override its values)")
	fl.StringVar(&r.Model, "model", "", "base checkpoint")
	fl.StringVar(&r.Tokenizer, "tokenizer", "", "tokenizer (default: found beside the model)")
	registerPrecision(fl, &r.BF16, &r.FP32)
	fl.StringVar(&r.Quant, "quant", "", "quantize the frozen base's decoder Linears on load: nf4, fp4 or int8 (QLoRA with a LoRA method)")
	fl.BoolVar(&r.DoubleQuant, "double-quant", false, "with --quant nf4/fp4: quantize the 4-bit scales too")
	fl.BoolVar(&r.GradientCheckpointing, "gradient-checkpointing", false, "keep only each decoder block's input and recompute the block in the backward (less memory, one more forward)")
	fl.IntVar(&r.CheckpointBlocks, "checkpoint-blocks", 0, checkpointBlocksUsage)
	fl.StringVar(&r.Method, "method", r.Method, methodUsage())
	mf = registerMethodFlags(fl)
	fl.StringVar(&r.Data.Task, "task", "", "train a classification head on a GLUE task's train split instead of --data: "+strings.Join(eval.ClassificationTasks(), ", "))
	fl.StringVar(&r.Data.DataDir, "data-dir", "", "folder the --task files are found in (default ../shared/data when it exists)")
	fl.StringVar(&r.Data.Path, "data", "", "training data file")
	fl.StringVar(&r.Data.Format, "format", r.Data.Format, "data format: auto, text, alpaca, sharegpt, prompt_completion")
	fl.StringVar(&r.Data.Template, "template", "", "chat template: alpaca, llama2, chatml, plain (default per format)")
	fl.StringVar(&r.Data.EvalPath, "eval-data", "", "held-out data file")
	fl.Float64Var(&r.Data.EvalFraction, "eval-fraction", 0, "hold out this fraction of the end of --data")
	fl.IntVar(&r.Data.SeqLen, "seq-len", 128, "plain text: tokens per window")
	fl.IntVar(&r.Data.MaxLen, "max-len", 512, "instruction data: truncate to this many tokens")
	fl.BoolVar(&r.Data.TrainOnPrompt, "train-on-prompt", false, "count the prompt's tokens in the loss too")
	fl.BoolVar(&r.Data.Packing, "packing", false, "instruction data: pack consecutive examples into sequences of up to --max-len tokens, without attention across them")
	fl.BoolVar(&r.Data.SkipInvalid, "skip-invalid", false, "skip and count malformed rows instead of stopping")
	fl.IntVar(&r.Data.Limit, "limit", 0, "use only the first N training examples")
	fl.IntVar(&r.Data.EvalLimit, "eval-limit", 0, "use only the first N eval examples")
	fl.IntVar(&r.Train.Steps, "steps", d.Steps, "optimizer updates")
	fl.IntVar(&r.Train.BatchSize, "batch", d.BatchSize, "sequences per micro-batch")
	fl.IntVar(&r.Train.GradAccum, "grad-accum", d.GradAccum, "micro-batches per update")
	fl.Float64Var(&r.Train.LR, "lr", d.LR, "peak learning rate (> 0)")
	fl.StringVar(&r.Train.Schedule, "schedule", d.Schedule, "constant, linear or cosine")
	fl.IntVar(&r.Train.Warmup, "warmup", d.Warmup, "warm-up steps")
	fl.StringVar(&r.Train.Optimizer, "optimizer", d.Optimizer, "adamw, adamw_8bit (bitsandbytes' 8-bit blockwise state) or sgd")
	fl.Float64Var(&r.Train.WeightDecay, "weight-decay", d.WeightDecay, "weight decay")
	fl.Float64Var(&r.Train.MaxGradNorm, "max-grad-norm", d.MaxGradNorm, "clip gradients to this global norm (0: off)")
	fl.Uint64Var(&r.Train.Seed, "seed", d.Seed, "seed for initialisation, data order and dropout")
	fl.IntVar(&r.Train.EvalEvery, "eval-every", d.EvalEvery, "evaluate every N steps (0: before and after only)")
	fl.IntVar(&r.Train.SaveEvery, "save-every", d.SaveEvery, "checkpoint every N steps (0: at the end)")
	fl.IntVar(&r.Train.LogEvery, "log-every", d.LogEvery, "metrics line every N steps")
	fl.StringVar(&r.Output, "output", "", "output directory")
	fl.BoolVar(&resume, "resume", false, "continue the unfinished run in --output from its latest checkpoint")
	fl.BoolVar(&overwrite, "overwrite-output-dir", false, "remove the results and checkpoints of an earlier run in --output first")
	fl.BoolVar(&r.allowNonFinite, "allow-nonfinite", false, "load a model holding NaN or infinite weights (skip the check)")
	return cmd
}

// readTrainFlags reads the recipe (--config) under the flags given on the
// command line and applies the method's flags.
func readTrainFlags(cmd *cobra.Command, recipePath string, r *Recipe, mf *methodFlags) error {
	if recipePath != "" {
		// Flags given on the command line win over the recipe, and
		// the recipe over the flags' defaults: note the given
		// flags, read the recipe over r, then set them again.
		fl := cmd.Flags()
		given := map[string]string{}
		fl.Visit(func(f *pflag.Flag) { given[f.Name] = f.Value.String() })
		if err := readRecipe(recipePath, r); err != nil {
			return err
		}
		for name, v := range given {
			if err := fl.Set(name, v); err != nil {
				return err
			}
		}
		// A precision flag overrides the recipe's opposite key.
		_, gb := given["bf16"]
		_, gf := given["fp32"]
		if gf && !gb {
			r.BF16 = false
		}
		if gb && !gf {
			r.FP32 = false
		}
	}
	if r.Peft == nil {
		r.Peft = map[string]any{}
	}
	reg, err := mf.apply(r.Method, r.Peft)
	if err != nil {
		return err
	}
	r.Method = reg.Type
	return nil
}

// runTrain carries out a recipe: check every setting and the output
// directory, load, attach the method, train, save. With several ranks
// (r.comm) every rank loads the model and data, and they start only when
// all of them could; rank 0 alone checks and writes the output directory.
func runTrain(ctx context.Context, r *Recipe, resume, overwrite bool, out, progress io.Writer) (train.Summary, error) {
	c := dist.Or(r.comm)
	if c.Rank() != 0 {
		out, progress = io.Discard, io.Discard
	}
	if line := dist.Describe(c); line != "" {
		fmt.Fprintln(out, line)
	}
	in, err := loadTrain(r, resume, overwrite, out, c.Rank() == 0)
	if err := dist.Agree(c, err); err != nil {
		return train.Summary{}, err
	}
	if c.Rank() == 0 {
		err = in.plan.clear(out)
	}
	if err := dist.Agree(c, err); err != nil {
		return train.Summary{}, err
	}
	return trainModel(ctx, in.base, r, in.trainSet, in.evalSet, resume, out, progress)
}

// trainInputs are what a run loads before it trains.
type trainInputs struct {
	plan              outputPlan
	base              *llama.Model
	trainSet, evalSet []data.Example
}

// loadTrain checks the recipe and the output directory (when checkOutput:
// the rank that writes it) and loads the model and the data.
func loadTrain(r *Recipe, resume, overwrite bool, out io.Writer, checkOutput bool) (trainInputs, error) {
	var in trainInputs
	if r.Model == "" || (r.Data.Path == "" && r.Data.Task == "") || r.Output == "" {
		return in, fmt.Errorf("train needs a model, data and an output directory (--model, --data or --task, --output or a recipe)")
	}
	if r.Data.Path != "" && r.Data.Task != "" {
		return in, fmt.Errorf("give --data or --task, not both")
	}
	if err := r.validate(); err != nil {
		return in, err
	}
	if err := r.resolvePrecision(out); err != nil {
		return in, err
	}
	fp, err := r.fingerprint()
	if err != nil {
		return in, err
	}
	mf := modelFlags{model: r.Model, tokenizer: r.Tokenizer}
	inputs := []input{{"--model", r.Model}, {"--tokenizer", mf.tokenizerPath()}, {"--data", r.Data.Path}, {"--eval-data", r.Data.EvalPath}}
	if checkOutput {
		if in.plan, err = checkTrainOutput(r, resume, overwrite, fp, inputs); err != nil {
			return in, err
		}
	}
	lo, err := r.loadOptions()
	if err != nil {
		return in, err
	}
	base, err := loadModel(r.Model, lo, r.allowNonFinite)
	if err != nil {
		return in, err
	}
	base.GradientCheckpointing = r.GradientCheckpointing
	base.CheckpointBlocks = r.CheckpointBlocks
	if err := checkBlocks(r.CheckpointBlocks, base.Config, "--checkpoint-blocks (recipe checkpoint_blocks)"); err != nil {
		return in, err
	}
	if err := r.checkContext(base.Config); err != nil {
		return in, err
	}
	tok, err := mf.loadTokenizer()
	if err != nil {
		return in, err
	}
	if err := checkVocab(tok, base); err != nil {
		return in, err
	}
	var trainSet, evalSet []data.Example
	source := r.Data.Path
	if r.Data.Task != "" {
		trainSet, evalSet, source, err = loadTaskData(r, tok)
		if err == nil {
			err = addScoreHead(base, r)
		}
	} else {
		trainSet, evalSet, err = loadData(r, tok)
	}
	if err != nil {
		return in, err
	}
	fmt.Fprintf(out, "data: %d training and %d eval sequences from %s\n", len(trainSet), len(evalSet), source)
	in.base, in.trainSet, in.evalSet = base, trainSet, evalSet
	return in, nil
}

// checkPrepended refuses sequences that, after the virtual tokens or
// prefix the adapter places first, would run past the model's context.
func checkPrepended(base *llama.Model, sets ...[]data.Example) error {
	n, err := base.Prepended(nil)
	if err != nil || n == 0 {
		return err
	}
	longest := 0
	for _, set := range sets {
		for _, e := range set {
			longest = max(longest, len(e.IDs))
		}
	}
	if ctx := base.Config.MaxPositionEmbeddings; n+longest > ctx {
		return fmt.Errorf("the adapter's %d virtual tokens or prefix positions and the longest sequence's %d tokens exceed the model's context of %d (max_position_embeddings): shorten the sequences (--seq-len, --max-len) or the prefix (num_virtual_tokens)",
			n, longest, ctx)
	}
	return nil
}

// trainModel attaches the recipe's method to base and trains it.
func trainModel(ctx context.Context, base *llama.Model, r *Recipe, trainSet, evalSet []data.Example, resume bool, out, progress io.Writer) (train.Summary, error) {
	method, err := r.newMethod()
	if err != nil {
		return train.Summary{}, err
	}
	bc := method.Config().Base()
	bc.Seed = r.Train.Seed
	bc.BaseModelNameOrPath = r.Model
	if r.Data.Task != "" {
		// PEFT's SEQ_CLS: the head trains whole and is saved with the
		// adapter (modules_to_save); a method that trains the base's own
		// weights (full fine-tuning) trains it in place.
		bc.TaskType = peft.TaskSeqCls
	}
	pm := peft.Wrap(base)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, method); err != nil {
		return train.Summary{}, err
	}
	if err := checkPrepended(base, trainSet, evalSet); err != nil {
		return train.Summary{}, err
	}
	fp, err := r.fingerprint()
	if err != nil {
		return train.Summary{}, err
	}
	recipe, err := r.yaml()
	if err != nil {
		return train.Summary{}, err
	}
	run := &train.Run{Model: pm, Train: trainSet, Eval: evalSet, Config: r.Train, OutputDir: filepath.Join(r.Output, "checkpoints"), ParamLine: out,
		Fingerprint: fp, Resume: resume, Progress: progress, Meta: nil, Classify: r.Data.Task != "", Comm: r.comm}
	if err := run.CheckRanks(); err != nil { // before anything is written
		return train.Summary{}, err
	}
	rank0 := dist.Or(r.comm).Rank() == 0
	if rank0 {
		if err := os.MkdirAll(r.Output, 0o755); err != nil {
			return train.Summary{}, err
		}
		if err := atomicfile.WriteFile(filepath.Join(r.Output, "recipe.yaml"), recipe); err != nil {
			return train.Summary{}, err
		}
	}
	sum, err := run.Execute(ctx)
	if err != nil {
		return sum, err
	}
	if !rank0 { // rank 0 writes the results and reports
		return sum, dist.Agree(r.comm, nil)
	}
	if err := dist.Agree(r.comm, saveResults(pm, r, &sum)); err != nil {
		return sum, err
	}
	switch {
	case !math.IsNaN(sum.FirstEvalAcc):
		fmt.Fprintf(out, "eval loss %.4f → %.4f, accuracy %.4f → %.4f\n", sum.FirstEval, sum.LastEval, sum.FirstEvalAcc, sum.LastEvalAcc)
	case !math.IsNaN(sum.FirstEval):
		fmt.Fprintf(out, "eval loss %.4f → %.4f (perplexity %.2f → %.2f)\n", sum.FirstEval, sum.LastEval, math.Exp(sum.FirstEval), math.Exp(sum.LastEval))
	}
	fmt.Fprintf(out, "train loss %.4f → %.4f over %d steps, %.0f tokens/s; wrote %s\n", sum.FirstLoss, sum.LastLoss, sum.Steps, sum.TokensPerSec, r.Output)
	return sum, nil
}

// saveResults writes the adapter (or model) and moves the metrics and the
// plot beside it.
func saveResults(pm *peft.Model, r *Recipe, sum *train.Summary) error {
	if err := pm.Save(r.Output); err != nil {
		return err
	}
	// The metrics and plot sit beside the result.
	for _, f := range []string{sum.MetricsPath, sum.PlotPath} {
		if _, err := os.Stat(f); err == nil {
			if err := os.Rename(f, filepath.Join(r.Output, filepath.Base(f))); err != nil {
				return err
			}
		}
	}
	sum.MetricsPath = filepath.Join(r.Output, filepath.Base(sum.MetricsPath))
	sum.PlotPath = filepath.Join(r.Output, filepath.Base(sum.PlotPath))
	return nil
}

// loadData reads the training set and the eval set (a separate file, or the
// held-out tail of the training file).
func loadData(r *Recipe, tok tokenizer.Tokenizer) (trainSet, evalSet []data.Example, err error) {
	o := data.Options{Template: r.Data.Template, MaxLen: r.Data.MaxLen, SeqLen: r.Data.SeqLen, TrainOnPrompt: r.Data.TrainOnPrompt,
		SkipInvalid: r.Data.SkipInvalid}
	if r.Data.EvalFraction > 0 && r.Data.EvalPath == "" {
		o.EvalFraction, o.Split = r.Data.EvalFraction, "train"
	}
	ds, err := data.Load(r.Data.Path, r.Data.Format, tok, o)
	if err != nil {
		return nil, nil, err
	}
	if ds.Stats.Invalid > 0 || ds.Stats.Truncated > 0 || ds.Stats.Dropped > 0 {
		fmt.Fprintf(os.Stderr, "data: %s\n", ds.Stats)
	}
	trainSet = limit(ds.Examples, r.Data.Limit)
	if len(trainSet) == 0 {
		return nil, nil, fmt.Errorf("%s: no training examples", r.Data.Path)
	}
	if r.Data.Packing {
		if ds.Format == data.FormatText {
			return nil, nil, fmt.Errorf("%s: %s is %s text, already cut into full windows of %s: packing applies to instruction data",
				r.setting("data", "packing", "--packing"), r.Data.Path, ds.Format, r.setting("data", "seq_len", "--seq-len"))
		}
		n := len(trainSet)
		if trainSet, err = data.Pack(trainSet, r.Data.MaxLen); err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(os.Stderr, "data: packed %d training examples into sequences of up to %d tokens: %d of them\n", n, r.Data.MaxLen, len(trainSet))
	}
	switch {
	case r.Data.EvalPath != "":
		o.EvalFraction, o.Split = 0, ""
		ev, err := data.Load(r.Data.EvalPath, r.Data.Format, tok, o)
		if err != nil {
			return nil, nil, err
		}
		evalSet = ev.Examples
	case r.Data.EvalFraction > 0:
		o.Split = "eval"
		ev, err := data.Load(r.Data.Path, r.Data.Format, tok, o)
		if err != nil {
			return nil, nil, err
		}
		evalSet = ev.Examples
	}
	return trainSet, limit(evalSet, r.Data.EvalLimit), nil
}

// loadTaskData reads a GLUE classification task: its train split to
// train on and its dev split to evaluate, each sequence BOS + text cut to
// --max-len tokens, with its class.
func loadTaskData(r *Recipe, tok tokenizer.Tokenizer) (trainSet, evalSet []data.Example, source string, err error) {
	dir := r.Data.DataDir
	if dir == "" {
		dir = eval.DefaultDataDir()
	}
	read := func(split string, n int) ([]data.Example, string, error) {
		seqs, labels, path, err := eval.ClassifyData(r.Data.Task, split, dir, tok, r.Data.MaxLen)
		if err != nil {
			return nil, "", err
		}
		exs := make([]data.Example, len(seqs))
		for i := range seqs {
			exs[i] = data.Example{IDs: seqs[i], Class: labels[i], Source: fmt.Sprintf("%s:%d", path, i+2)}
		}
		return limit(exs, n), path, nil
	}
	if trainSet, source, err = read("train", r.Data.Limit); err != nil {
		return nil, nil, "", err
	}
	if len(trainSet) == 0 {
		return nil, nil, "", fmt.Errorf("%s: no training examples", source)
	}
	if evalSet, _, err = read("dev", r.Data.EvalLimit); err != nil {
		return nil, nil, "", err
	}
	return trainSet, evalSet, source, nil
}

// addScoreHead gives the base the classification head a --task run
// trains, sized for the task's classes and seeded by the run's seed.
func addScoreHead(base *llama.Model, r *Recipe) error {
	n, err := eval.NumClasses(r.Data.Task)
	if err != nil {
		return err
	}
	return base.AddScoreHead(n, r.Train.Seed)
}

func limit(ex []data.Example, n int) []data.Example {
	if n > 0 && n < len(ex) {
		return ex[:n]
	}
	return ex
}
