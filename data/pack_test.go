package data

import (
	"slices"
	"strings"
	"testing"
)

// Pack fills sequences in order up to the length, keeps an over-long
// example alone, hides each later example's first label, and SegmentIDs
// numbers the tokens by example with padding after.
func TestPack(t *testing.T) {
	ex := func(src string, ids ...int) Example {
		return Example{IDs: ids, Labels: append([]int(nil), ids...), Source: src}
	}
	in := []Example{ex("a", 1, 2, 3), ex("b", 1, 4), ex("c", 1, 5, 6, 7), ex("d", 1, 8, 9, 10, 11, 12, 13), ex("e", 1, 9)}
	in[1].Labels[1] = IgnoreIndex // a prompt token
	got, err := Pack(in, 6)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("%d packed sequences, want 4: %+v", len(got), got)
	}
	if !slices.Equal(got[0].IDs, []int{1, 2, 3, 1, 4}) || !slices.Equal(got[0].Segments, []int{3, 2}) ||
		!slices.Equal(got[0].Labels, []int{1, 2, 3, IgnoreIndex, IgnoreIndex}) || got[0].Source != "a (+1 packed)" {
		t.Errorf("first pack %+v", got[0])
	}
	if !slices.Equal(got[1].IDs, []int{1, 5, 6, 7}) || got[1].Segments != nil || got[1].Source != "c" {
		t.Errorf("a pack of one example should be the example: %+v", got[1])
	}
	if len(got[2].IDs) != 7 || got[2].Segments != nil {
		t.Errorf("the over-long example should stay alone: %+v", got[2])
	}
	if got[0].Targets() != 2+0 {
		t.Errorf("targets %d: the second example's first token is not predicted from the first", got[0].Targets())
	}
	ids := SegmentIDs(got[:2], 6)
	if want := []int{0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 1}; !slices.Equal(ids, want) {
		t.Errorf("segment ids %v, want %v", ids, want)
	}
	if SegmentIDs(got[1:2], 4) != nil {
		t.Error("a batch without packed examples needs no segment ids")
	}
	if _, err := Pack(got, 6); err == nil || !strings.Contains(err.Error(), "packed already") {
		t.Errorf("packing twice: %v", err)
	}
	if _, err := Pack(in, 0); err == nil {
		t.Error("length 0 accepted")
	}
}
