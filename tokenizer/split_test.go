package tokenizer

import (
	"slices"
	"testing"
)

// TestSplitBehaviors uses the example of the Hugging Face documentation
// for SplitDelimiterBehavior ("the-final--countdown" split on "-").
func TestSplitBehaviors(t *testing.T) {
	want := map[splitBehavior][]string{
		splitRemoved:            {"the", "final", "countdown"},
		splitIsolated:           {"the", "-", "final", "-", "-", "countdown"},
		splitMergedWithPrevious: {"the-", "final-", "-", "countdown"},
		splitMergedWithNext:     {"the", "-final", "-", "-countdown"},
		splitContiguous:         {"the", "-", "final", "--", "countdown"},
	}
	for b, w := range want {
		if got := splitWords([]string{"the-final--countdown"}, literalMatcher("-"), b); !slices.Equal(got, w) {
			t.Errorf("behavior %d: %q, want %q", b, got, w)
		}
	}
	digits := splitWords([]string{"ab123c4"}, digitsMatcher(false), splitIsolated)
	if !slices.Equal(digits, []string{"ab", "123", "c", "4"}) {
		t.Errorf("Digits: %q", digits)
	}
	single := splitWords([]string{"12"}, digitsMatcher(true), splitIsolated)
	if !slices.Equal(single, []string{"1", "2"}) {
		t.Errorf("Digits individual: %q", single)
	}
}

func TestMetaspaceStep(t *testing.T) {
	cases := []struct {
		scheme  string
		split   bool
		atStart bool
		in      []string
		want    []string
	}{
		{"always", true, true, []string{"Hey friend"}, []string{"▁Hey", "▁friend"}},
		{"always", false, false, []string{"Hey friend"}, []string{"▁Hey▁friend"}},
		{"first", false, false, []string{"Hey"}, []string{"Hey"}},
		{"first", false, true, []string{"Hey", "you"}, []string{"▁Hey", "you"}},
		{"never", true, true, []string{" a b"}, []string{"▁a", "▁b"}},
		{"always", false, true, []string{" a"}, []string{"▁a"}}, // no second ▁
	}
	for _, c := range cases {
		if got := metaspaceStep("▁", c.scheme, c.split)(slices.Clone(c.in), c.atStart); !slices.Equal(got, c.want) {
			t.Errorf("%s split=%v start=%v %q: %q, want %q", c.scheme, c.split, c.atStart, c.in, got, c.want)
		}
	}
}
