package format

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/gopeft/gopeft/internal/safefile"
)

// Llama2cHeader is the header of a llama2.c legacy (version 0) checkpoint:
// seven int32 values. VocabSize is made positive; a negative value in the
// file means the classifier is not shared with the embedding, which
// SharedClassifier reports.
//
// The q_proj/k_proj rows of a llama2.c checkpoint are in interleaved-pair
// RoPE order; see [ConvertQKToHF].
type Llama2cHeader struct {
	Dim       int // model width
	HiddenDim int // FFN width
	NLayers   int
	NHeads    int
	NKVHeads  int
	VocabSize int // always positive here
	SeqLen    int // maximum sequence length the model was trained for

	// SharedClassifier: the LM head is the token embedding (no
	// lm_head.weight tensor).
	SharedClassifier bool
}

// HeadDim is Dim / NHeads.
func (h Llama2cHeader) HeadDim() int { return h.Dim / h.NHeads }

// KVDim is the width of the key and value projections, NKVHeads * HeadDim.
func (h Llama2cHeader) KVDim() int { return h.NKVHeads * h.HeadDim() }

const llama2cHeaderBytes = 7 * 4

// ReadLlama2c reads a llama2.c version-0 checkpoint (float32 weights). The
// tensors come back under Hugging Face names with [out, in] shapes, F32, with
// Data slices into one buffer holding the file; q_proj and k_proj rows are
// still in llama2.c's interleaved-pair RoPE order. lm_head.weight is present
// only when the classifier is unshared. The freq_cis tables stored in the
// file are skipped.
func ReadLlama2c(path string) (Llama2cHeader, map[string]*Tensor, error) {
	data, err := safefile.ReadFile(path)
	if err != nil {
		return Llama2cHeader{}, nil, err
	}
	return ParseLlama2c(path, data)
}

// llama2cLayout lists the arrays of a version-0 checkpoint in file order.
// perLayer arrays are stored for all layers back to back (all wq, then all
// wk, ...); name is a format string taking the layer index.
func llama2cLayout(h Llama2cHeader) []struct {
	name       string
	perLayer   bool
	rows, cols int // cols == 0: a vector of length rows
} {
	dim, hid, kv, hd := h.Dim, h.HiddenDim, h.KVDim(), h.HeadDim()
	type arr = struct {
		name       string
		perLayer   bool
		rows, cols int
	}
	l := []arr{
		{"model.embed_tokens.weight", false, h.VocabSize, dim},
		{"model.layers.%d.input_layernorm.weight", true, dim, 0},
		{"model.layers.%d.self_attn.q_proj.weight", true, dim, dim},
		{"model.layers.%d.self_attn.k_proj.weight", true, kv, dim},
		{"model.layers.%d.self_attn.v_proj.weight", true, kv, dim},
		{"model.layers.%d.self_attn.o_proj.weight", true, dim, dim},
		{"model.layers.%d.post_attention_layernorm.weight", true, dim, 0},
		{"model.layers.%d.mlp.gate_proj.weight", true, hid, dim}, // w1
		{"model.layers.%d.mlp.down_proj.weight", true, dim, hid}, // w2
		{"model.layers.%d.mlp.up_proj.weight", true, hid, dim},   // w3
		{"model.norm.weight", false, dim, 0},
		{"", false, h.SeqLen, hd / 2}, // freq_cis_real: skipped
		{"", false, h.SeqLen, hd / 2}, // freq_cis_imag: skipped
	}
	if !h.SharedClassifier {
		l = append(l, arr{"lm_head.weight", false, h.VocabSize, dim})
	}
	return l
}

// ParseLlama2c parses the bytes of a llama2.c version-0 checkpoint; name is
// used in error messages. See [ReadLlama2c].
func ParseLlama2c(name string, data []byte) (Llama2cHeader, map[string]*Tensor, error) {
	var h Llama2cHeader
	if len(data) < llama2cHeaderBytes {
		return h, nil, fmt.Errorf("%s: %d bytes is too short for a llama2.c header (%d bytes)", name, len(data), llama2cHeaderBytes)
	}
	if binary.LittleEndian.Uint32(data) == 0x616b3432 { // export.py's "ak42" magic of versions 1 and 2
		return h, nil, fmt.Errorf("%s: llama2.c version 1/2 export (magic \"ak42\") is not supported; export with --version 0", name)
	}
	field := func(i int) int { return int(int32(binary.LittleEndian.Uint32(data[4*i:]))) }
	h = Llama2cHeader{
		Dim: field(0), HiddenDim: field(1), NLayers: field(2), NHeads: field(3),
		NKVHeads: field(4), VocabSize: field(5), SeqLen: field(6),
	}
	h.SharedClassifier = h.VocabSize > 0
	if h.VocabSize < 0 {
		h.VocabSize = -h.VocabSize // int is 64-bit: -MinInt32 fits
	}
	for _, f := range []struct {
		what string
		v    int
	}{{"dim", h.Dim}, {"hidden_dim", h.HiddenDim}, {"n_layers", h.NLayers}, {"n_heads", h.NHeads},
		{"n_kv_heads", h.NKVHeads}, {"vocab_size", h.VocabSize}, {"seq_len", h.SeqLen}} {
		if f.v <= 0 {
			return h, nil, fmt.Errorf("%s: llama2.c header: %s = %d must be positive", name, f.what, f.v)
		}
	}
	if h.Dim%h.NHeads != 0 {
		return h, nil, fmt.Errorf("%s: llama2.c header: n_heads %d does not divide dim %d", name, h.NHeads, h.Dim)
	}
	if h.HeadDim()%2 != 0 {
		return h, nil, fmt.Errorf("%s: llama2.c header: head size %d (dim %d / n_heads %d) is odd; RoPE needs pairs", name, h.HeadDim(), h.Dim, h.NHeads)
	}
	if h.NHeads%h.NKVHeads != 0 {
		return h, nil, fmt.Errorf("%s: llama2.c header: n_kv_heads %d does not divide n_heads %d", name, h.NKVHeads, h.NHeads)
	}

	// Count floats with overflow checks: a hostile header can claim 2^31 of
	// everything, whose products overflow 64 bits.
	layout := llama2cLayout(h)
	var total uint64
	overflow := false
	mul := func(a, b uint64) uint64 {
		hi, lo := bits.Mul64(a, b)
		overflow = overflow || hi != 0
		return lo
	}
	add := func(a, b uint64) uint64 {
		s, c := bits.Add64(a, b, 0)
		overflow = overflow || c != 0
		return s
	}
	for _, a := range layout {
		n := mul(uint64(a.rows), uint64(max(a.cols, 1)))
		if a.perLayer {
			n = mul(n, uint64(h.NLayers))
		}
		total = add(total, n)
	}
	want := add(mul(total, 4), llama2cHeaderBytes)
	if overflow || want > math.MaxInt {
		return h, nil, fmt.Errorf("%s: llama2.c header %+v describes an impossibly large model", name, h)
	}
	if want != uint64(len(data)) {
		return h, nil, fmt.Errorf("%s: llama2.c header (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, seq %d, shared classifier %v) needs %d bytes, file has %d",
			name, h.Dim, h.HiddenDim, h.NLayers, h.NHeads, h.NKVHeads, h.VocabSize, h.SeqLen, h.SharedClassifier, want, len(data))
	}

	// Sizes are now known to fit in the file, so int arithmetic is safe.
	tensors := make(map[string]*Tensor, 9*h.NLayers+3)
	off := llama2cHeaderBytes
	for _, a := range layout {
		shape := []int{a.rows, a.cols}
		if a.cols == 0 {
			shape = shape[:1]
		}
		n := 4 * a.rows * max(a.cols, 1)
		count := 1
		if a.perLayer {
			count = h.NLayers
		}
		for l := 0; l < count; l++ {
			if a.name != "" {
				tname := a.name
				if a.perLayer {
					tname = fmt.Sprintf(a.name, l)
				}
				tensors[tname] = &Tensor{Name: tname, DType: F32, Shape: slices.Clone(shape), Data: data[off : off+n : off+n]}
			}
			off += n
		}
	}
	return h, tensors, nil
}
