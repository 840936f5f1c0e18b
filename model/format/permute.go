package format

import (
	"bytes"
	"fmt"
)

// RoPE row orders. The original Meta code, llama2.c and GGUF rotate adjacent
// pairs of each head's query/key features (rows 2i and 2i+1 of a head form a
// pair); Hugging Face rotates halves (rows i and i+hd/2). The Hugging Face
// conversion script turns one into the other by permuting q_proj and k_proj
// rows:
//
//	w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)
//
// so within each head of size hd, HF row j*hd/2+i comes from interleaved row
// 2i+j (j in {0,1}). llama.cpp's convert_hf_to_gguf.py applies the inverse
// (LlamaModel.permute: reshape(n_head, 2, rows//n_head//2, cols).swapaxes(1,2))
// to q_proj with n_head and to k_proj with n_head_kv, so GGUF files carry the
// interleaved order, like llama2.c.

// PermuteQKForHF converts a q_proj or k_proj weight [rows, cols] from
// interleaved-pair order (llama2.c, GGUF) to Hugging Face rotate-half order.
// nHeads is the number of heads the rows hold: n_heads for q_proj,
// n_kv_heads for k_proj. It panics if the sizes do not fit (len(w) !=
// rows*cols or rows not a multiple of 2*nHeads).
func PermuteQKForHF(w []float32, nHeads, rows, cols int) []float32 {
	return permuteQKF32(w, nHeads, rows, cols, false)
}

// UnpermuteQKFromHF is the inverse of [PermuteQKForHF]: Hugging Face order
// back to interleaved pairs (what llama2.c's export and llama.cpp's converter
// do).
func UnpermuteQKFromHF(w []float32, nHeads, rows, cols int) []float32 {
	return permuteQKF32(w, nHeads, rows, cols, true)
}

func permuteQKF32(w []float32, nHeads, rows, cols int, toInterleaved bool) []float32 {
	if err := checkQKShape(nHeads, rows, cols); err != nil || len(w) != rows*cols {
		panic(fmt.Sprintf("format: permute q/k: %d values for %d heads, [%d, %d]", len(w), nHeads, rows, cols))
	}
	out := make([]float32, len(w))
	forQKRows(nHeads, rows, toInterleaved, func(dst, src int) {
		copy(out[dst*cols:(dst+1)*cols], w[src*cols:(src+1)*cols])
	})
	return out
}

func checkQKShape(nHeads, rows, cols int) error {
	if nHeads <= 0 || rows <= 0 || cols <= 0 || rows%(2*nHeads) != 0 {
		return fmt.Errorf("cannot split %d rows into %d heads of RoPE pairs", rows, nHeads)
	}
	if _, ok := mulInt(rows, cols); !ok {
		return fmt.Errorf("[%d, %d] overflows", rows, cols)
	}
	return nil
}

// forQKRows calls move(dst, src) for every row: the output row dst takes the
// input row src.
func forQKRows(nHeads, rows int, toInterleaved bool, move func(dst, src int)) {
	hd := rows / nHeads
	half := hd / 2
	for h := 0; h < nHeads; h++ {
		for i := 0; i < half; i++ {
			for j := 0; j < 2; j++ {
				hf, inter := h*hd+j*half+i, h*hd+2*i+j
				if toInterleaved {
					move(inter, hf)
				} else {
					move(hf, inter)
				}
			}
		}
	}
}

// ConvertQKToHF permutes the q_proj and k_proj weights of every layer in
// tensors (Hugging Face names, as [ReadLlama2c] returns and
// [GGUFToHFName] maps to) from interleaved-pair to rotate-half order. It
// works on the stored rows, so any dtype whose rows are whole blocks (F32,
// BF16, Q8_0, ...) is permuted without decoding. Each permuted tensor gets a
// new Data slice.
func ConvertQKToHF(tensors map[string]*Tensor, nLayers, nHeads, nKVHeads int) error {
	return convertQK(tensors, nLayers, nHeads, nKVHeads, false, false)
}

// ConvertQKToHFInPlace is [ConvertQKToHF] writing over each tensor's own
// Data, one head's rows of scratch at a time, for tensors whose bytes
// nothing else reads (a file just read, as [ReadLlama2c] returns it): a
// copy of every q/k weight would add a fifth of a 7B float32 file to the
// peak while the file's buffer is still held.
func ConvertQKToHFInPlace(tensors map[string]*Tensor, nLayers, nHeads, nKVHeads int) error {
	return convertQK(tensors, nLayers, nHeads, nKVHeads, false, true)
}

// ConvertQKFromHF is the inverse of [ConvertQKToHF].
func ConvertQKFromHF(tensors map[string]*Tensor, nLayers, nHeads, nKVHeads int) error {
	return convertQK(tensors, nLayers, nHeads, nKVHeads, true, false)
}

func convertQK(tensors map[string]*Tensor, nLayers, nHeads, nKVHeads int, toInterleaved, inPlace bool) error {
	for l := 0; l < nLayers; l++ {
		for _, p := range []struct {
			name  string
			heads int
		}{
			{fmt.Sprintf("model.layers.%d.self_attn.q_proj.weight", l), nHeads},
			{fmt.Sprintf("model.layers.%d.self_attn.k_proj.weight", l), nKVHeads},
		} {
			t, ok := tensors[p.name]
			if !ok {
				return fmt.Errorf("permute q/k: tensor %q missing", p.name)
			}
			if err := permuteTensorRows(t, p.heads, toInterleaved, inPlace); err != nil {
				return err
			}
		}
	}
	return nil
}

func permuteTensorRows(t *Tensor, nHeads int, toInterleaved, inPlace bool) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if len(t.Shape) != 2 {
		return fmt.Errorf("permute q/k: tensor %q: shape %v is not 2-D", t.Name, t.Shape)
	}
	rows, cols := t.Shape[0], t.Shape[1]
	if err := checkQKShape(nHeads, rows, cols); err != nil {
		return fmt.Errorf("permute q/k: tensor %q: %v", t.Name, err)
	}
	if be, _ := t.DType.BlockSize(); cols%be != 0 {
		return fmt.Errorf("permute q/k: tensor %q: rows of %d %s values are not whole blocks", t.Name, cols, t.DType)
	}
	if !inPlace {
		t.Data = bytes.Clone(t.Data)
	}
	// A permutation within each head: keep one head's rows aside.
	rb := len(t.Data) / rows
	hb := rows / nHeads * rb
	head := make([]byte, hb)
	for h := 0; h < nHeads; h++ {
		copy(head, t.Data[h*hb:(h+1)*hb])
		forQKRows(1, rows/nHeads, toInterleaved, func(dst, src int) {
			copy(t.Data[h*hb+dst*rb:h*hb+(dst+1)*rb], head[src*rb:(src+1)*rb])
		})
	}
	return nil
}
