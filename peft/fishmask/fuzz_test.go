package fishmask_test

import (
	"encoding/binary"
	"testing"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/fishmask"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/peft/sparse"
)

// A sparse delta file's tensors, however malformed, load or are refused
// with an error; nothing panics.
func FuzzLoadSparseDelta(f *testing.F) {
	le := func(vs ...int64) []byte {
		b := make([]byte, 8*len(vs))
		for i, v := range vs {
			binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
		}
		return b
	}
	f.Add(le(0, 5, 9), le(8, 16), le(0), make([]byte, 12))
	f.Add(le(-1), le(8, 16), le(0), make([]byte, 4))
	f.Add(le(3, 2), le(1<<40, 16), le(0), []byte{1})
	f.Fuzz(func(t *testing.T, idx, shape, hash, vals []byte) {
		pm := peft.Wrap(methodtest.TinyBase(t))
		a, err := pm.AddAdapter(peft.DefaultAdapter, fishmask.New(fishmask.NewConfig()))
		if err != nil {
			t.Fatal(err)
		}
		m := a.Method.(*fishmask.Method)
		w := peft.SavePrefix + "model.layers.0.self_attn.k_proj.weight"
		st := map[string]*format.Tensor{
			w + sparse.SuffixIndices: {DType: "I64", Shape: []int{len(idx) / 8}, Data: idx},
			w + sparse.SuffixShape:   {DType: "I64", Shape: []int{len(shape) / 8}, Data: shape},
			w + sparse.SuffixBase:    {DType: "I64", Shape: []int{len(hash) / 8}, Data: hash},
			w + sparse.SuffixValues:  {DType: "F32", Shape: []int{len(vals) / 4}, Data: vals[:len(vals)/4*4]},
		}
		_ = m.LoadTensors(pm, a, st, "fuzz")
	})
}
