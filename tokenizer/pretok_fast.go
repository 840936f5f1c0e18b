package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// The GPT-2 and LLaMA-3 pre-tokenization patterns are by far the most used,
// and regexp2 spends most of the encoding time on them. For those two exact
// patterns these hand-written scanners give the same matches (checked
// against regexp2 by FuzzFastPreTokenizers); any other pattern goes to
// regexp2. Every position starts a match of both patterns, so each scanner
// only needs the end of the match starting at i.

// llama3Pattern is the LLaMA-3 (tiktoken cl100k-style) Split pattern.
const llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

func fastMatcher(pattern string) matcher {
	var end func(s string, i int) int
	switch pattern {
	case gpt2Pattern:
		end = gpt2End
	case llama3Pattern:
		end = llama3End
	default:
		return nil
	}
	return func(s string) [][2]int {
		out := make([][2]int, 0, len(s)/4+1)
		for i := 0; i < len(s); {
			e := end(s, i)
			out = append(out, [2]int{i, e})
			i = e
		}
		return out
	}
}

func runeAt(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// Character classes of the patterns; U+FFFD (from invalid UTF-8) is
// "other", as it is for regexp2, which sees the same rune.
func isL(r rune) bool {
	return r >= 0 && (r < utf8.RuneSelf && ('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') || r >= utf8.RuneSelf && unicode.IsLetter(r))
}
func isN(r rune) bool {
	return r >= 0 && (r < utf8.RuneSelf && '0' <= r && r <= '9' || r >= utf8.RuneSelf && unicode.IsNumber(r))
}
func isS(r rune) bool       { return r >= 0 && unicode.IsSpace(r) }
func isNewline(r rune) bool { return r == '\r' || r == '\n' }
func isOther(r rune) bool   { return r >= 0 && !isL(r) && !isN(r) && !isS(r) }

// run returns the end of the run of class members starting at i.
func run(s string, i int, class func(rune) bool) int {
	for {
		r, w := runeAt(s, i)
		if !class(r) {
			return i
		}
		i += w
	}
}

// contraction returns the end of 's 't 're 've 'm 'll 'd at i, or -1;
// fold makes it ASCII case-insensitive.
func contraction(s string, i int, fold bool) int {
	if s[i] != '\'' || i+1 >= len(s) {
		return -1
	}
	lower := func(c byte) byte {
		if fold && 'A' <= c && c <= 'Z' {
			return c + 'a' - 'A'
		}
		return c
	}
	switch lower(s[i+1]) {
	case 's', 't', 'm', 'd':
		return i + 2
	case 'r', 'v', 'l':
		if i+2 < len(s) {
			two := string([]byte{lower(s[i+1]), lower(s[i+2])})
			if two == "re" || two == "ve" || two == "ll" {
				return i + 3
			}
		}
	}
	return -1
}

// spaceEnd handles `\s+(?!\S)|\s+` at i (s[i] is whitespace): the run of
// whitespace, less its last character if a non-space follows and the run
// is longer than one.
func spaceEnd(s string, i int) int {
	k, last := i, i
	for {
		r, w := runeAt(s, k)
		if !isS(r) {
			break
		}
		last = k
		k += w
	}
	if k == len(s) || last == i {
		return k
	}
	return last
}

// gpt2End: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func gpt2End(s string, i int) int {
	if e := contraction(s, i, false); e > 0 {
		return e
	}
	j := i
	if s[i] == ' ' {
		j = i + 1
	}
	r, _ := runeAt(s, j)
	switch {
	case isL(r):
		return run(s, j, isL)
	case isN(r):
		return run(s, j, isN)
	case isOther(r):
		return run(s, j, isOther)
	}
	return spaceEnd(s, i)
}

// llama3End: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func llama3End(s string, i int) int {
	if e := contraction(s, i, true); e > 0 {
		return e
	}
	r, w := runeAt(s, i)
	if isL(r) {
		return run(s, i, isL)
	}
	if r != '\r' && r != '\n' && !isN(r) {
		if r2, _ := runeAt(s, i+w); isL(r2) {
			return run(s, i+w, isL)
		}
	}
	if isN(r) {
		e := i
		for n := 0; n < 3; n++ {
			r, w := runeAt(s, e)
			if !isN(r) {
				break
			}
			e += w
		}
		return e
	}
	j := i
	if r == ' ' {
		j = i + 1
	}
	if r2, _ := runeAt(s, j); isOther(r2) {
		return run(s, run(s, j, isOther), isNewline)
	}
	// \s*[\r\n]+: through the last newline of the whitespace run.
	nl := -1
	for k := i; ; {
		r, w := runeAt(s, k)
		if !isS(r) {
			break
		}
		if r == '\r' || r == '\n' {
			nl = k + 1
		}
		k += w
	}
	if nl > 0 {
		return nl
	}
	return spaceEnd(s, i)
}
