package tokenizer

import (
	"strings"
	"sync"
)

// SentencePiece-style vocabularies have no piece in which a space mark
// ("▁", or " " in tokenizer.bin) follows another character: pieces may only
// start with spaces. Then no merge can cross a point where a space mark
// follows something else, so text can be cut there into chunks that are
// merged independently (and cached) with exactly the same result as
// merging the whole text at once. canSplitBefore checks a vocabulary for
// that property.
func canSplitBefore(mark string, pieces []string) bool {
	for _, p := range pieces {
		for i := 1; i < len(p); i++ {
			if strings.HasPrefix(p[i:], mark) && !strings.HasSuffix(p[:i], mark) {
				return false
			}
		}
	}
	return true
}

// splitBefore calls f for each chunk of s, cutting before every mark that
// follows something other than mark.
func splitBefore(s, mark string, f func(string)) {
	start := 0
	for i := 1; i < len(s); {
		j := strings.Index(s[i:], mark)
		if j < 0 {
			break
		}
		i += j
		if !strings.HasSuffix(s[start:i], mark) {
			f(s[start:i])
			start = i
		}
		i += len(mark)
	}
	if start < len(s) {
		f(s[start:])
	}
}

const (
	maxCachedWord   = 64      // longer words are not cached
	maxCacheEntries = 1 << 16 // the cache is emptied when it grows past this
)

// wordCache remembers the ids of short words; safe for concurrent use.
type wordCache struct {
	mu sync.Mutex
	m  map[string][]int
}

// encode appends the ids of w, computing them with enc on a cache miss.
func (c *wordCache) encode(w string, out []int, enc func(string) []int) []int {
	if len(w) > maxCachedWord {
		return append(out, enc(w)...)
	}
	c.mu.Lock()
	ids, ok := c.m[w]
	c.mu.Unlock()
	if ok {
		return append(out, ids...)
	}
	ids = enc(w)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCacheEntries {
		c.m = make(map[string][]int)
	}
	c.m[w] = ids
	c.mu.Unlock()
	return append(out, ids...)
}

func (c *wordCache) reset() {
	c.mu.Lock()
	c.m = nil
	c.mu.Unlock()
}
