package data

import (
	"slices"
	"strings"
	"testing"
)

func newEnc(t testing.TB, f fakeTok, tmpl string, o EncoderOptions) *Encoder {
	t.Helper()
	enc, err := NewEncoder(f, mustLookup(t, tmpl), o)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// Response-only labels cover exactly the answers and the EOS after each.
func TestResponseOnlyLabels(t *testing.T) {
	f := fakeTok{}
	enc := newEnc(t, f, "chatml", EncoderOptions{})
	ex, trunc, ok, err := enc.Encode(twoTurns)
	if err != nil || !ok || trunc {
		t.Fatalf("Encode: ok=%v trunc=%v err=%v", ok, trunc, err)
	}
	got := f.render(labelled(t, ex))
	if want := "Hello.<|im_end|></s>4<|im_end|></s>"; got != want {
		t.Errorf("labelled tokens %q, want %q", got, want)
	}
	// The labelled positions are contiguous runs ending in EOS.
	if ex.Labels[len(ex.Labels)-1] != 2 {
		t.Errorf("last label %d, want EOS", ex.Labels[len(ex.Labels)-1])
	}
	if ex.Labels[0] != IgnoreIndex || ex.IDs[0] != 1 {
		t.Errorf("position 0: id %d label %d, want BOS and no label", ex.IDs[0], ex.Labels[0])
	}
	if n := ex.Targets(); n != len(labelled(t, ex)) {
		t.Errorf("Targets() = %d, want %d", n, len(labelled(t, ex)))
	}

	all := newEnc(t, f, "chatml", EncoderOptions{TrainOnPrompt: true})
	ex2, _, _, _ := all.Encode(twoTurns)
	if !slices.Equal(ex2.IDs, ex.IDs) || !slices.Equal(ex2.Labels, ex2.IDs) {
		t.Errorf("TrainOnPrompt: labels %v, want the ids %v", ex2.Labels, ex2.IDs)
	}
}

// With a SentencePiece-style tokenizer the separately encoded answer gets
// the dummy space, and llama2's " {answer}" is not doubled.
func TestDummyPrefix(t *testing.T) {
	f := fakeTok{dummy: true}
	enc := newEnc(t, f, "llama2", EncoderOptions{})
	ex, _, _, err := enc.Encode(Conversation{Turns: []Turn{{User: "Hi?", Assistant: "Hello."}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.render(ex.IDs), "<s> [INST] Hi? [/INST] Hello. </s>"; got != want {
		t.Errorf("llama2 tokens %q, want %q", got, want)
	}
	if got := f.Decode(labelled(t, ex)); got != "Hello. " {
		t.Errorf("decoded answer %q", got)
	}
	enc = newEnc(t, f, "alpaca", EncoderOptions{})
	ex, _, _, _ = enc.Encode(Conversation{Turns: []Turn{{User: "Name a color.", Assistant: "Blue."}}})
	// The prompt is one encode call (one dummy space at its start); the
	// answer another.
	want := "<s> Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
		"### Instruction:\nName a color.\n\n### Response:\n Blue.</s>"
	if got := f.render(ex.IDs); got != want {
		t.Errorf("alpaca tokens\n%q\nwant\n%q", got, want)
	}
}

func TestTruncation(t *testing.T) {
	f := fakeTok{}
	conv := Conversation{Turns: []Turn{{User: "abcd", Assistant: "xyz"}}, Source: "t:1"}
	full, _, _, _ := newEnc(t, f, "plain", EncoderOptions{}).Encode(conv)
	if len(full.IDs) != 9 { // BOS abcd xyz EOS
		t.Fatalf("plain length %d, want 9", len(full.IDs))
	}
	for _, c := range []struct {
		maxLen          int
		trunc, ok       bool
		labelledWantLen int
	}{
		{0, false, true, 4}, {9, false, true, 4}, {8, true, true, 3}, {6, true, true, 1}, {5, true, false, 0}, {2, true, false, 0},
	} {
		ex, trunc, ok, err := newEnc(t, f, "plain", EncoderOptions{MaxLen: c.maxLen}).Encode(conv)
		if err != nil {
			t.Fatal(err)
		}
		if trunc != c.trunc || ok != c.ok {
			t.Errorf("MaxLen %d: truncated=%v ok=%v, want %v %v", c.maxLen, trunc, ok, c.trunc, c.ok)
		}
		if c.maxLen > 0 && len(ex.IDs) > c.maxLen {
			t.Errorf("MaxLen %d: %d tokens", c.maxLen, len(ex.IDs))
		}
		if n := len(labelled(t, ex)); n != c.labelledWantLen {
			t.Errorf("MaxLen %d: %d labelled, want %d", c.maxLen, n, c.labelledWantLen)
		}
		if !slices.Equal(ex.IDs, full.IDs[:len(ex.IDs)]) {
			t.Errorf("MaxLen %d: not a prefix of the full example", c.maxLen)
		}
	}
	var st Stats
	exs, err := newEnc(t, f, "plain", EncoderOptions{MaxLen: 6}).EncodeAll([]Conversation{
		conv,
		{Turns: []Turn{{User: "abcdefgh", Assistant: "x"}}},
		{Turns: []Turn{{User: "a", Assistant: "x"}}},
	}, &st)
	if err != nil {
		t.Fatal(err)
	}
	if len(exs) != 2 || st.Truncated != 2 || st.Dropped != 1 || st.Examples != 2 {
		t.Errorf("EncodeAll: %d examples, stats %+v; want 2 examples, 2 truncated, 1 dropped", len(exs), st)
	}
}

func TestEOSNotDoubled(t *testing.T) {
	// A tokenizer whose EOS is the byte '!' (id '!'+3): the chatml-like
	// template's text already ends with it, so the EOS part adds nothing.
	f := eosBang{}
	tm := &Template{Name: "bang", User: []Part{Txt("{content}")}, Assistant: []Part{Txt("{content}!"), EOS}}
	enc, err := NewEncoder(f, tm, EncoderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ex, _, _, _ := enc.Encode(Conversation{Turns: []Turn{{User: "q", Assistant: "a"}}})
	if got := f.bytes(ex.IDs); got != "qa!" {
		t.Errorf("ids spell %q, want %q", got, "qa!")
	}
}

type eosBang struct{ fakeTok }

func (eosBang) EOS() int { return '!' + 3 }

func TestPrompt(t *testing.T) {
	f := fakeTok{}
	enc := newEnc(t, f, "llama2", EncoderOptions{MaxLen: 3})
	got := f.render(enc.Prompt(twoTurns))
	want := "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. </s><s>[INST] 2+2? [/INST]"
	if got != want {
		t.Errorf("Prompt = %q, want %q", got, want)
	}
	// The prompt is exactly the unlabelled head of the full example.
	full, _, _, _ := newEnc(t, f, "llama2", EncoderOptions{}).Encode(twoTurns)
	p := enc.Prompt(twoTurns)
	if !slices.Equal(full.IDs[:len(p)], p) {
		t.Error("Prompt is not a prefix of the encoded conversation")
	}
}

func TestEncoderErrors(t *testing.T) {
	if _, err := NewEncoder(nil, mustLookup(t, "plain"), EncoderOptions{}); err == nil {
		t.Error("nil tokenizer accepted")
	}
	if _, err := NewEncoder(fakeTok{}, mustLookup(t, "plain"), EncoderOptions{MaxLen: -1}); err == nil {
		t.Error("negative MaxLen accepted")
	}
	enc := newEnc(t, fakeTok{}, "plain", EncoderOptions{})
	if _, _, _, err := enc.Encode(Conversation{Source: "f.json:7"}); err == nil || !strings.Contains(err.Error(), "f.json:7") {
		t.Errorf("empty conversation: err = %v", err)
	}
}

func TestPackText(t *testing.T) {
	f := fakeTok{}
	docs := []Document{{Text: "abcdefg", Source: "a:1"}, {Text: "hij", Source: "a:2"}}
	var st Stats
	exs, err := PackText(docs, f, 4, &st)
	if err != nil {
		t.Fatal(err)
	}
	// Stream: <s>abcdefg<s>hij = 12 tokens; stride 3: [0,4) [3,7) [6,10) [9,12).
	want := []string{"<s>abc", "cdef", "fg<s>h", "hij"}
	if len(exs) != len(want) {
		t.Fatalf("%d windows, want %d", len(exs), len(want))
	}
	targets := 0
	for i, ex := range exs {
		if got := f.render(ex.IDs); got != want[i] {
			t.Errorf("window %d = %q, want %q", i, got, want[i])
		}
		if !slices.Equal(ex.IDs, ex.Labels) {
			t.Errorf("window %d: labels differ from ids", i)
		}
		targets += ex.Targets()
	}
	if targets != 11 || st.Targets != 11 || st.Examples != 4 || st.Tokens != 15 {
		t.Errorf("targets %d, stats %+v; want 11 targets (every token but the first), 4 examples, 15 tokens", targets, st)
	}
	if exs[2].Source != "a:1" || exs[3].Source != "a:2" {
		t.Errorf("sources %q %q", exs[2].Source, exs[3].Source)
	}
	if _, err := PackText(docs, f, 1, &st); err == nil {
		t.Error("seqLen 1 accepted")
	}
}

func TestSplitText(t *testing.T) {
	text := strings.Repeat("line of text\n", 100) // 1300 bytes
	tr, ev, err := SplitText(text, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	if tr+ev != text || !strings.HasSuffix(tr, "\n") || len(ev) < 117 || len(ev) > 130 {
		t.Errorf("split at %d of %d", len(tr), len(text))
	}
	tr, ev, _ = SplitText("ééééé", 0.5) // 10 bytes, cut at 5 is inside a character
	if tr+ev != "ééééé" || tr != "ééé" {
		t.Errorf("UTF-8 split: %q | %q", tr, ev)
	}
	if tr, ev, _ = SplitText("abc", 0); tr != "abc" || ev != "" {
		t.Errorf("fraction 0: %q | %q", tr, ev)
	}
	if tr, ev, _ = SplitText("abc", 1); tr != "" || ev != "abc" {
		t.Errorf("fraction 1: %q | %q", tr, ev)
	}
	if _, _, err := SplitText("abc", 1.5); err == nil {
		t.Error("fraction 1.5 accepted")
	}
	exs := make([]Example, 10)
	for i := range exs {
		exs[i].Source = string(rune('a' + i))
	}
	tre, eve, err := SplitExamples(exs, 0.25) // 2.5 rounds to 3
	if err != nil || len(tre) != 7 || len(eve) != 3 || eve[0].Source != "h" {
		t.Errorf("SplitExamples: %d + %d, %v", len(tre), len(eve), err)
	}
	if _, _, err := SplitExamples(exs, -0.1); err == nil {
		t.Error("SplitExamples accepted a negative fraction")
	}
}
