package tokenizer

import "testing"

func TestBytesRoundTrip(t *testing.T) {
	var tok Tokenizer = NewBytes()
	for _, s := range []string{"", "hello", "héllo ✓\n\t", "\x00\xff"} {
		ids := tok.Encode(s)
		if len(ids) != len(s) {
			t.Fatalf("%q: %d ids for %d bytes", s, len(ids), len(s))
		}
		for _, id := range ids {
			if id < 3 || id >= tok.VocabSize() {
				t.Fatalf("%q: id %d out of range", s, id)
			}
		}
		if got := tok.Decode(append([]int{tok.BOS()}, append(ids, tok.EOS())...)); got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
	}
	if id, ok := tok.TokenID("a"); !ok || id != 'a'+3 {
		t.Errorf("TokenID(a) = %d, %v", id, ok)
	}
}
