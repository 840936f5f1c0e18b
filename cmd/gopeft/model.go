package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	_ "github.com/gopeft/gopeft/peft/lora" // registers LORA adapters
	"github.com/gopeft/gopeft/tokenizer"
)

func addModelCommands(root *cobra.Command) {
	root.AddCommand(newGenerateCmd(), newChatCmd(), newInspectCmd(), newConvertCmd(), newMergeCmd())
}

// modelFlags are the flags every command that loads a model shares.
type modelFlags struct {
	model, tokenizer, adapter string
	bf16                      bool
	allowNonFinite            bool
	// adapters is --adapter of the commands that take several (eval,
	// generate); rankAt is --rank-at.
	adapters []string
	rankAt   string

	// After load with adapters: the PEFT model and its adapters' names, in
	// the order given.
	pm    *peft.Model
	names []string
	q     quantFlags
}

// loadOptions are the storage flags as llama.LoadOptions.
func (f *modelFlags) loadOptions() (llama.LoadOptions, error) { return f.q.options(f.bf16) }

func (f *modelFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.model, "model", "", "checkpoint: llama2.c .bin, Hugging Face directory, .gguf, or preset:NAME (random weights)")
	cmd.Flags().StringVar(&f.tokenizer, "tokenizer", "", "tokenizer: llama2.c tokenizer.bin, tokenizer.json, or a GPT-2 directory (default: found beside the model)")
	cmd.Flags().BoolVar(&f.bf16, "bf16", false, "hold the frozen weight matrices in bfloat16")
	f.q.register(cmd.Flags())
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

// registerAdapters adds --adapter for commands that can run several
// adapters over one base (repeated, or a comma list), and --rank-at.
func (f *modelFlags) registerAdapters(cmd *cobra.Command, usage string) {
	cmd.Flags().StringSliceVar(&f.adapters, "adapter", nil, usage+"; several (repeated or comma-separated) run one after another over the same base")
	f.registerRankAt(cmd, true)
}

// registerRankAt adds --rank-at, for adapters that run at any of several
// ranks (DyLoRA); with sweep, "all" runs every rank.
func (f *modelFlags) registerRankAt(cmd *cobra.Command, sweep bool) {
	usage := "run the adapter at this rank (DyLoRA: any rank up to r_max)"
	if sweep {
		usage += `; "all" runs it at every rank in turn`
	}
	cmd.Flags().StringVar(&f.rankAt, "rank-at", "", usage)
}

// adapterDirs lists the adapters the command applies.
func (f *modelFlags) adapterDirs() []string {
	if len(f.adapters) > 0 {
		return f.adapters
	}
	if f.adapter != "" {
		return []string{f.adapter}
	}
	return nil
}

// ranks resolves --rank-at for one loaded adapter: nil when not given
// (the adapter's own rank), the one rank, or every rank for "all".
func (f *modelFlags) ranks(a *peft.Adapter, dir string) ([]int, error) {
	if f.rankAt == "" {
		return nil, nil
	}
	rs, ok := a.Method.(peft.RankSelector)
	if !ok {
		return nil, fmt.Errorf("--rank-at %s: %s is a %s adapter, which has one rank", f.rankAt, dir, a.Method.Config().Base().PeftType)
	}
	lo, hi := rs.Ranks()
	if f.rankAt == "all" {
		var out []int
		for b := lo; b <= hi; b++ {
			out = append(out, b)
		}
		return out, nil
	}
	b, err := strconv.Atoi(f.rankAt)
	if err != nil || b < lo || b > hi {
		return nil, fmt.Errorf("--rank-at %q: %s runs at ranks %d to %d", f.rankAt, dir, lo, hi)
	}
	return []int{b}, nil
}

// adapterRun is one adapter at one rank of a command that runs several.
type adapterRun struct {
	index, rank int    // rank 0: the adapter's own
	label       string // the adapter's directory, and the rank
}

// adapterRuns lists every loaded adapter at every rank --rank-at asks for
// (none without adapters).
func (f *modelFlags) adapterRuns() ([]adapterRun, error) {
	var runs []adapterRun
	for i, dir := range f.adapterDirs() {
		a, _ := f.pm.Adapter(f.names[i])
		ranks, err := f.ranks(a, dir)
		if err != nil {
			return nil, err
		}
		if ranks == nil {
			runs = append(runs, adapterRun{index: i, label: dir})
		}
		for _, b := range ranks {
			runs = append(runs, adapterRun{index: i, rank: b, label: fmt.Sprintf("%s at rank %d", dir, b)})
		}
	}
	return runs, nil
}

// useAdapter makes the i-th loaded adapter active at rank b (0: its own).
func (f *modelFlags) useAdapter(i, b int) error {
	if err := f.pm.SetAdapter(f.names[i]); err != nil {
		return err
	}
	if b > 0 {
		a, _ := f.pm.Adapter(f.names[i])
		return a.Method.(peft.RankSelector).SetRank(b)
	}
	return nil
}

// load reads the model and, with --adapter, attaches the adapter (active).
// A model path "preset:NAME" builds a preset shape with seeded random
// weights, for measuring speed without a checkpoint.
func (f *modelFlags) load() (*llama.Model, error) {
	opt, err := f.loadOptions()
	if err != nil {
		return nil, err
	}
	var m *llama.Model
	if name, ok := strings.CutPrefix(f.model, "preset:"); ok {
		m, err = llama.NewPresetWith(name, 1, opt)
	} else {
		m, err = loadModel(f.model, opt, f.allowNonFinite)
	}
	dirs := f.adapterDirs()
	if err != nil || len(dirs) == 0 {
		if err == nil && f.rankAt != "" {
			return nil, fmt.Errorf("--rank-at %s needs an --adapter", f.rankAt)
		}
		return m, err
	}
	f.pm = peft.Wrap(m)
	f.names = nil
	for i, dir := range dirs {
		name := peft.DefaultAdapter
		if i > 0 {
			name = fmt.Sprintf("adapter%d", i+1)
		}
		a, err := loadAdapterAs(f.pm, dir, name, f.allowNonFinite)
		if err != nil {
			return nil, err
		}
		if _, err := f.ranks(a, dir); err != nil {
			return nil, err
		}
		f.names = append(f.names, name)
	}
	return m, f.useAdapter(0, 0)
}

// inputs lists the files and directories the command reads, by flag.
func (f *modelFlags) inputs() []input {
	in := []input{{"--model", f.model}, {"--tokenizer", f.tokenizerPath()}}
	for _, d := range f.adapterDirs() {
		in = append(in, input{"--adapter", d})
	}
	return in
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
	if f.tokenizer == "" && isGGUF(f.model) {
		// A GGUF model carries its vocabulary; a file beside it is the
		// fallback for vocabularies FromGGUF does not read.
		tok, gerr := ggufTokenizer(f.model)
		if gerr == nil {
			return tok, nil
		}
		p, err := f.findTokenizer()
		if err != nil {
			return nil, gerr
		}
		return tokenizer.Load(p)
	}
	p, err := f.findTokenizer()
	if err != nil {
		return nil, err
	}
	if isGGUF(p) {
		return ggufTokenizer(p)
	}
	return tokenizer.Load(p)
}

// ggufTokenizer is the vocabulary in a GGUF file's metadata.
func ggufTokenizer(path string) (tokenizer.Tokenizer, error) {
	meta, err := format.ReadGGUFMetadata(path)
	if err != nil {
		return nil, err
	}
	return tokenizer.FromGGUF(meta, path)
}

// isGGUF reports whether path names a GGUF file (by its extension, as the
// model loader tells the formats apart).
func isGGUF(path string) bool { return strings.EqualFold(filepath.Ext(path), ".gguf") }

// tokenizerPath is the tokenizer the command would read ("" when none is
// found).
func (f *modelFlags) tokenizerPath() string {
	p, _ := f.findTokenizer()
	return p
}

// findTokenizer is --tokenizer, or the first of tokenizer.json,
// tokenizer.bin and tok*.bin beside the model (a GGUF model's own
// vocabulary comes first: see loadTokenizer).
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
			gen := func() error {
				prev := ids[len(ids)-1]
				_, err := m.Generate(ctx, ids, opt, func(id int) bool {
					fmt.Fprint(w, tok.DecodeToken(prev, id))
					w.Flush()
					prev = id
					return true
				})
				fmt.Fprintln(w)
				return err
			}
			runs, err := mf.adapterRuns()
			if err != nil {
				return err
			}
			if len(runs) == 0 {
				return gen()
			}
			for _, r := range runs {
				if err := mf.useAdapter(r.index, r.rank); err != nil {
					return err
				}
				if len(runs) > 1 { // label each continuation
					fmt.Fprintf(w, "== %s ==\n", r.label)
				}
				if err := gen(); err != nil {
					return err
				}
			}
			return nil
		},
	}
	mf.register(cmd)
	mf.registerAdapters(cmd, "PEFT adapter directory to apply")
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
			opt, err := mf.loadOptions()
			if err != nil {
				return err
			}
			m, err := loadModel(mf.model, opt, mf.allowNonFinite)
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
	mf.q.register(cmd.Flags())
	mf.registerNonFinite(cmd)
	mf.registerAdapter(cmd, "PEFT adapter directory")
	return cmd
}

func newConvertCmd() *cobra.Command {
	var mf modelFlags
	var output, to, ggufType string
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "convert",
		Short: "Write a model as a Hugging Face directory or a llama.cpp GGUF file, or an adapter as a GGUF LoRA",
		Long: `convert writes the model as a Hugging Face directory. With --quant nf4|fp4|int8
(and --double-quant) the decoder's Linear weights are written quantized in
bitsandbytes' layout with config.json's quantization_config, as transformers
saves a model loaded with load_in_4bit/load_in_8bit; a bitsandbytes
checkpoint is written back in its own quantization.

With --to gguf it writes one GGUF file that llama.cpp runs (llama-cli -m):
--gguf-type f32|f16|bf16|q8_0|q4_0 (default f16, as convert_hf_to_gguf.py);
norms stay f32, Q8_0/Q4_0 are ggml's reference quantizers bit for bit, rows
that are not whole blocks of 32 fall back to f16, and with q4_0 the output
(or tied embedding) is Q8_0. The tokenizer (a llama2.c tokenizer.bin) goes
into the file's metadata.

With --to gguf and --adapter DIR it writes the LoRA adapter alone as a GGUF
LoRA file for llama.cpp's --lora (--gguf-type f32|f16|bf16|q8_0, default
f32, as convert_lora_to_gguf.py); --model is the base it was trained on.
An existing output file is replaced only with --overwrite.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch to {
			case "hf":
				if cmd.Flags().Changed("gguf-type") || mf.adapter != "" || overwrite {
					return fmt.Errorf("--gguf-type, --adapter and --overwrite go with --to gguf")
				}
			case "gguf":
				return runConvertGGUF(cmd, &mf, output, ggufType, overwrite)
			default:
				return fmt.Errorf("--to %q: want hf or gguf", to)
			}
			if err := checkDirOutput("--output", output, mf.inputs()); err != nil {
				return err
			}
			opt, err := mf.loadOptions()
			if err != nil {
				return err
			}
			// Load at full precision and quantize while writing, after
			// llama.2c's q/k rows are put in Hugging Face's order.
			plain := mf
			plain.q = quantFlags{}
			m, err := plain.load()
			if err != nil {
				return err
			}
			save := llama.SaveOptions{Quant: opt.Quant, DoubleQuant: opt.DoubleQuant}
			if err := writeModelDir("--output", output, func(dir string) error { return llama.SaveHFWith(m, dir, save) }); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", output)
			return nil
		},
	}
	mf.register(cmd)
	mf.registerAdapter(cmd, "with --to gguf: write this LoRA adapter (trained on --model) as a GGUF LoRA file instead of the model")
	cmd.Flags().StringVar(&output, "output", "", "output directory (--to hf) or file (--to gguf)")
	cmd.Flags().StringVar(&to, "to", "hf", "output format: hf (Hugging Face directory) or gguf (llama.cpp)")
	cmd.Flags().StringVar(&ggufType, "gguf-type", "", "with --to gguf: f32, f16, bf16, q8_0 or q4_0 (default f16; f32 for an --adapter)")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "with --to gguf: replace an existing output file")
	_ = cmd.MarkFlagRequired("output")
	return cmd
}

func newMergeCmd() *cobra.Command {
	var mf modelFlags
	var output string
	var co combineFlags
	var requant bool
	cmd := &cobra.Command{
		Use:   "merge",
		Short: "Merge an adapter into its base model, or combine adapters into a new one (--adapters)",
		Long: `merge --model M --adapter A --output DIR folds the adapter into the base and writes a
Hugging Face model directory. A quantized base (a bitsandbytes checkpoint, or --quant) is
dequantized to float32, the adapter added there, and the merged Linear weights written in
bf16; with --requantize they are quantized again to the base's quantization (bitsandbytes'
layout), and the rounding error that adds is reported.

merge --adapters a:0.5,b:0.5 --combination TYPE --output DIR combines LoRA adapters into a new
adapter (PEFT's add_weighted_adapter with the intended maths): linear and cat give exactly
Σ wᵢ·sᵢ·BᵢAᵢ, svd types combine the dense changes and keep the top --svd-rank, ties, dare_*
and magnitude_prune combine the factors (equal ranks) pruned to --density. The new adapter's
scale is 1. --model, when given, checks that the result loads onto that base.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("adapters") {
				if mf.adapter != "" {
					return fmt.Errorf("give --adapter (merge into the base) or --adapters (combine adapters), not both")
				}
				return co.run(cmd, &mf, output)
			}
			for _, req := range []struct{ flag, v string }{{"--model", mf.model}, {"--adapter", mf.adapter}} {
				if req.v == "" {
					return fmt.Errorf("merge needs %s (or --adapters to combine adapters)", req.flag)
				}
			}
			if err := checkDirOutput("--output", output, mf.inputs()); err != nil {
				return err
			}
			opt, err := mf.loadOptions()
			if err != nil {
				return err
			}
			base, err := loadModel(mf.model, opt, mf.allowNonFinite)
			if err != nil {
				return err
			}
			plan, err := dequantizeForMerge(cmd.OutOrStdout(), base, requant)
			if err != nil {
				return err
			}
			pm := peft.Wrap(base)
			a, err := loadAdapter(pm, mf.adapter, mf.allowNonFinite)
			if err != nil {
				return err
			}
			ranks, err := mf.ranks(a, mf.adapter)
			if err != nil {
				return err
			}
			if len(ranks) == 1 {
				if err := a.Method.(peft.RankSelector).SetRank(ranks[0]); err != nil {
					return err
				}
			}
			merged, err := pm.MergeAndUnload()
			if err != nil {
				return err
			}
			// Finite inputs can still overflow when folded together.
			if err := merged.CheckFinite(); err != nil && !mf.allowNonFinite {
				return fmt.Errorf("merging %s into %s: %w; nothing was written", mf.adapter, mf.model, err)
			}
			if err := plan.finish(cmd.OutOrStdout(), merged); err != nil {
				return err
			}
			if err := writeModelDir("--output", output, func(dir string) error { return llama.SaveHF(merged, dir) }); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "merged %s into %s: wrote %s\n", mf.adapter, mf.model, output)
			return nil
		},
	}
	mf.register(cmd)
	delete(cmd.Flags().Lookup("model").Annotations, cobra.BashCompOneRequiredFlag) // required unless --adapters
	mf.registerAdapter(cmd, "PEFT adapter directory to merge")
	mf.registerRankAt(cmd, false)
	co.register(cmd)
	cmd.Flags().StringVar(&output, "output", "", "output directory")
	cmd.Flags().BoolVar(&requant, "requantize", false, "with a quantized base: quantize the merged weights again (reporting the rounding error) instead of writing them in bf16")
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
