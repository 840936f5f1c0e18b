package tensor

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Why the frozen weights live outside Go's heap: the collector lets the
// heap grow by GOGC percent of everything live before it collects again.
// A model's weights are most of what is live and never become garbage, so
// on the heap they buy that much more room for garbage: at gopeft's GOGC of
// 50, half a gigabyte of a training step's dead activations for a 1 GB
// model (tinyllama-1.1B in NF4 peaked at 1.42 GiB with gradient
// checkpointing; GOGC=20 alone brought it to 1.15 GiB). Held in memory the
// process maps itself, as PyTorch's weights sit in malloc's, they are
// outside the collector's accounting and its headroom is a share of the
// step's own allocations only.

// offHeapMin is the smallest storage worth a mapping of its own (a mapping
// is whole pages; the norms' vectors stay on the heap).
const offHeapMin = 64 << 10

// mapping owns the anonymous memory a tensor's storage was moved to. Every
// Tensor sharing the storage (Reshape's views) points to it, and the memory
// is unmapped once none does.
type mapping struct {
	regions [][]byte
	bytes   int64
}

var offHeapBytes atomic.Int64

// OffHeapBytes is the storage currently held outside the heap by OffHeap.
func OffHeapBytes() int64 { return offHeapBytes.Load() }

// StorageSharer is a Quantized source that shares its codes with the
// kernels' form (Q4.Packed, Q8.CB and Q8.SCB; quant's Tensor4 and Int8):
// OffHeap calls ShareStorage after moving them so that the source points
// at the moved storage and one copy remains.
type StorageSharer interface {
	ShareStorage(t *Tensor)
}

// OffHeap moves t's storage (float32, bf16, or the quantized codes and
// scales) of at least 64 KiB into anonymous memory mappings outside the
// garbage-collected heap, and returns t. The values do not change. The
// memory is released when neither t nor a view of it (Reshape) is
// reachable any more, so a slice of its storage must not be kept beyond
// the tensor: keep the tensor. Where the system has no anonymous mappings
// it leaves t as it is.
func (t *Tensor) OffHeap() *Tensor {
	if t.mem != nil || t.StorageBytes() < offHeapMin || !canMap {
		return t
	}
	m := &mapping{}
	moveOff(m, &t.Data)
	moveOff(m, &t.Half)
	if t.Q4 != nil {
		moveOff(m, &t.Q4.Packed)
		moveOff(m, &t.Q4.Scales)
	}
	if t.Q8 != nil {
		moveOff(m, &t.Q8.CB)
		moveOff(m, &t.Q8.SCB)
	}
	if len(m.regions) == 0 {
		return t
	}
	if s, is := t.Quant.(StorageSharer); is {
		s.ShareStorage(t)
	}
	t.mem = m
	offHeapBytes.Add(m.bytes)
	runtime.AddCleanup(m, unmapAll, m.regions)
	return t
}

// IsOffHeap reports whether OffHeap moved t's storage (or the storage t is
// a view of).
func (t *Tensor) IsOffHeap() bool { return t.mem != nil }

// moveOff copies *s into a new mapping recorded in m and points *s at it;
// where the mapping fails, *s stays on the heap.
func moveOff[T any](m *mapping, s *[]T) {
	if len(*s) == 0 {
		return
	}
	var zero T
	n := len(*s) * int(unsafe.Sizeof(zero))
	b, err := mapAnon(n)
	if err != nil {
		return
	}
	d := unsafe.Slice((*T)(unsafe.Pointer(&b[0])), len(*s))
	copy(d, *s)
	*s = d
	m.regions = append(m.regions, b)
	m.bytes += int64(n)
}

func unmapAll(regions [][]byte) {
	var n int64
	for _, b := range regions {
		n += int64(len(b))
		unmap(b)
	}
	offHeapBytes.Add(-n)
}
