// Package quant holds bitsandbytes' weight quantization formats, bit for
// bit: 4-bit NF4 and FP4 in blocks of 64 (QLoRA's frozen base), the 8-bit
// blockwise "dynamic" quantization that double quantization applies to the
// 4-bit absmax values, and LLM.int8's row-wise int8 (Linear8bitLt).
//
// Every rule here was read from bitsandbytes' source at commit
// 95f9af309d4d5793847169c39288dcd3fcbdf564 (bitsandbytes/functional.py and
// the PyTorch implementation in bitsandbytes/backends/default/ops.py, which
// is what bitsandbytes runs for a CPU tensor), and is tested against golden
// values computed by that code (../shared/golden/quant). Where the CUDA
// kernels differ (the last partial block, an all-zero block), this package
// follows the PyTorch backend; the golden README lists every difference.
//
// # 4-bit blockwise quantization (NF4, FP4)
//
// The tensor is flattened row-major and cut into blocks of 64 consecutive
// elements (blocks cross rows; the last block may be partial). For block b:
//
//	absmax[b] = max |x|                     stored as float32
//	full block:    s = x * fl(1/max(absmax, 1e-38))   a multiply by the
//	               float32 reciprocal, not a division
//	partial block: s = x / max(absmax, 1e-38)         a true division, and
//	               the clamped value is what is stored
//	code = #{midpoints m of the sorted code book : m < clamp(s, -1, 1)}
//
// so a value exactly on a midpoint takes the lower code (torch.bucketize
// with right=False). NF4's book is sorted; FP4's is not, and the sorted
// position is mapped back through the book's argsort. Two codes share a
// byte, the first element in the high nibble; an odd element count pads one
// 0.0, whose code fills the last low nibble (NF4 7, FP4 0). Dequantization
// is one float32 multiply: book[code] * absmax[b].
//
// The 1e-38 clamp matters at the edges: an all-zero full block stores
// absmax 0 and codes for 0.0 (dequantizing to +0.0, where the CUDA kernel
// computes 0·inf = NaN and picks code 0); a block whose absmax is below
// 1e-38 (subnormal) is scaled by 1/1e-38, so its largest value does not
// reach ±1.
//
// # Double quantization
//
// With double quantization (bitsandbytes' compress_statistics, transformers'
// bnb_4bit_use_double_quant) the absmax vector is itself quantized: its
// float32 mean is subtracted (the offset) and the differences are quantized
// to 8 bits with the 256-entry dynamic map in blocks of 256, by the same
// rules (multiply by the reciprocal in full blocks, divide in the last
// partial one). A weight's scale is then dynamic[q]*nested_absmax + offset,
// two float32 roundings.
//
// # Int8 (LLM.int8, row-wise)
//
// Linear8bitLt stores each row r of a weight as int8 codes
// CB = round(w * fl(127/SCB[r])) (round half to even) with SCB[r] = max|w|
// of the row, and dequantizes as CB*SCB*fl(1/127).
package quant
