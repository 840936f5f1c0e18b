package quant

import (
	"testing"

	"github.com/gopeft/gopeft/tensor"
)

// Moving a quantized weight out of the heap leaves one copy of its codes:
// the writers' source (Tensor4, Int8) points at the moved storage, and
// the weight dequantizes to the same values.
func TestOffHeapSharesCodes(t *testing.T) {
	w := tensor.New(512, 512).Normal(tensor.NewRNG(3), 0, 0.02)
	for _, c := range []struct {
		kind   Kind
		double bool
	}{{KindNF4, false}, {KindNF4, true}, {KindInt8, false}} {
		q, err := QuantizeTensor(w, c.kind, c.double)
		if err != nil {
			t.Fatal(err)
		}
		want := q.ToF32().Data
		q.OffHeap()
		if !q.IsOffHeap() {
			t.Fatalf("%s: stayed on the heap", c.kind)
		}
		switch src := q.Quant.(type) {
		case *Tensor4:
			if &src.Packed[0] != &q.Q4.Packed[0] {
				t.Errorf("%s double %v: the source's codes are a second copy", c.kind, c.double)
			}
			if !c.double && &src.Absmax[0] != &q.Q4.Scales[0] {
				t.Errorf("%s: the source's absmax is a second copy", c.kind)
			}
		case *Int8:
			if &src.CB[0] != &q.Q8.CB[0] || &src.SCB[0] != &q.Q8.SCB[0] {
				t.Errorf("int8: the source's codes or scales are a second copy")
			}
		default:
			t.Fatalf("%s: source %T", c.kind, q.Quant)
		}
		for i, v := range q.ToF32().Data {
			if v != want[i] {
				t.Fatalf("%s double %v: element %d dequantizes to %v after the move, %v before", c.kind, c.double, i, v, want[i])
			}
		}
	}
}
