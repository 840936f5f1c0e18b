package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// Training's precision. Where the CPU multiplies bf16 natively
// (kernels.NativeBF16: the active kernels have bf16 pairs, from
// AVX512_BF16 or from AMX the OS grants), train and bench train hold the
// frozen base in bf16 by default: mixed precision as torch.autocast's bf16
// defines it, bf16 products of the frozen weights and the activations
// (forward and the activations' gradients) summed in float32, while the
// trainable parameters, their gradients and optimizer state, the norms,
// softmax and loss stay float32. --fp32 keeps everything float32; --bf16
// asks for the bf16 base on any CPU (elsewhere it is widened as packed:
// half the memory, float32 products). A method that trains the base's own
// weights (full fine-tuning, CHILD_TUNING_F) needs them float32, so its
// default is float32.
const (
	bf16Usage = "hold the frozen base in bfloat16 (the default where the CPU multiplies bf16 natively: AVX512_BF16 or AMX)"
	fp32Usage = "keep the frozen base and every product in float32 (where the CPU has AVX512_BF16 or AMX the default is a bf16 base: mixed precision)"
)

// registerPrecision adds --bf16 and --fp32, the training commands'
// precision flags.
func registerPrecision(fl *pflag.FlagSet, bf16, fp32 *bool) {
	fl.BoolVar(bf16, "bf16", false, bf16Usage)
	fl.BoolVar(fp32, "fp32", false, fp32Usage)
}

// baseInBF16 resolves the precision: an explicit --bf16 or --fp32 wins
// (both is an error naming the two), otherwise bf16 when the CPU has it
// natively and the method leaves the base frozen. auto reports that the
// default decided.
func baseInBF16(bf16, fp32 bool, m peft.Method) (inBF16, auto bool, err error) {
	switch {
	case bf16 && fp32:
		return false, false, fmt.Errorf("--bf16 and --fp32 (recipe keys bf16 and fp32) ask for opposite precisions: give one")
	case bf16:
		return true, false, nil
	case fp32:
		return false, false, nil
	}
	return kernels.NativeBF16() && !peft.SavesModel(m), true, nil
}

// precisionLine says what a run multiplies in, for its log.
func precisionLine(inBF16, auto bool) string {
	switch {
	case inBF16 && auto:
		return "precision: bf16 base, float32 trainable weights and sums (mixed precision, the default on this CPU; --fp32 for float32)"
	case inBF16:
		return "precision: bf16 base, float32 trainable weights and sums"
	}
	return "precision: float32"
}
