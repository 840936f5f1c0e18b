package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/tokenizer"
)

func addModelCommands(root *cobra.Command) {
	root.AddCommand(newGenerateCmd(), newInspectCmd(), newConvertCmd())
}

// modelFlags are the flags every command that loads a model shares.
type modelFlags struct {
	model, tokenizer string
	bf16             bool
}

func (f *modelFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.model, "model", "", "checkpoint: llama2.c .bin, Hugging Face directory, or .gguf")
	cmd.Flags().StringVar(&f.tokenizer, "tokenizer", "", "tokenizer: llama2.c tokenizer.bin, tokenizer.json, or a GPT-2 directory (default: found beside the model)")
	cmd.Flags().BoolVar(&f.bf16, "bf16", false, "hold the frozen weight matrices in bfloat16")
	_ = cmd.MarkFlagRequired("model")
}

func (f *modelFlags) load() (*llama.Model, error) {
	return llama.Load(f.model, llama.LoadOptions{BF16: f.bf16})
}

// loadTokenizer opens --tokenizer, or looks beside the model for
// tokenizer.json, tokenizer.bin or a tok*.bin.
func (f *modelFlags) loadTokenizer() (tokenizer.Tokenizer, error) {
	if f.tokenizer != "" {
		return tokenizer.Load(f.tokenizer)
	}
	dir := f.model
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		dir = filepath.Dir(dir)
	}
	candidates := []string{filepath.Join(dir, "tokenizer.json"), filepath.Join(dir, "tokenizer.bin")}
	if m, _ := filepath.Glob(filepath.Join(dir, "tok*.bin")); len(m) > 0 {
		candidates = append(candidates, m...)
	}
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return tokenizer.Load(c)
		}
	}
	return nil, fmt.Errorf("no tokenizer found beside %s (looked for %v); pass --tokenizer", f.model, candidates)
}

func newGenerateCmd() *cobra.Command {
	var mf modelFlags
	var prompt string
	var opt llama.GenerateOptions
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Continue a prompt with a model, printing only the continuation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := mf.load()
			if err != nil {
				return err
			}
			tok, err := mf.loadTokenizer()
			if err != nil {
				return err
			}
			if tok.VocabSize() > m.Config.VocabSize {
				return fmt.Errorf("tokenizer has %d tokens but the model's vocabulary is %d", tok.VocabSize(), m.Config.VocabSize)
			}
			// As llama2.c's runner: BOS, then the prompt encoded with its
			// dummy prefix space.
			ids := append([]int{m.Config.BOSTokenID}, tok.Encode(prompt)...)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			w := bufio.NewWriter(cmd.OutOrStdout())
			defer w.Flush()
			prev := ids[len(ids)-1]
			_, err = m.Generate(ctx, ids, opt, func(id int) bool {
				fmt.Fprint(w, tok.DecodeToken(prev, id))
				w.Flush()
				prev = id
				return true
			})
			fmt.Fprintln(w)
			return err
		},
	}
	mf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&prompt, "prompt", "", "text to continue (default: start from BOS alone)")
	fl.IntVarP(&opt.MaxNewTokens, "max-new-tokens", "n", 256, "most tokens to generate")
	fl.Float64Var(&opt.Temperature, "temperature", 1.0, "sampling temperature; 0 is greedy")
	fl.IntVar(&opt.TopK, "top-k", 0, "sample among the K most likely tokens (0: all)")
	fl.Float64Var(&opt.TopP, "top-p", 0.9, "sample from the smallest set reaching probability P (1: all)")
	fl.Uint64Var(&opt.Seed, "seed", 42, "random seed for sampling")
	return cmd
}

func newInspectCmd() *cobra.Command {
	var mf modelFlags
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Show a model's configuration, parameter count and memory by dtype",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := mf.load()
			if err != nil {
				return err
			}
			return writeInspect(cmd.OutOrStdout(), mf.model, m)
		},
	}
	mf.register(cmd)
	return cmd
}

func newConvertCmd() *cobra.Command {
	var mf modelFlags
	var output string
	cmd := &cobra.Command{
		Use:   "convert",
		Short: "Write any loadable model as a Hugging Face directory (config.json + model.safetensors)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := mf.load()
			if err != nil {
				return err
			}
			if err := llama.SaveHF(m, output); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", output)
			return nil
		},
	}
	mf.register(cmd)
	cmd.Flags().StringVar(&output, "output", "", "output directory")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}
