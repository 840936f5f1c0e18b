package tokenizer

import (
	"slices"
	"sync"
	"testing"
)

// TestConcurrentEncode encodes from several goroutines at once (run with
// -race to check the word cache).
func TestConcurrentEncode(t *testing.T) {
	text := shakespeare(t, 4000)
	for _, p := range []string{tok512Path, spbpePath, gpt2Dir} {
		tok := loadShared(t, p)
		want := tok.Encode(text)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if got := tok.Encode(text); !slices.Equal(got, want) {
					t.Errorf("%s: concurrent Encode differs", p)
				}
			})
		}
		wg.Wait()
	}
}
