package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/eval"
	"github.com/gopeft/gopeft/eval/modellm"
)

func newEvalCmd() *cobra.Command {
	var mf modelFlags
	var tasks, output, samples string
	var opt eval.Options
	cmd := &cobra.Command{
		Use:   "eval",
		Short: "Evaluate a model (with an optional adapter) on benchmark tasks",
		Long: "Tasks: " + strings.Join(eval.Tasks(), ", ") + `.
Zero- or k-shot log-likelihood scoring as lm-evaluation-harness does it; prints a markdown
table and, with --output, writes the results as JSON. A model with a classification head (a
SEQ_CLS adapter from train --task) is scored on GLUE tasks by the head's argmax instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			inputs := append(mf.inputs(), input{"--data", opt.Data})
			for _, o := range []struct{ flag, path string }{{"--output", output}, {"--samples", samples}} {
				if o.path == "" {
					continue
				}
				if err := checkFileOutput(o.flag, o.path, inputs); err != nil {
					return err
				}
			}
			if output != "" && output == samples {
				return fmt.Errorf("--output and --samples are the same file %s", output)
			}
			if opt.EvalFraction != 0 {
				if tasks != "perplexity" || opt.Data == "" {
					return fmt.Errorf("--eval-fraction takes --task perplexity and a plain-text --data")
				}
				if err := eval.CheckEvalFraction(opt.EvalFraction); err != nil {
					return fmt.Errorf("--eval-fraction: %w", err)
				}
			}
			m, tok, err := mf.loadWithTokenizer()
			if err != nil {
				return err
			}
			names := strings.Split(tasks, ",")
			if samples != "" {
				if len(names) > 1 {
					return fmt.Errorf("--samples takes one task at a time; got %d", len(names))
				}
				f, err := os.Create(samples)
				if err != nil {
					return err
				}
				defer f.Close()
				opt.Samples = f
			}
			opt.Progress = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			lm := &modellm.LM{Model: m}
			runs, err := mf.adapterRuns()
			if err != nil {
				return err
			}
			if len(runs) == 0 {
				runs = []adapterRun{{index: -1}}
			}
			var results []eval.Result
			for _, run := range runs {
				if run.index >= 0 {
					if err := mf.useAdapter(run.index, run.rank); err != nil {
						return err
					}
				}
				for _, task := range names {
					task = strings.TrimSpace(task)
					var r eval.Result
					if _, cls := eval.NumClasses(task); m.Score != nil && cls == nil {
						// A classifier (a SEQ_CLS adapter, or a fine-tuned
						// model with a score head) answers GLUE
						// classification tasks with its head.
						r, err = eval.EvaluateClassifier(ctx, lm, tok, task, opt)
					} else {
						r, err = eval.Evaluate(ctx, lm, tok, task, opt)
					}
					if err != nil {
						return err
					}
					if len(runs) > 1 { // name the adapter (and rank) in each row
						r.Task = fmt.Sprintf("%s [%s]", r.Task, run.label)
					}
					results = append(results, r)
				}
			}
			if err := eval.WriteMarkdown(cmd.OutOrStdout(), results); err != nil {
				return err
			}
			if output != "" {
				return eval.WriteJSONFile(output, results)
			}
			return nil
		},
	}
	mf.register(cmd)
	mf.registerAdapters(cmd, "PEFT adapter directory to apply")
	fl := cmd.Flags()
	fl.StringVar(&tasks, "task", "", "task name or comma-separated names")
	_ = cmd.MarkFlagRequired("task")
	fl.StringVar(&opt.DataDir, "data-dir", "", "folder the task files are found in (default ../shared/data when it exists)")
	fl.StringVar(&opt.Data, "data", "", "evaluation file to use instead of the task's default")
	fl.IntVar(&opt.Shots, "shots", 0, "few-shot examples before each item")
	fl.IntVar(&opt.Limit, "limit", 0, "evaluate only the first N items (0: all)")
	fl.Float64Var(&opt.EvalFraction, "eval-fraction", 0, "perplexity on a text --data: score only its last fraction, cut where train --eval-fraction cuts it (what that run held out)")
	fl.Uint64Var(&opt.Seed, "seed", 1234, "seed for few-shot sampling")
	fl.StringVar(&output, "output", "", "write results as JSON to this file")
	fl.StringVar(&samples, "samples", "", "write one JSON line per item to this file")
	return cmd
}
