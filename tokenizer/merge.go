package tokenizer

// pairFunc reports whether the adjacent symbols a and b may merge, into
// which id, and with what priority (lower merges first).
type pairFunc func(a, b int) (merged int, prio float64, ok bool)

// candidate is a possible merge of the symbol at node pos with its right
// neighbour. left and right record the ids the two symbols had when the
// candidate was pushed, so stale candidates can be recognised when popped.
type candidate struct {
	prio        float64
	pos         int32
	left, right int32
	merged      int32
}

// less orders candidates by priority, then leftmost first: both llama2.c
// (highest score, first found) and Hugging Face BPE (lowest rank, then
// lowest position) break ties that way.
func (c candidate) less(d candidate) bool {
	if c.prio != d.prio {
		return c.prio < d.prio
	}
	return c.pos < d.pos
}

// candHeap is a binary min-heap; hand-written to avoid the interface calls
// of container/heap in the hot loop.
type candHeap []candidate

func (h *candHeap) push(c candidate) {
	*h = append(*h, c)
	s := *h
	i := len(s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !s[i].less(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *candHeap) pop() candidate {
	s := *h
	top := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && s[r].less(s[l]) {
			m = r
		}
		if !s[m].less(s[i]) {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// mergeSymbols applies pair merges to ids until none applies, always taking
// the best-priority (then leftmost) adjacent pair. It runs in O(n log n): the
// symbols form a linked list over ids' indices and candidates sit in a heap;
// a popped candidate is used only if both symbols still hold the ids it was
// made from (a symbol's text only grows, so its id never comes back).
// ids is modified and the merged sequence returned.
func mergeSymbols(ids []int, pair pairFunc) []int {
	n := len(ids)
	if n < 2 {
		return ids
	}
	next := make([]int32, n)
	prev := make([]int32, n)
	alive := make([]bool, n)
	for i := range n {
		next[i] = int32(i + 1)
		prev[i] = int32(i - 1)
		alive[i] = true
	}
	next[n-1] = -1
	h := make(candHeap, 0, n)
	try := func(l, r int32) {
		if l < 0 || r < 0 {
			return
		}
		if m, p, ok := pair(ids[l], ids[r]); ok {
			h.push(candidate{prio: p, pos: l, left: int32(ids[l]), right: int32(ids[r]), merged: int32(m)})
		}
	}
	for i := 0; i+1 < n; i++ {
		try(int32(i), int32(i+1))
	}
	for len(h) > 0 {
		c := h.pop()
		l := c.pos
		if !alive[l] || int32(ids[l]) != c.left {
			continue
		}
		r := next[l]
		if r < 0 || int32(ids[r]) != c.right {
			continue
		}
		ids[l] = int(c.merged)
		alive[r] = false
		next[l] = next[r]
		if next[r] >= 0 {
			prev[next[r]] = l
		}
		try(prev[l], l)
		try(l, next[l])
	}
	out := ids[:0]
	for i := 0; i >= 0 && i < n; i = int(next[i]) {
		out = append(out, ids[i])
	}
	return out
}
