package data

import "fmt"

// IgnoreIndex is the label of a position that carries no loss (PyTorch's
// and Hugging Face's ignore_index).
const IgnoreIndex = -100

// Example is one training sequence.
//
// Labels is aligned with IDs (Hugging Face convention): Labels[t] is
// either IDs[t] or IgnoreIndex. The loss at position t scores the
// prediction of IDs[t] made from IDs[:t]; the trainer shifts, so Labels[0]
// is never used as a target.
type Example struct {
	IDs    []int
	Labels []int
	// Class is the sequence's class index for sequence classification (a
	// GLUE label): a trainer with a classification objective predicts it
	// from the last real token and ignores Labels. Language-model training
	// ignores it.
	Class int
	// Source locates the row for messages: "file:line" (JSONL, text), or
	// "file:line[index]" for an element of a JSON array.
	Source string
	// Segments, for a sequence that packs several examples (Pack), holds
	// their lengths in order; nil for a single example.
	Segments []int
}

// Targets returns the number of positions that carry a loss after the
// shift (labels other than IgnoreIndex at positions ≥ 1).
func (e Example) Targets() int {
	n := 0
	for t := 1; t < len(e.Labels); t++ {
		if e.Labels[t] != IgnoreIndex {
			n++
		}
	}
	return n
}

// Stats counts what a reader and the encoder did with a file's rows.
type Stats struct {
	Rows     int // records read (JSON elements, JSONL lines, documents)
	Examples int // examples produced
	// Invalid rows skipped under SkipInvalid; Errors keeps the first few
	// messages.
	Invalid int
	Errors  []string
	// Filtered rows left out on purpose: Alpaca rows whose "status" key is
	// not "ok" (alpaca-libre marks rejected generations that way).
	Filtered  int
	Truncated int // examples cut to MaxLen
	Dropped   int // examples with no response token left after truncation
	Tokens    int // tokens in all examples
	Targets   int // positions with a loss (see Example.Targets)
}

func (s Stats) String() string {
	return fmt.Sprintf("rows %d, examples %d, invalid %d, filtered %d, truncated %d, dropped %d, tokens %d, targets %d",
		s.Rows, s.Examples, s.Invalid, s.Filtered, s.Truncated, s.Dropped, s.Tokens, s.Targets)
}

// count adds ex to the totals.
func (s *Stats) count(ex Example) {
	s.Examples++
	s.Tokens += len(ex.IDs)
	s.Targets += ex.Targets()
}

// Batch pads examples on the right to the longest one and returns them as
// row-major [len(examples)][T] arrays: ids (padID at padding), labels
// (IgnoreIndex at padding) and mask (true at real tokens).
func Batch(examples []Example, padID int) (ids []int, labels []int, mask []bool, T int) {
	for _, e := range examples {
		T = max(T, len(e.IDs))
	}
	ids, labels, mask = pad(examples, padID, T)
	return ids, labels, mask, T
}

// BatchTo is Batch with a fixed width T; an example longer than T is an
// error (truncate with MaxLen or SeqLen upstream).
func BatchTo(examples []Example, padID, T int) (ids []int, labels []int, mask []bool, err error) {
	for i, e := range examples {
		if len(e.IDs) > T {
			return nil, nil, nil, fmt.Errorf("data: example %d (%s) has %d tokens, more than the batch width %d", i, e.Source, len(e.IDs), T)
		}
	}
	ids, labels, mask = pad(examples, padID, T)
	return ids, labels, mask, nil
}

func pad(examples []Example, padID, T int) (ids []int, labels []int, mask []bool) {
	n := len(examples) * T
	ids, labels, mask = make([]int, n), make([]int, n), make([]bool, n)
	for i, e := range examples {
		row := i * T
		for t := 0; t < T; t++ {
			if t < len(e.IDs) {
				ids[row+t] = e.IDs[t]
				labels[row+t] = IgnoreIndex
				if t < len(e.Labels) {
					labels[row+t] = e.Labels[t]
				}
				mask[row+t] = true
			} else {
				ids[row+t] = padID
				labels[row+t] = IgnoreIndex
			}
		}
	}
	return ids, labels, mask
}

// Order returns a permutation of 0..n-1 for the given epoch. It is a pure
// function of its arguments (its own generator, not math/rand), so a run
// resumed at (epoch, step) sees exactly the order it would have seen.
func Order(n int, seed uint64, epoch int) []int {
	if n <= 0 {
		return []int{}
	}
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	r := splitMix{state: seed ^ (uint64(epoch)+1)*0x9E3779B97F4A7C15}
	r.next() // decorrelate nearby seeds
	for i := n - 1; i > 0; i-- {
		j := int(r.below(uint64(i + 1)))
		p[i], p[j] = p[j], p[i]
	}
	return p
}

// splitMix is SplitMix64 (Steele, Lea and Flood 2014).
type splitMix struct{ state uint64 }

func (r *splitMix) next() uint64 {
	r.state += 0x9E3779B97F4A7C15
	z := r.state
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// below returns a uniform value in [0, n) by rejection, without modulo bias.
func (r *splitMix) below(n uint64) uint64 {
	limit := -n % n // (2^64 - n) mod n: the values to reject at the bottom
	for {
		v := r.next()
		if v >= limit {
			return v % n
		}
	}
}
