package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// gpt2Pattern is GPT-2's pre-tokenization regex (also ByteLevel's
// use_regex pattern in Hugging Face tokenizers).
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// splitBehavior says what happens to the matched parts of a Split.
type splitBehavior int

const (
	splitIsolated splitBehavior = iota
	splitRemoved
	splitMergedWithPrevious
	splitMergedWithNext
	splitContiguous
)

func parseBehavior(s string) (splitBehavior, bool) {
	switch s {
	case "Isolated", "isolated":
		return splitIsolated, true
	case "Removed", "removed":
		return splitRemoved, true
	case "MergedWithPrevious", "merged_with_previous":
		return splitMergedWithPrevious, true
	case "MergedWithNext", "merged_with_next":
		return splitMergedWithNext, true
	case "Contiguous", "contiguous":
		return splitContiguous, true
	}
	return 0, false
}

// matcher finds non-overlapping matches as byte ranges of s.
type matcher func(s string) [][2]int

// regexMatcher matches a pattern with lookahead, as the GPT-2 and LLaMA-3
// ones have (Go's regexp has none): a hand-written scanner for those two,
// regexp2 for others.
func regexMatcher(pattern string) (matcher, error) {
	if m := fastMatcher(pattern); m != nil {
		return m, nil
	}
	return regexp2Matcher(pattern)
}

// regexp2Matcher always uses regexp2.
func regexp2Matcher(pattern string) (matcher, error) {
	re, err := regexp2.Compile(pattern, regexp2.None)
	if err != nil {
		return nil, err
	}
	return func(s string) [][2]int {
		if s == "" {
			return nil
		}
		// regexp2 works on runes; []rune(s) turns each invalid byte into
		// one U+FFFD, exactly as utf8.DecodeRuneInString steps, so rune
		// offsets map back to byte offsets of the original string.
		runes := []rune(s)
		var out [][2]int
		ri, bi := 0, 0 // rune and byte cursor
		advance := func(to int) int {
			for ri < to {
				_, w := utf8.DecodeRuneInString(s[bi:])
				bi += w
				ri++
			}
			return bi
		}
		m, err := re.FindRunesMatch(runes)
		for err == nil && m != nil {
			if m.Length > 0 {
				start := advance(m.Index)
				end := advance(m.Index + m.Length)
				out = append(out, [2]int{start, end})
			}
			m, err = re.FindNextMatch(m)
		}
		return out
	}, nil
}

func literalMatcher(lit string) matcher {
	return func(s string) [][2]int {
		if lit == "" {
			return nil
		}
		var out [][2]int
		for i := 0; ; {
			j := strings.Index(s[i:], lit)
			if j < 0 {
				return out
			}
			out = append(out, [2]int{i + j, i + j + len(lit)})
			i += j + len(lit)
		}
	}
}

// digitsMatcher matches each digit, or each run of digits.
func digitsMatcher(individual bool) matcher {
	return func(s string) [][2]int {
		var out [][2]int
		for i, r := range s {
			if !unicode.IsNumber(r) {
				continue
			}
			end := i + utf8.RuneLen(r)
			if n := len(out); !individual && n > 0 && out[n-1][1] == i {
				out[n-1][1] = end
			} else {
				out = append(out, [2]int{i, end})
			}
		}
		return out
	}
}

// splitWords splits each word at the matches of m, as a Hugging Face
// Split pre-tokenizer with the given behaviour does; empty pieces are
// dropped.
func splitWords(words []string, m matcher, b splitBehavior) []string {
	out := make([]string, 0, len(words))
	for _, w := range words {
		out = splitOne(out, w, m(w), b)
	}
	return out
}

func splitOne(out []string, w string, ms [][2]int, b splitBehavior) []string {
	if b == splitContiguous {
		merged := ms[:0:0]
		for _, r := range ms {
			if n := len(merged); n > 0 && merged[n-1][1] == r[0] {
				merged[n-1][1] = r[1]
			} else {
				merged = append(merged, r)
			}
		}
		ms, b = merged, splitIsolated
	}
	add := func(s string) {
		if s != "" {
			out = append(out, s)
		}
	}
	prev := 0 // start of the text not yet emitted
	for _, r := range ms {
		switch b {
		case splitIsolated:
			add(w[prev:r[0]])
			add(w[r[0]:r[1]])
			prev = r[1]
		case splitRemoved:
			add(w[prev:r[0]])
			prev = r[1]
		case splitMergedWithPrevious:
			add(w[prev:r[1]])
			prev = r[1]
		case splitMergedWithNext:
			add(w[prev:r[0]])
			prev = r[0]
		}
	}
	add(w[prev:])
	return out
}

// preStep is one pre-tokenizer: it splits words further. atStart says the
// first word begins at the start of the input (Metaspace "first").
type preStep func(words []string, atStart bool) []string

func metaspaceStep(repl string, prepend string, split bool) preStep {
	return func(words []string, atStart bool) []string {
		out := words[:0:0]
		for i, w := range words {
			w = strings.ReplaceAll(w, " ", repl)
			if (prepend == "always" || (prepend == "first" && i == 0 && atStart)) && !strings.HasPrefix(w, repl) && w != "" {
				w = repl + w
			}
			if split {
				out = splitOne(out, w, literalMatcher(repl)(w), splitMergedWithNext)
			} else if w != "" {
				out = append(out, w)
			}
		}
		return out
	}
}
