package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/train"
)

type trainBench struct {
	Preset       string         `json:"preset"`
	Method       string         `json:"method"`
	Peft         map[string]any `json:"peft,omitempty"` // the method's config keys as trained
	Batch        int            `json:"batch"`
	Seq          int            `json:"seq"`
	Steps        int            `json:"steps"`
	Optimizer    string         `json:"optimizer"`
	BF16         bool           `json:"bf16"`
	Quant        string         `json:"quant,omitempty"`
	Checkpoint   bool           `json:"gradient_checkpointing,omitempty"`
	CkptBlocks   int            `json:"checkpoint_blocks,omitempty"`
	Trainable    int            `json:"trainable_params"`
	TokensPerSec float64        `json:"tokens_per_s"`
	StepSeconds  float64        `json:"step_seconds"`
	// CPUStepSeconds is the process's CPU time (user + system, all
	// threads) a step: steadier than StepSeconds on shared cores.
	CPUStepSeconds float64 `json:"cpu_step_seconds"`
	PeakRSSBytes   int64   `json:"peak_rss_bytes"`
}

// maxBenchTokens bounds a bench train step (batch × seq): the activations
// of 64k tokens of tinyllama-1.1B already take tens of GB.
const maxBenchTokens = 1 << 16

// newBenchTrainCmd measures training steps (forward, backward, optimizer)
// on a preset with random weights and random tokens.
func newBenchTrainCmd() *cobra.Command {
	var b trainBench
	var asJSON, fp32 bool
	var cpuProfile string
	var mf *methodFlags
	var qf quantFlags
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Training tokens/s and peak memory of a preset with a method",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := llama.PresetConfig(b.Preset)
			if err != nil {
				return err
			}
			switch {
			case b.Batch < 1 || b.Steps < 1:
				return fmt.Errorf("bench train: --batch and --steps must be at least 1 (got %d, %d)", b.Batch, b.Steps)
			case b.Seq < 1 || b.Seq > cfg.MaxPositionEmbeddings:
				return fmt.Errorf("bench train: --seq %d: must be in [1, %d], %s's context", b.Seq, cfg.MaxPositionEmbeddings, b.Preset)
			case b.Optimizer != "adamw" && b.Optimizer != "adamw_8bit":
				return fmt.Errorf("bench train: --optimizer %q: want adamw or adamw_8bit", b.Optimizer)
			case b.Batch*b.Seq > maxBenchTokens:
				return fmt.Errorf("bench train: --batch %d × --seq %d is %d tokens a step; at most %d fit a bench's memory", b.Batch, b.Seq, b.Batch*b.Seq, maxBenchTokens)
			}
			if err := checkBlocks(b.CkptBlocks, cfg, "bench train: --checkpoint-blocks"); err != nil {
				return err
			}
			b.Peft = map[string]any{}
			reg, err := mf.apply(b.Method, b.Peft)
			if err != nil {
				return err
			}
			b.Method = reg.Type
			method := reg.New()
			pj, err := json.Marshal(b.Peft)
			if err != nil {
				return err
			}
			if err := peft.DecodeConfig(pj, method.Config(), "bench", true); err != nil {
				return namedKeyError(reg, err)
			}
			if b.BF16, _, err = baseInBF16(b.BF16, fp32, method); err != nil {
				return err
			}
			lo, err := qf.options(b.BF16)
			if err != nil {
				return err
			}
			b.Quant = qf.label()
			base, err := llama.NewPresetWith(b.Preset, 1, lo)
			if err != nil {
				return err
			}
			base.GradientCheckpointing = b.Checkpoint
			base.CheckpointBlocks = b.CkptBlocks
			pm := peft.Wrap(base)
			a, err := pm.AddAdapter(peft.DefaultAdapter, method)
			if err != nil {
				return err
			}
			g := tensor.NewRNG(3)
			in := llama.Input{Batch: b.Batch, T: b.Seq, IDs: make([]int, b.Batch*b.Seq)}
			for i := range in.IDs {
				in.IDs[i] = 3 + g.IntN(base.Config.VocabSize-3)
			}
			labels := llama.LMLabels(in)
			if p, ok := method.(peft.Preparer); ok { // selects on the bench's own batch, sequence by sequence
				if err := p.Prepare(pm, a, benchObjective{base, in}); err != nil {
					return err
				}
			}
			params := train.Trainable(pm.TrainableParams())
			for _, p := range params {
				b.Trainable += p.Var.Value.Numel()
			}
			var opt train.Optimizer
			if b.Optimizer == "adamw_8bit" {
				opt, err = train.NewAdamW8bit(params, train.DefaultAdamW())
			} else {
				opt, err = train.NewAdamW(params, train.DefaultAdamW())
			}
			if err != nil {
				return err
			}
			micro := 0
			step := func() error {
				tp := autograd.NewTape()
				micro++
				pass := &nn.Pass{Tape: tp, Training: true, Seed: train.MicroBatchSeed(1, micro, 0)}
				loss, err := base.Loss(pass, in, labels)
				if err != nil {
					return err
				}
				// The trainer's lifecycle, as train.Run calls it (AdaLoRA's
				// regulariser and rank allocation are part of its step).
				if lt, ok := method.(peft.LossTerm); ok {
					extra, err := lt.ExtraLoss(pass)
					if err != nil {
						return err
					}
					if extra != nil {
						loss = tp.Add(loss, extra)
					}
				}
				tp.Backward(loss)
				if h, ok := method.(peft.GradHook); ok {
					if err := h.BeforeUpdate(micro - 1); err != nil {
						return err
					}
				}
				opt.Step(1e-4)
				if h, ok := method.(peft.StepHook); ok {
					if err := h.AfterUpdate(micro - 1); err != nil {
						return err
					}
				}
				opt.ZeroGrad()
				return nil
			}
			if err := step(); err != nil { // warm-up: buffers, page faults
				return err
			}
			if cpuProfile != "" { // the measured steps only
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			start, cpu0 := time.Now(), cpuSeconds()
			for i := 0; i < b.Steps; i++ {
				if err := step(); err != nil {
					return err
				}
			}
			el := time.Since(start).Seconds()
			b.StepSeconds = el / float64(b.Steps)
			b.CPUStepSeconds = (cpuSeconds() - cpu0) / float64(b.Steps)
			b.TokensPerSec = float64(b.Batch*b.Seq*b.Steps) / el
			b.PeakRSSBytes = peakRSSBytes()
			return writeBench(cmd.OutOrStdout(), asJSON, b, fmt.Sprintf(
				"%s%s %s%s, %s: %d trainable, batch %d × %d tokens: %.1f tokens/s (%.2f s a step, %.2f s of CPU); peak RSS %.0f MiB",
				b.Preset, storageNote(b.BF16, b.Quant), b.Method, checkpointNote(b.Checkpoint, b.CkptBlocks, cfg.NumHiddenLayers), b.Optimizer, b.Trainable, b.Batch, b.Seq, b.TokensPerSec, b.StepSeconds, b.CPUStepSeconds, float64(b.PeakRSSBytes)/(1<<20)))
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&b.Preset, "preset", "stories15M", fmt.Sprintf("model shape: one of %v", llama.PresetNames()))
	fl.StringVar(&b.Method, "method", "LORA", methodUsage())
	mf = registerMethodFlags(fl)
	fl.IntVar(&b.Batch, "batch", 4, "sequences a step")
	fl.IntVar(&b.Seq, "seq", 256, "tokens a sequence")
	fl.IntVar(&b.Steps, "steps", 5, "measured steps (after one warm-up step)")
	fl.StringVar(&b.Optimizer, "optimizer", "adamw", "adamw, or adamw_8bit (8-bit blockwise state)")
	registerPrecision(fl, &b.BF16, &fp32)
	qf.register(fl)
	fl.BoolVar(&b.Checkpoint, "gradient-checkpointing", false, "recompute each decoder block in the backward instead of keeping its activations")
	fl.IntVar(&b.CkptBlocks, "checkpoint-blocks", 0, checkpointBlocksUsage)
	fl.BoolVar(&asJSON, "json", false, "print JSON")
	fl.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the measured steps to this file")
	return cmd
}

// benchObjective is the bench batch's next-token loss, one sequence an
// example, for a method that selects before training.
type benchObjective struct {
	m  *llama.Model
	in llama.Input
}

func (o benchObjective) Len() int { return o.in.Batch }

func (o benchObjective) Loss(p *nn.Pass, idx []int) (*autograd.Var, error) {
	var ids []int
	for _, i := range idx {
		ids = append(ids, o.in.IDs[i*o.in.T:(i+1)*o.in.T]...)
	}
	in := llama.Input{IDs: ids, Batch: len(idx), T: o.in.T}
	return o.m.Loss(p, in, llama.LMLabels(in))
}

// storageNote is " (nf4)", " (bf16)", " (nf4+bf16)" or "" for float32.
func storageNote(bf16 bool, q string) string {
	var parts []string
	if q != "" {
		parts = append(parts, q)
	}
	if bf16 {
		parts = append(parts, "bf16")
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "+") + ")"
}

// checkpointNote says which blocks a bench recomputes in the backward.
func checkpointNote(all bool, blocks, layers int) string {
	switch {
	case blocks > 0:
		return fmt.Sprintf(", recomputing %d of %d blocks", blocks, layers)
	case all:
		return ", recomputing every block"
	}
	return ""
}
