package data

import (
	"errors"
	"testing"
)

// checkParsed encodes what a parser returned and checks the invariants
// every example must keep.
func checkParsed(t *testing.T, convs []Conversation, st Stats, err error) {
	if err != nil {
		var re *RowError
		if !errors.As(err, &re) || re.File == "" {
			t.Fatalf("error %v (%T) is not a *RowError naming the file", err, err)
		}
		return
	}
	if st.Invalid > st.Rows || len(convs) > st.Rows {
		t.Fatalf("stats %+v for %d conversations", st, len(convs))
	}
	for _, tmpl := range Templates() {
		enc, err := NewEncoder(fakeTok{dummy: true}, mustLookup(t, tmpl), EncoderOptions{MaxLen: 64})
		if err != nil {
			t.Fatal(err)
		}
		var st Stats
		exs, err := enc.EncodeAll(convs, &st)
		if err != nil {
			t.Fatalf("%s: %v", tmpl, err)
		}
		for _, ex := range exs {
			if len(ex.IDs) > 64 || ex.Targets() == 0 {
				t.Fatalf("%s: %d tokens, %d targets", tmpl, len(ex.IDs), ex.Targets())
			}
			labelled(t, ex)
		}
		if st.Examples+st.Dropped != len(convs) {
			t.Fatalf("%s: stats %+v for %d conversations", tmpl, st, len(convs))
		}
	}
}

func FuzzAlpacaJSONL(f *testing.F) {
	f.Add([]byte(`{"instruction": "a", "input": "b", "output": "c"}`+"\n"+`{"instruction": "a", "output": 5}`), false)
	f.Add([]byte(`{"instruction": "a", "output": "b", "status": "ok", "history": [["q", "r"]]}`), true)
	f.Add([]byte(`[{"instruction": "a", "output": "b"}, {"instruction": null}]`), true)
	f.Add([]byte("[\n{\"instruction\": \"\\u00e9\", \"output\": \"\"},\n"), false)
	f.Add([]byte("\ufeff{\"instruction\": \"x\", \"output\": \"y\", \"system\": \"s\"}\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, skip bool) {
		convs, st, err := ParseAlpaca(data, "f.jsonl", skip)
		checkParsed(t, convs, st, err)
	})
}

func FuzzShareGPT(f *testing.F) {
	f.Add([]byte(`[{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}]}]`), false)
	f.Add([]byte(`{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "system": "x"}`+"\n"+`{"messages": [{"role": "user"}]}`), true)
	f.Add([]byte(`[{"conversations": [{"from": "gpt", "value": "a"}]}, {"conversations": 3}, 7]`), true)
	f.Add([]byte(`{"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}, {"from": "human", "value": "v"}]}`), false)
	f.Fuzz(func(t *testing.T, data []byte, skip bool) {
		convs, st, err := ParseShareGPT(data, "s.json", skip)
		checkParsed(t, convs, st, err)
	})
}

// FuzzLoadBytes runs format detection and the whole pipeline, text
// packing included.
func FuzzLoadBytes(f *testing.F) {
	f.Add([]byte(`{"prompt": "p", "completion": "c"}`), "x.jsonl", 8)
	f.Add([]byte(`[{"text": "hello"}]`), "c.json", 3)
	f.Add([]byte("plain text\nmore"), "t.txt", 4)
	f.Add([]byte(`[{"instruction": "i", "output": "o"}]`), "data", 1)
	f.Fuzz(func(t *testing.T, data []byte, name string, seqLen int) {
		if len(name) > 100 {
			return
		}
		d, err := LoadBytes(data, name, FormatAuto, fakeTok{}, Options{SeqLen: seqLen % 64, MaxLen: 32, SkipInvalid: true})
		if err != nil {
			return
		}
		for _, ex := range d.Examples {
			labelled(t, ex)
			if ex.Targets() == 0 {
				t.Fatalf("%s: example without targets", ex.Source)
			}
		}
	})
}
