package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
)

// combineFlags are merge's flags for adapter arithmetic.
type combineFlags struct {
	adapters string
	opt      peft.CombineOptions
}

func (c *combineFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&c.adapters, "adapters", "", "adapters to combine with their weights: DIR:W,DIR:W,... (a weight may be negative; default 1)")
	fl.StringVar(&c.opt.Combination, "combination", "", "linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd, magnitude_prune, magnitude_prune_svd")
	fl.Float64Var(&c.opt.Density, "density", 1, "fraction of values the pruning combinations keep (≥ 1: none pruned)")
	fl.StringVar(&c.opt.MajoritySign, "majority-sign", "total", "ties and dare_ties: elect signs by total or frequency")
	fl.IntVar(&c.opt.SVDRank, "svd-rank", 0, "rank of the svd combinations' result (0: the largest input rank)")
	fl.Float64Var(&c.opt.SVDClamp, "svd-clamp", 0, "svd combinations: clamp the factors to this quantile of their values (0: no clamp)")
	fl.Uint64Var(&c.opt.Seed, "seed", 0, "seed of DARE's random drops")
}

// parseWeighted splits "DIR:W,DIR:W" (the weight after the last colon).
func parseWeighted(spec string) ([]peft.WeightedAdapter, error) {
	var out []peft.WeightedAdapter
	for _, part := range splitList(spec) {
		dir, w := part, 1.0
		if i := strings.LastIndex(part, ":"); i >= 0 {
			x, err := strconv.ParseFloat(part[i+1:], 64)
			if err != nil {
				return nil, fmt.Errorf("--adapters %q: the weight after %q is not a number", part, part[:i])
			}
			dir, w = part[:i], x
		}
		out = append(out, peft.WeightedAdapter{Dir: dir, Weight: w})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--adapters names no adapter")
	}
	return out, nil
}

// run combines the adapters into a new one in output.
func (c *combineFlags) run(cmd *cobra.Command, mf *modelFlags, output string) error {
	if output == "" {
		return fmt.Errorf("--output: give the directory the combined adapter is written to")
	}
	if c.opt.Combination == "" {
		return fmt.Errorf("--combination: give one of linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd, magnitude_prune, magnitude_prune_svd")
	}
	ins, err := parseWeighted(c.adapters)
	if err != nil {
		return err
	}
	inputs := []input{{"--model", mf.model}}
	for _, in := range ins {
		inputs = append(inputs, input{"--adapters", in.Dir})
	}
	if err := checkDirOutput("--output", output, inputs); err != nil {
		return err
	}
	if entries, err := os.ReadDir(output); err == nil {
		for _, e := range entries {
			if n := e.Name(); n != peft.ConfigFile && n != peft.WeightsFile {
				return fmt.Errorf("--output %s holds %s, which is not an adapter file: give a new or empty directory", output, n)
			}
		}
	}
	for i := range ins {
		if ins[i].Method, ins[i].Tensors, err = peft.ReadAdapter(ins[i].Dir); err != nil {
			return err
		}
	}
	cfg, ps, err := peft.CombineAdapters(ins, c.opt)
	if err != nil {
		return err
	}
	if mf.model != "" { // the result must load onto the base named
		base, err := loadModel(mf.model, llama.LoadOptions{BF16: mf.bf16}, mf.allowNonFinite)
		if err != nil {
			return err
		}
		tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(output)), ".combine-check-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if err := peft.WriteAdapter(tmp, cfg, ps); err != nil {
			return err
		}
		if _, err := peft.Wrap(base).LoadAdapter(tmp, peft.DefaultAdapter); err != nil {
			return fmt.Errorf("the combined adapter does not fit --model %s: %w", mf.model, err)
		}
	}
	if err := peft.WriteAdapter(output, cfg, ps); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "combined %d adapters (%s): wrote %s\n", len(ins), c.opt.Combination, output)
	return nil
}
