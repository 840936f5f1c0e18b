package data

import "fmt"

// Pack concatenates consecutive examples into sequences of at most maxLen
// tokens, in order: an example joins the current sequence while it fits,
// and starts the next one otherwise (an example longer than maxLen stays
// alone, as it was). Each packed sequence records its examples' lengths in
// Segments, and the first label of every example after the first is
// IgnoreIndex, so nothing is trained to predict one example from another.
// This is what Hugging Face's DataCollatorWithFlattening does (labels
// -100 at each example's first token, position_ids restarting at 0); the
// model (llama.Input.Segments) keeps each example's attention and positions
// its own, so an example's loss is the one it has alone. Examples are
// packed as given: shuffle or sort them first for another grouping.
func Pack(examples []Example, maxLen int) ([]Example, error) {
	if maxLen < 1 {
		return nil, fmt.Errorf("data: Pack: sequence length %d, want at least 1", maxLen)
	}
	var out []Example
	var cur *Example
	for _, e := range examples {
		if len(e.Segments) > 0 {
			return nil, fmt.Errorf("data: Pack: example %s is packed already", e.Source)
		}
		if len(e.Labels) != len(e.IDs) {
			return nil, fmt.Errorf("data: Pack: example %s has %d labels for %d tokens", e.Source, len(e.Labels), len(e.IDs))
		}
		if len(e.IDs) == 0 {
			continue
		}
		if cur == nil || len(cur.IDs)+len(e.IDs) > maxLen {
			out = append(out, Example{Source: e.Source})
			cur = &out[len(out)-1]
		}
		labels := e.Labels
		if len(cur.IDs) > 0 {
			labels = append([]int{IgnoreIndex}, labels[1:]...)
		}
		cur.IDs = append(cur.IDs, e.IDs...)
		cur.Labels = append(cur.Labels, labels...)
		cur.Segments = append(cur.Segments, len(e.IDs))
	}
	for i := range out {
		if n := len(out[i].Segments); n > 1 {
			out[i].Source = fmt.Sprintf("%s (+%d packed)", out[i].Source, n-1)
		} else {
			out[i].Segments = nil
		}
	}
	return out, nil
}

// SegmentIDs gives every token of a batch padded to width T (Batch) the
// index of the packed example it belongs to, for llama.Input.Segments;
// padding takes the index after its sequence's last example. It returns
// nil when no example of the batch is packed.
func SegmentIDs(examples []Example, T int) []int {
	packed := false
	for _, e := range examples {
		packed = packed || len(e.Segments) > 0
	}
	if !packed {
		return nil
	}
	ids := make([]int, len(examples)*T)
	for b, e := range examples {
		lens := e.Segments
		if len(lens) == 0 {
			lens = []int{len(e.IDs)}
		}
		row := ids[b*T : (b+1)*T]
		t := 0
		for s, n := range lens {
			for range n {
				if t < T {
					row[t] = s
				}
				t++
			}
		}
		for ; t < T; t++ {
			row[t] = len(lens)
		}
	}
	return ids
}
