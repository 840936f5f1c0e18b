package format

import (
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"

	"github.com/gopeft/gopeft/internal/atomicfile"
)

// WriteLlama2c writes a llama2.c version-0 checkpoint atomically: the
// seven-int32 header, then every array of the layout [ReadLlama2c] reads, in
// float32. tensors are named and shaped as ReadLlama2c returns them (Hugging
// Face names, [out, in], q/k rows in llama2.c's interleaved-pair order, see
// [ConvertQKFromHF]); any dtype [Tensor.Float32] decodes is accepted.
// lm_head.weight is needed exactly when h.SharedClassifier is false. The
// freq_cis tables that llama2.c's export stores (and its runner skips) are
// written as cos/sin of position × θ^(−2i/head) with θ = 10000.
func WriteLlama2c(path string, h Llama2cHeader, tensors map[string]*Tensor) error {
	arrays, err := llama2cArrays(h, tensors)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error { return writeLlama2cBody(w, h, arrays) })
}

// llama2cArrays checks the header and the tensors against the layout and
// returns the arrays in file order, nil standing for a freq_cis table.
func llama2cArrays(h Llama2cHeader, tensors map[string]*Tensor) ([]*Tensor, error) {
	for _, f := range []struct {
		what string
		v    int
	}{{"dim", h.Dim}, {"hidden_dim", h.HiddenDim}, {"n_layers", h.NLayers}, {"n_heads", h.NHeads},
		{"n_kv_heads", h.NKVHeads}, {"vocab_size", h.VocabSize}, {"seq_len", h.SeqLen}} {
		if f.v <= 0 || f.v > math.MaxInt32 {
			return nil, fmt.Errorf("llama2.c header: %s = %d must be a positive int32", f.what, f.v)
		}
	}
	if h.Dim%h.NHeads != 0 || h.HeadDim()%2 != 0 || h.NHeads%h.NKVHeads != 0 {
		return nil, fmt.Errorf("llama2.c header: dim %d, n_heads %d, n_kv_heads %d do not give an even head size shared by whole kv groups", h.Dim, h.NHeads, h.NKVHeads)
	}
	var out []*Tensor
	used := map[string]bool{}
	for _, a := range llama2cLayout(h) {
		count := 1
		if a.perLayer {
			count = h.NLayers
		}
		shape := []int{a.rows, a.cols}
		if a.cols == 0 {
			shape = shape[:1]
		}
		for l := 0; l < count; l++ {
			if a.name == "" {
				out = append(out, nil)
				continue
			}
			name := a.name
			if a.perLayer {
				name = fmt.Sprintf(a.name, l)
			}
			t, ok := tensors[name]
			if !ok {
				return nil, fmt.Errorf("missing tensor %s (shape %v)", name, shape)
			}
			if !slices.Equal(t.Shape, shape) {
				return nil, fmt.Errorf("tensor %s has shape %v, the header needs %v", name, t.Shape, shape)
			}
			used[name] = true
			out = append(out, t)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(tensors)) {
		if !used[name] {
			return nil, fmt.Errorf("tensor %s has no place in a llama2.c checkpoint (shared classifier %v)", name, h.SharedClassifier)
		}
	}
	return out, nil
}

func writeLlama2cBody(w io.Writer, h Llama2cHeader, arrays []*Tensor) error {
	vocab := h.VocabSize
	if !h.SharedClassifier {
		vocab = -vocab
	}
	var hdr [llama2cHeaderBytes]byte
	for i, v := range []int{h.Dim, h.HiddenDim, h.NLayers, h.NHeads, h.NKVHeads, vocab, h.SeqLen} {
		binary.LittleEndian.PutUint32(hdr[4*i:], uint32(int32(v)))
	}
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	put := func(vals []float32) error {
		buf := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
		_, err := w.Write(buf)
		return err
	}
	freqs := 0 // freq_cis_real comes first, then freq_cis_imag
	for _, t := range arrays {
		var vals []float32
		if t == nil {
			vals = llama2cFreqCis(h, freqs == 0)
			freqs++
		} else {
			var err error
			if vals, err = t.Float32(); err != nil {
				return err
			}
		}
		if err := put(vals); err != nil {
			return err
		}
	}
	return nil
}

// llama2cFreqCis is the [seq_len, head/2] cos (real) or sin table.
func llama2cFreqCis(h Llama2cHeader, real bool) []float32 {
	half := h.HeadDim() / 2
	out := make([]float32, h.SeqLen*half)
	for p := 0; p < h.SeqLen; p++ {
		for i := 0; i < half; i++ {
			s, c := math.Sincos(float64(p) / math.Pow(10000, float64(2*i)/float64(h.HeadDim())))
			if real {
				out[p*half+i] = float32(c)
			} else {
				out[p*half+i] = float32(s)
			}
		}
	}
	return out
}
