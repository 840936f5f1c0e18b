// Package format reads and writes the checkpoint files that LLaMA-family
// models are distributed in:
//
//   - safetensors (read and write, byte-compatible with the Python library),
//   - Hugging Face model directories (config.json plus one safetensors file
//     or shards listed in model.safetensors.index.json),
//   - llama2.c's legacy version-0 ".bin" checkpoints (read),
//   - GGUF versions 2 and 3 (read and write; Q8_0 and Q4_0 blocks encoded
//     and decoded bit for bit as ggml does, see ggml_quants.go).
//
// Every reader returns tensors as [Tensor] values: a name, a [DType], a
// row-major shape and the raw little-endian bytes as stored. Decoding to
// float32 ([Tensor.Float32]) or bfloat16 ([Tensor.BF16]) is explicit, so a
// caller can keep a frozen base model in its storage type.
//
// Most callers want [LoadLlama]: it takes any of the three model formats and
// returns a [Checkpoint] with a [LlamaConfig] and Hugging Face names in
// Hugging Face (rotate-half) q/k order, checked against the config.
//
// Names: the llama2.c and GGUF readers can hand back Hugging Face tensor names
// (model.layers.{i}.self_attn.q_proj.weight, ...), but the q_proj and k_proj
// rows of both formats are in the interleaved-pair RoPE order of the original
// Meta/llama2.c code, while Hugging Face checkpoints rotate halves. Use
// [ConvertQKToHF] (or [PermuteQKForHF]) to get the Hugging Face order.
//
// Parsers never trust sizes in a file: every length is checked against the
// bytes actually present before anything is allocated, and bad input is
// reported as an error naming the file and the tensor or key, never a panic.
package format
