package tensor

import (
	"math"
	"strings"
	"testing"
)

func TestReshapeAndViewsShareStorage(t *testing.T) {
	x := New(2, 3, 4)
	for i := range x.Data {
		x.Data[i] = float32(i)
	}
	if x.Rows() != 6 || x.Cols() != 4 || x.Numel() != 24 {
		t.Fatalf("rows %d cols %d numel %d", x.Rows(), x.Cols(), x.Numel())
	}
	y := x.Reshape(6, -1)
	if y.Shape[1] != 4 {
		t.Fatalf("inferred shape %v", y.Shape)
	}
	y.Row(5)[3] = -1
	if x.Data[23] != -1 {
		t.Error("Reshape copied instead of sharing")
	}
	v := x.RowsView(2, 4)
	if v.Shape[0] != 2 || v.Data[0] != 8 {
		t.Errorf("RowsView(2,4) = shape %v first %v", v.Shape, v.Data[0])
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "[2 3 4]") {
			t.Errorf("bad reshape panic %v should name the shape", r)
		}
	}()
	x.Reshape(5, 5)
}

func TestBF16RoundTrip(t *testing.T) {
	x := FromData([]float32{1, -2.5, 3.14159, 1e-3, 65504, float32(math.Inf(1))}, 2, 3)
	h := x.ToBF16()
	if h.DType() != BF16 || h.Data != nil {
		t.Fatal("ToBF16 did not store bf16")
	}
	back := h.ToF32()
	for i, v := range x.Data {
		// bf16 keeps 8 significant bits: relative error at most 2^-9.
		if d := math.Abs(float64(back.Data[i] - v)); d > math.Abs(float64(v))/512 && !math.IsInf(float64(v), 0) {
			t.Errorf("%v -> %v: error %g", v, back.Data[i], d)
		}
	}
	if back.Data[0] != 1 || back.Data[1] != -2.5 || !math.IsInf(float64(back.Data[5]), 1) {
		t.Errorf("exactly representable values changed: %v", back.Data)
	}
}

func TestInitialisersAreSeededAndBounded(t *testing.T) {
	a := New(64, 300).KaimingUniform(NewRNG(7))
	b := New(64, 300).KaimingUniform(NewRNG(7))
	c := New(64, 300).KaimingUniform(NewRNG(8))
	bound := float32(1 / math.Sqrt(300)) // kaiming_uniform_(a=√5): 1/√fan_in
	var maxAbs float32
	same, diff := true, false
	for i := range a.Data {
		maxAbs = max(maxAbs, float32(math.Abs(float64(a.Data[i]))))
		same = same && a.Data[i] == b.Data[i]
		diff = diff || a.Data[i] != c.Data[i]
	}
	if !same || !diff {
		t.Errorf("same seed equal: %v, other seed differs: %v", same, diff)
	}
	if maxAbs > bound || maxAbs < 0.95*bound {
		t.Errorf("max |w| %v, want just under 1/√300 = %v", maxAbs, bound)
	}
	n := New(100000).Normal(NewRNG(1), 0, 0.02)
	var s, s2 float64
	for _, v := range n.Data {
		s += float64(v)
		s2 += float64(v) * float64(v)
	}
	mean := s / 1e5
	std := math.Sqrt(s2/1e5 - mean*mean)
	if math.Abs(mean) > 5e-4 || math.Abs(std-0.02) > 5e-4 {
		t.Errorf("Normal(0, 0.02): mean %v std %v", mean, std)
	}
}
