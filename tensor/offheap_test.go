package tensor

import (
	"runtime"
	"testing"
	"time"
)

// OffHeap keeps every value, moves large storage only, shares the mapping
// with views, and gives the memory back once no view is reachable.
func TestOffHeap(t *testing.T) {
	if !canMap {
		t.Skip("no anonymous mappings on this system")
	}
	small := New(4, 4).OffHeap()
	if small.IsOffHeap() {
		t.Error("a 64-byte tensor was given a mapping of its own")
	}
	before := OffHeapBytes()
	x := New(256, 128)
	for i := range x.Data {
		x.Data[i] = float32(i) * 0.5
	}
	want := append([]float32(nil), x.Data...)
	x.OffHeap()
	if !x.IsOffHeap() {
		t.Fatal("a 128 KiB tensor stayed on the heap")
	}
	if got := OffHeapBytes() - before; got != int64(4*len(want)) {
		t.Errorf("OffHeapBytes grew by %d, want %d", got, 4*len(want))
	}
	for i, v := range x.Data {
		if v != want[i] {
			t.Fatalf("element %d is %v after the move, was %v", i, v, want[i])
		}
	}
	h := x.ToBF16().OffHeap()
	if !h.IsOffHeap() || len(h.Half) != len(want) {
		t.Errorf("bf16 storage: off heap %v, %d elements", h.IsOffHeap(), len(h.Half))
	}
	view := x.Reshape(128, 256).RowsView(2, 3)
	if !view.IsOffHeap() || view.Data[0] != want[2*256] {
		t.Errorf("a view of an off-heap tensor: off heap %v, first value %v, want %v", view.IsOffHeap(), view.Data[0], want[2*256])
	}
	x, h = nil, nil
	waitFor(t, func() bool { return OffHeapBytes()-before == int64(4*len(want)) }, "the bf16 copy's mapping is released while the view holds the float32 one")
	runtime.KeepAlive(view)
	view = nil
	waitFor(t, func() bool { return OffHeapBytes() == before }, "every mapping is released once no tensor or view is reachable")
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		runtime.GC()
		if ok() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Errorf("not so: %s (off heap now %d bytes)", what, OffHeapBytes())
}
