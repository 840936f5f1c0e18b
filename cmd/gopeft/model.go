package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	_ "github.com/gopeft/gopeft/peft/lora" // registers LORA adapters
	"github.com/gopeft/gopeft/tokenizer"
)

func addModelCommands(root *cobra.Command) {
	root.AddCommand(newGenerateCmd(), newInspectCmd(), newConvertCmd(), newMergeCmd())
}

// modelFlags are the flags every command that loads a model shares.
type modelFlags struct {
	model, tokenizer, adapter string
	bf16                      bool
}

func (f *modelFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.model, "model", "", "checkpoint: llama2.c .bin, Hugging Face directory, .gguf, or preset:NAME (random weights)")
	cmd.Flags().StringVar(&f.tokenizer, "tokenizer", "", "tokenizer: llama2.c tokenizer.bin, tokenizer.json, or a GPT-2 directory (default: found beside the model)")
	cmd.Flags().BoolVar(&f.bf16, "bf16", false, "hold the frozen weight matrices in bfloat16")
	_ = cmd.MarkFlagRequired("model")
}

// registerAdapter adds --adapter for commands that can apply one.
func (f *modelFlags) registerAdapter(cmd *cobra.Command, usage string) {
	cmd.Flags().StringVar(&f.adapter, "adapter", "", usage)
}

// load reads the model and, with --adapter, attaches the adapter (active).
// A model path "preset:NAME" builds a preset shape with seeded random
// weights, for measuring speed without a checkpoint.
func (f *modelFlags) load() (*llama.Model, error) {
	var m *llama.Model
	var err error
	if name, ok := strings.CutPrefix(f.model, "preset:"); ok {
		m, err = llama.NewPreset(name, 1)
		if err == nil && f.bf16 {
			m.ToBF16()
		}
	} else {
		m, err = llama.Load(f.model, llama.LoadOptions{BF16: f.bf16})
	}
	if err != nil || f.adapter == "" {
		return m, err
	}
	pm := peft.Wrap(m)
	if _, err := pm.LoadAdapter(f.adapter, peft.DefaultAdapter); err != nil {
		return nil, err
	}
	return m, nil
}

// loadWithTokenizer loads the model and its tokenizer, refusing a
// tokenizer whose ids the model cannot embed.
func (f *modelFlags) loadWithTokenizer() (*llama.Model, tokenizer.Tokenizer, error) {
	m, err := f.load()
	if err != nil {
		return nil, nil, err
	}
	tok, err := f.loadTokenizer()
	if err != nil {
		return nil, nil, err
	}
	if err := checkVocab(tok, m); err != nil {
		return nil, nil, err
	}
	return m, tok, nil
}

// checkVocab refuses a tokenizer with more tokens than the model embeds.
func checkVocab(tok tokenizer.Tokenizer, m *llama.Model) error {
	if tok.VocabSize() > m.Config.VocabSize {
		return fmt.Errorf("the tokenizer has %d tokens but the model's vocabulary is %d: they do not belong together", tok.VocabSize(), m.Config.VocabSize)
	}
	return nil
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
			m, tok, err := mf.loadWithTokenizer()
			if err != nil {
				return err
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
	mf.registerAdapter(cmd, "PEFT adapter directory to apply")
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
		Short: "Show a model's configuration, parameter count and memory by dtype, or an adapter's",
		Long: `inspect --model PATH shows the model; inspect --adapter DIR shows a PEFT adapter's
config and tensors; with both, it also prints PEFT's trainable-parameter line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if mf.model == "" && mf.adapter == "" {
				return fmt.Errorf("give --model, --adapter or both")
			}
			if mf.adapter != "" {
				if err := writeAdapterInspect(out, mf.adapter); err != nil {
					return err
				}
			}
			if mf.model == "" {
				return nil
			}
			m, err := llama.Load(mf.model, llama.LoadOptions{BF16: mf.bf16})
			if err != nil {
				return err
			}
			if mf.adapter == "" {
				return writeInspect(out, mf.model, m)
			}
			pm := peft.Wrap(m)
			if _, err := pm.LoadAdapter(mf.adapter, peft.DefaultAdapter); err != nil {
				return err
			}
			fmt.Fprintln(out, pm.ParamLine())
			return nil
		},
	}
	cmd.Flags().StringVar(&mf.model, "model", "", "checkpoint: llama2.c .bin, Hugging Face directory, or .gguf")
	cmd.Flags().BoolVar(&mf.bf16, "bf16", false, "hold the frozen weight matrices in bfloat16")
	mf.registerAdapter(cmd, "PEFT adapter directory")
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

func newMergeCmd() *cobra.Command {
	var mf modelFlags
	var output string
	cmd := &cobra.Command{
		Use:   "merge",
		Short: "Merge an adapter into its base model and write a Hugging Face directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			base, err := llama.Load(mf.model, llama.LoadOptions{BF16: mf.bf16})
			if err != nil {
				return err
			}
			pm := peft.Wrap(base)
			if _, err := pm.LoadAdapter(mf.adapter, peft.DefaultAdapter); err != nil {
				return err
			}
			merged, err := pm.MergeAndUnload()
			if err != nil {
				return err
			}
			if err := llama.SaveHF(merged, output); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "merged %s into %s: wrote %s\n", mf.adapter, mf.model, output)
			return nil
		},
	}
	mf.register(cmd)
	mf.registerAdapter(cmd, "PEFT adapter directory to merge")
	_ = cmd.MarkFlagRequired("adapter")
	cmd.Flags().StringVar(&output, "output", "", "output directory")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
