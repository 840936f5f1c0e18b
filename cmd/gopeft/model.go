package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
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
	allowNonFinite            bool
}

func (f *modelFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.model, "model", "", "checkpoint: llama2.c .bin, Hugging Face directory, .gguf, or preset:NAME (random weights)")
	cmd.Flags().StringVar(&f.tokenizer, "tokenizer", "", "tokenizer: llama2.c tokenizer.bin, tokenizer.json, or a GPT-2 directory (default: found beside the model)")
	cmd.Flags().BoolVar(&f.bf16, "bf16", false, "hold the frozen weight matrices in bfloat16")
	f.registerNonFinite(cmd)
	_ = cmd.MarkFlagRequired("model")
}

// registerNonFinite adds --allow-nonfinite.
func (f *modelFlags) registerNonFinite(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.allowNonFinite, "allow-nonfinite", false, "load weights holding NaN or infinite values (skip the check)")
}

// loadModel reads a checkpoint and, unless allowed, refuses one holding a
// NaN or an infinity: it would generate garbage with exit code 0.
func loadModel(path string, opt llama.LoadOptions, allowNonFinite bool) (*llama.Model, error) {
	m, err := llama.Load(path, opt)
	if err != nil || allowNonFinite {
		return m, err
	}
	if err := m.CheckFinite(); err != nil {
		return nil, fmt.Errorf("%s: %w; pass --allow-nonfinite to load it anyway", path, err)
	}
	return m, nil
}

// loadAdapter attaches the adapter in dir to pm and, unless allowed,
// refuses one holding a NaN or an infinity. Config keys gopeft does not use
// (a newer PEFT's) are kept, and named on stderr.
func loadAdapter(pm *peft.Model, dir string, allowNonFinite bool) (*peft.Adapter, error) {
	return loadAdapterAs(pm, dir, peft.DefaultAdapter, allowNonFinite)
}

// loadAdapterAs is loadAdapter under another name; a refused adapter is
// detached again.
func loadAdapterAs(pm *peft.Model, dir, name string, allowNonFinite bool) (*peft.Adapter, error) {
	a, err := pm.LoadAdapter(dir, name)
	if err != nil {
		return a, err
	}
	if extra := a.Method.Config().Base().ExtraKeys(); len(extra) > 0 {
		fmt.Fprintf(os.Stderr, "gopeft: %s: keys not used by gopeft's %s (kept as they are): %s\n",
			filepath.Join(dir, peft.ConfigFile), a.Method.Config().Base().PeftType, strings.Join(extra, ", "))
	}
	if allowNonFinite {
		return a, nil
	}
	for _, p := range a.Params {
		if i := llama.FirstNonFinite(p.Var.Value); i >= 0 {
			_ = pm.DeleteAdapter(name)
			return nil, fmt.Errorf("%s: %w: %s holds a NaN or infinite value at index %d; pass --allow-nonfinite to load it anyway",
				dir, llama.ErrNonFinite, p.Name, i)
		}
	}
	return a, nil
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
		m, err = loadModel(f.model, llama.LoadOptions{BF16: f.bf16}, f.allowNonFinite)
	}
	if err != nil || f.adapter == "" {
		return m, err
	}
	pm := peft.Wrap(m)
	if _, err := loadAdapter(pm, f.adapter, f.allowNonFinite); err != nil {
		return nil, err
	}
	return m, nil
}

// inputs lists the files and directories the command reads, by flag.
func (f *modelFlags) inputs() []input {
	return []input{{"--model", f.model}, {"--adapter", f.adapter}, {"--tokenizer", f.tokenizerPath()}}
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

// checkVocab refuses a tokenizer whose vocabulary differs in size from the
// model's: with more tokens it produces ids the model cannot embed, with
// fewer (a tokenizer cut short, or one for a smaller model) the model's
// ids decode to the wrong text or to nothing.
func checkVocab(tok tokenizer.Tokenizer, m *llama.Model) error {
	if tok.VocabSize() != m.Config.VocabSize {
		return fmt.Errorf("the tokenizer has %d tokens but the model's vocabulary is %d: they do not belong together", tok.VocabSize(), m.Config.VocabSize)
	}
	return nil
}

// loadTokenizer opens --tokenizer, or looks beside the model for
// tokenizer.json, tokenizer.bin or a tok*.bin.
func (f *modelFlags) loadTokenizer() (tokenizer.Tokenizer, error) {
	p, err := f.findTokenizer()
	if err != nil {
		return nil, err
	}
	return tokenizer.Load(p)
}

// tokenizerPath is the tokenizer the command would read ("" when none is
// found).
func (f *modelFlags) tokenizerPath() string {
	p, _ := f.findTokenizer()
	return p
}

// findTokenizer is --tokenizer, or the first of tokenizer.json,
// tokenizer.bin and tok*.bin beside the model.
func (f *modelFlags) findTokenizer() (string, error) {
	if f.tokenizer != "" {
		return f.tokenizer, nil
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
			return c, nil
		}
	}
	return "", fmt.Errorf("no tokenizer found beside %s (looked for %v); pass --tokenizer", f.model, candidates)
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
			if err := checkSampling(cmd, opt); err != nil {
				return err
			}
			m, tok, err := mf.loadWithTokenizer()
			if err != nil {
				return err
			}
			// As llama2.c's runner: BOS, then the prompt encoded with its
			// dummy prefix space.
			ids := append([]int{m.Config.BOSTokenID}, tok.Encode(prompt)...)
			virtual, err := m.Prepended(nil)
			if err != nil {
				return err
			}
			if opt.MaxNewTokens, err = clampToContext(cmd.ErrOrStderr(), len(ids), virtual, opt.MaxNewTokens, m.Config.MaxPositionEmbeddings); err != nil {
				return err
			}
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
			m, err := loadModel(mf.model, llama.LoadOptions{BF16: mf.bf16}, mf.allowNonFinite)
			if err != nil {
				return err
			}
			if mf.adapter == "" {
				return writeInspect(out, mf.model, m)
			}
			pm := peft.Wrap(m)
			if _, err := loadAdapter(pm, mf.adapter, mf.allowNonFinite); err != nil {
				return err
			}
			fmt.Fprintln(out, pm.ParamLine())
			return nil
		},
	}
	cmd.Flags().StringVar(&mf.model, "model", "", "checkpoint: llama2.c .bin, Hugging Face directory, or .gguf")
	cmd.Flags().BoolVar(&mf.bf16, "bf16", false, "hold the frozen weight matrices in bfloat16")
	mf.registerNonFinite(cmd)
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
			if err := checkDirOutput("--output", output, mf.inputs()); err != nil {
				return err
			}
			m, err := mf.load()
			if err != nil {
				return err
			}
			if err := writeModelDir("--output", output, func(dir string) error { return llama.SaveHF(m, dir) }); err != nil {
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
			if err := checkDirOutput("--output", output, mf.inputs()); err != nil {
				return err
			}
			base, err := loadModel(mf.model, llama.LoadOptions{BF16: mf.bf16}, mf.allowNonFinite)
			if err != nil {
				return err
			}
			pm := peft.Wrap(base)
			if _, err := loadAdapter(pm, mf.adapter, mf.allowNonFinite); err != nil {
				return err
			}
			merged, err := pm.MergeAndUnload()
			if err != nil {
				return err
			}
			// Finite inputs can still overflow when folded together.
			if err := merged.CheckFinite(); err != nil && !mf.allowNonFinite {
				return fmt.Errorf("merging %s into %s: %w; nothing was written", mf.adapter, mf.model, err)
			}
			if err := writeModelDir("--output", output, func(dir string) error { return llama.SaveHF(merged, dir) }); err != nil {
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

// checkSampling refuses generation settings that would mean something
// other than they say, naming the flag; an explicit --top-p 0 is refused
// too (the library reads a zero top-p as 1).
func checkSampling(cmd *cobra.Command, opt llama.GenerateOptions) error {
	if cmd.Flags().Changed("top-p") && opt.TopP == 0 {
		return fmt.Errorf("--top-p 0: must be in (0, 1] (1: no nucleus cut)")
	}
	if opt.MaxNewTokens < 0 {
		return fmt.Errorf("--max-new-tokens (-n) %d: must be ≥ 0", opt.MaxNewTokens)
	}
	if err := opt.Sampling.Validate(); err != nil {
		return fmt.Errorf("--%w", err)
	}
	return nil
}

// clampToContext bounds the number of new tokens by what the model's
// context leaves after the prompt and the adapter's virtual tokens or
// prefix (virtual positions), saying so when it cuts: the KV cache is
// sized for the whole sequence, so -n 1000000000 would otherwise allocate
// until memory runs out.
func clampToContext(w io.Writer, promptLen, virtual, n, context int) (int, error) {
	room := context - promptLen - virtual
	also := ""
	if virtual > 0 {
		also = fmt.Sprintf(" and the adapter's virtual tokens or prefix %d", virtual)
	}
	if room <= 0 {
		return 0, fmt.Errorf("the prompt is %d tokens%s, the model's context only %d (max_position_embeddings): shorten the prompt", promptLen, also, context)
	}
	if n > room {
		fmt.Fprintf(w, "gopeft: generating at most %d tokens, not %d: the model's context is %d tokens and the prompt takes %d%s\n", room, n, context, promptLen, also)
		return room, nil
	}
	return n, nil
}
