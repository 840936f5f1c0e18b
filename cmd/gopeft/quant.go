package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/quant"
)

// quantFlags are --quant and --double-quant, shared by every command that
// loads a model (generate, eval, train, bench, inspect, convert, merge).
type quantFlags struct {
	quant  string
	double bool
}

func (q *quantFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&q.quant, "quant", "", "quantize the decoder's Linear weights on load: nf4, fp4 (4-bit, blocks of 64) or int8 (row-wise), as bitsandbytes does; the embedding and LM head stay float32 (bf16 with --bf16)")
	fl.BoolVar(&q.double, "double-quant", false, "with --quant nf4/fp4: quantize the 4-bit scales too (QLoRA's double quantization)")
}

// options returns the load options, naming the flag of a bad value.
func (q quantFlags) options(bf16 bool) (llama.LoadOptions, error) {
	k, err := quant.ParseKind(strings.ToLower(q.quant))
	if err != nil {
		return llama.LoadOptions{}, fmt.Errorf("--quant: %w", err)
	}
	if q.double && k != quant.KindNF4 && k != quant.KindFP4 {
		return llama.LoadOptions{}, fmt.Errorf("--double-quant quantizes 4-bit scales: give it with --quant nf4 or fp4")
	}
	return llama.LoadOptions{BF16: bf16, Quant: k, DoubleQuant: q.double}, nil
}

// label is how reports name the storage ("nf4", "nf4+dq", "int8", "").
func (q quantFlags) label() string {
	if q.double {
		return q.quant + "+dq"
	}
	return q.quant
}

// mergePlan is how merge treats a quantized base: dequantized to float32
// for the merge, then written in bf16 or quantized again.
type mergePlan struct {
	kind    quant.Kind
	double  bool
	requant bool
}

// dequantizeForMerge dequantizes a quantized base to float32 (where the
// adapter is added) and returns what finish does after the merge.
func dequantizeForMerge(w io.Writer, base *llama.Model, requant bool) (mergePlan, error) {
	q := base.Quantization()
	if q == "" {
		if requant {
			return mergePlan{}, fmt.Errorf("--requantize: the base is not quantized (give a bitsandbytes checkpoint or --quant)")
		}
		return mergePlan{}, nil
	}
	kind, double := strings.CutSuffix(q, "+dq")
	p := mergePlan{kind: quant.Kind(kind), double: double, requant: requant}
	n := base.Dequantize(false)
	fmt.Fprintf(w, "dequantized %d %s weights of the base to float32 for the merge\n", n, q)
	return p, nil
}

// finish stores the merged decoder Linears of a base that was quantized:
// bf16, or quantized again with the rounding error reported (the largest
// and the root-mean-square change, relative to the RMS of the weights).
func (p mergePlan) finish(w io.Writer, m *llama.Model) error {
	if p.kind == "" {
		return nil
	}
	var maxErr, sqErr, sq float64
	n := 0
	for _, prm := range m.Params() {
		if !llama.IsDecoderLinear(prm.Name) {
			continue
		}
		v := prm.Var.Value
		if !p.requant {
			prm.Var.Value = v.ToBF16()
			n++
			continue
		}
		q, err := quant.QuantizeTensor(v, p.kind, p.double)
		if err != nil {
			return fmt.Errorf("%s: %w", prm.Name, err)
		}
		x, d := v.ToF32().Data, q.ToF32().Data
		for i := range x {
			e := float64(d[i] - x[i])
			maxErr = math.Max(maxErr, math.Abs(e))
			sqErr += e * e
			sq += float64(x[i]) * float64(x[i])
		}
		prm.Var.Value = q
		n++
	}
	if !p.requant {
		fmt.Fprintf(w, "wrote the %d merged Linear weights in bf16 (--requantize quantizes them again)\n", n)
		return nil
	}
	fmt.Fprintf(w, "requantized %d merged Linear weights to %s: rounding error max %.4g, RMS %.4g (%.2f%% of the weights' RMS)\n",
		n, p.label(), maxErr, math.Sqrt(sqErr/float64(max(1, countElems(m)))), 100*math.Sqrt(sqErr/math.Max(sq, 1e-30)))
	return nil
}

func (p mergePlan) label() string {
	if p.double {
		return string(p.kind) + "+dq"
	}
	return string(p.kind)
}

// countElems is the number of decoder Linear weights.
func countElems(m *llama.Model) int {
	n := 0
	for _, p := range m.Params() {
		if llama.IsDecoderLinear(p.Name) {
			n += p.Var.Value.Numel()
		}
	}
	return n
}
