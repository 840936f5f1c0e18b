package main

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"text/tabwriter"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// writeInspect prints a model's configuration, parameter count and memory
// by storage type.
func writeInspect(w io.Writer, path string, m *llama.Model) error {
	c := m.Config
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "model\t%s\n", path)
	rows := []struct {
		k string
		v any
	}{
		{"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers}, {"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads}, {"head_dim", c.HeadSize()},
		{"vocab_size", c.VocabSize}, {"max_position_embeddings", c.MaxPositionEmbeddings},
		{"rms_norm_eps", c.RMSNormEps}, {"rope_theta", c.RopeTheta},
		{"rope_style", ropeStyleName(m, path)}, {"tie_word_embeddings", c.TieWordEmbeddings},
		{"bos_token_id", c.BOSTokenID}, {"eos_token_id", c.EOSTokenID},
	}
	if c.RopeScaling != nil {
		rows = append(rows, struct {
			k string
			v any
		}{"rope_scaling", fmt.Sprintf("%+v", *c.RopeScaling)})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%v\n", r.k, r.v)
	}
	params := m.Params()
	all, trainable := params.Count()
	fmt.Fprintf(tw, "parameters\t%s\n", nn.TrainableLine(all, trainable))
	bytes := map[tensor.DType]int{}
	count := map[tensor.DType]int{}
	for _, p := range params {
		t := p.Var.Value
		bytes[t.DType()] += int(t.StorageBytes())
		count[t.DType()] += t.Numel()
	}
	for _, d := range []tensor.DType{tensor.F32, tensor.BF16, tensor.Q4, tensor.Q8} {
		if count[d] > 0 {
			fmt.Fprintf(tw, "memory %s\t%d parameters, %.2f MiB\n", d, count[d], float64(bytes[d])/(1<<20))
		}
	}
	return tw.Flush()
}

// ropeStyleName says how the model rotates q and k, and where the file
// stored them in the other order, that they were permuted on load (so
// adapters index their rows as PEFT's files do).
func ropeStyleName(m *llama.Model, path string) string {
	if m.Config.RoPE == autograd.RoPEInterleaved { // a model built in code
		return "interleaved pairs (llama2.c's order)"
	}
	if f, _, err := llama.DetectFormat(path); err == nil && f != llama.FormatHF {
		return "rotate-half (Hugging Face; the file's interleaved q/k rows are permuted on load)"
	}
	return "rotate-half (Hugging Face)"
}

// writeAdapterInspect prints an adapter's method, config and tensors.
func writeAdapterInspect(w io.Writer, dir string) error {
	method, err := peft.ReadMethod(dir)
	if err != nil {
		return err
	}
	ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
	if err != nil {
		return err
	}
	cfg, err := peft.MarshalConfig(method.Config())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "adapter %s (%s)\n%s\n", dir, method.Config().Base().PeftType, cfg)
	names := make([]string, 0, len(ts))
	total := 0
	for n, t := range ts {
		names = append(names, n)
		total += t.Numel()
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, n := range names {
		fmt.Fprintf(tw, "%s\t%s\t%v\n", n, ts[n].DType, ts[n].Shape)
	}
	fmt.Fprintf(tw, "%d tensors\t\t%d parameters\n", len(ts), total)
	return tw.Flush()
}
