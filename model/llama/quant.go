package llama

import (
	"fmt"
	"regexp"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/quant"
	"github.com/gopeft/gopeft/tensor"
)

// decoderLinear matches the weights that quantization on load replaces:
// the seven Linear layers of every decoder block. The embedding, the norms
// and the LM head keep their float32 (or with BF16, bf16) storage, as
// transformers' load_in_4bit/load_in_8bit leave them (lm_head is in
// bitsandbytes' default skip list).
var decoderLinear = regexp.MustCompile(`^model\.layers\.[0-9]+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$`)

// IsDecoderLinear reports whether a Hugging Face tensor name is one of the
// weights --quant quantizes.
func IsDecoderLinear(name string) bool { return decoderLinear.MatchString(name) }

// quantizeOnLoad returns t quantized as opt asks when name is a decoder
// Linear weight, else t.
func quantizeOnLoad(name string, t *tensor.Tensor, opt LoadOptions) (*tensor.Tensor, error) {
	if opt.Quant == quant.KindNone || !IsDecoderLinear(name) || t.Quantized() {
		return t, nil
	}
	q, err := quant.QuantizeTensor(t, opt.Quant, opt.DoubleQuant)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	computeDType(q, opt)
	return q, nil
}

// computeDType makes a 4-bit weight's products bf16 when the model is
// held in bf16 (bitsandbytes' bnb_4bit_compute_dtype=bfloat16, what
// QLoRA recipes use); otherwise they stay float32, dequantize then
// multiply. int8 weights always compute in float32.
func computeDType(t *tensor.Tensor, opt LoadOptions) {
	if t.Q4 != nil {
		t.Q4.BF16 = opt.BF16
	}
}

// checkQuantOptions refuses option sets that would be ignored.
func checkQuantOptions(opt LoadOptions) error {
	if _, err := quant.ParseKind(string(opt.Quant)); err != nil {
		return err
	}
	if opt.DoubleQuant && opt.Quant != quant.KindNF4 && opt.Quant != quant.KindFP4 {
		return fmt.Errorf("double quantization applies to 4-bit weights: give it with nf4 or fp4, not %q", opt.Quant)
	}
	return nil
}

// Quantize replaces every decoder Linear weight with its quantized form
// (see LoadOptions.Quant), for models built in memory; Load does it while
// reading. Weights already quantized are left as they are.
func (m *Model) Quantize(kind quant.Kind, double bool) error {
	opt := LoadOptions{Quant: kind, DoubleQuant: double}
	if err := checkQuantOptions(opt); err != nil {
		return err
	}
	for _, p := range m.Params() {
		q, err := quantizeOnLoad(p.Name, p.Var.Value, opt)
		if err != nil {
			return err
		}
		p.Var.Value = q
	}
	return nil
}

// Quantization describes the model's quantized weights: "" when none,
// else the kind ("nf4", "nf4+dq", "fp4", "int8") of its decoder Linears.
func (m *Model) Quantization() string {
	for _, p := range m.Params() {
		switch src := p.Var.Value.Quant.(type) {
		case *quant.Tensor4:
			if src.Nested != nil {
				return src.Type.String() + "+dq"
			}
			return src.Type.String()
		case *quant.Int8:
			return string(quant.KindInt8)
		}
		if p.Var.Value.Quantized() {
			return p.Var.Value.DType().String()
		}
	}
	return ""
}

// Dequantize replaces every quantized weight with its dequantized values,
// in bf16 when bf16 is set (what a merge into a quantized base writes by
// default) or float32, and reports how many weights it replaced.
func (m *Model) Dequantize(bf16 bool) int {
	n := 0
	for _, p := range m.Params() {
		if !p.Var.Value.Quantized() {
			continue
		}
		v := p.Var.Value.ToF32()
		if bf16 {
			v = v.ToBF16()
		}
		p.Var.Value = v
		n++
	}
	return n
}

// bnbWeights reads the bitsandbytes-quantized Linear weights of a Hugging
// Face checkpoint (quantization_config in config.json), removing their
// tensors from ts, and returns them as tensors by weight name. A
// checkpoint quantized one way asked to load another is refused.
func bnbWeights(dir string, rawConfig []byte, ts map[string]*format.Tensor, opt LoadOptions) (map[string]*tensor.Tensor, error) {
	cfg, err := format.ParseQuantizationConfig(dir+"/"+format.HFConfigFile, rawConfig)
	if err != nil || cfg == nil {
		return nil, err
	}
	w, err := format.ReadBnbWeights(cfg, ts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if len(w.Q4)+len(w.Q8) == 0 {
		return nil, fmt.Errorf("%s: %s has a bitsandbytes quantization_config but no tensor is quantized (no weight.quant_state.* or SCB tensor)", dir, format.HFConfigFile)
	}
	kind := quant.KindInt8
	if cfg.Load4bit {
		kind = quant.Kind(cfg.QuantType)
	}
	if opt.Quant != quant.KindNone && (opt.Quant != kind || opt.DoubleQuant != cfg.DoubleQuant) {
		return nil, fmt.Errorf("%s: the checkpoint is already quantized (%s, double quantization %v); it cannot be loaded as %s (double %v): drop the quantization options",
			dir, kind, cfg.DoubleQuant, opt.Quant, opt.DoubleQuant)
	}
	out := map[string]*tensor.Tensor{}
	for mod, q := range w.Q4 {
		t, err := q.Tensor()
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %s.weight: %w", dir, mod, err)
		}
		computeDType(t, opt)
		out[mod+".weight"] = t
	}
	for mod, q := range w.Q8 {
		out[mod+".weight"] = q.Tensor()
	}
	return out, nil
}
