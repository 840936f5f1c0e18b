package data

import (
	"errors"
	"strings"
	"testing"
)

// wantRowErr checks that err is a *RowError at line (and element index,
// -1 for JSONL) whose text names the file and contains frag.
func wantRowErr(t *testing.T, err error, file string, line, index int, frag string) {
	t.Helper()
	var re *RowError
	if !errors.As(err, &re) {
		t.Fatalf("error %v (%T), want a *RowError", err, err)
	}
	if re.File != file || re.Line != line || re.Index != index {
		t.Errorf("error at %s line %d index %d, want %s line %d index %d (%v)", re.File, re.Line, re.Index, file, line, index, err)
	}
	if !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), frag) {
		t.Errorf("error %q does not name %q and %q", err, file, frag)
	}
}

func TestAlpacaJSONLErrors(t *testing.T) {
	good := `{"instruction": "a", "output": "b"}` + "\n"
	cases := []struct {
		row, frag string
	}{
		{`{"instruction": "a"}`, `missing key "output"`},
		{`{"instruction": "a", "output": 5}`, `key "output": want a string, got a number`},
		{`{"instruction": ["a"], "output": "b"}`, `key "instruction": want a string, got an array`},
		{`{"instruction": "a", "output": "b", "input": true}`, `key "input": want a string, got a boolean`},
		{`{"instruction": "a", "output": "b`, `invalid JSON`},
		{`[1, 2]`, `want a JSON object, got an array`},
		{`{"instruction": "a", "output": "b", "history": [["x"]]}`, `history`},
	}
	for _, c := range cases {
		data := good + "\n" + c.row + "\n" + good // the bad row is on line 3
		_, _, err := ParseAlpaca([]byte(data), "f.jsonl", false)
		wantRowErr(t, err, "f.jsonl", 3, -1, c.frag)
		if !strings.HasPrefix(err.Error(), "f.jsonl:3: ") {
			t.Errorf("error %q does not start with f.jsonl:3", err)
		}
		convs, st, err := ParseAlpaca([]byte(data), "f.jsonl", true)
		if err != nil || len(convs) != 2 || st.Invalid != 1 || st.Rows != 3 || len(st.Errors) != 1 {
			t.Errorf("SkipInvalid on %s: %d convs, stats %+v, err %v", c.row, len(convs), st, err)
		}
	}
}

func TestJSONArrayErrors(t *testing.T) {
	data := "[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"a\",\n   \"output\": null},\n  {\"instruction\": \"c\", \"output\": \"d\"}\n]\n"
	_, _, err := ParseAlpaca([]byte(data), "f.json", false)
	wantRowErr(t, err, "f.json", 3, 1, `missing key "output"`)
	if !strings.Contains(err.Error(), "element 1 (line 3)") {
		t.Errorf("error %q", err)
	}
	convs, st, err := ParseAlpaca([]byte(data), "f.json", true)
	if err != nil || len(convs) != 2 || st.Invalid != 1 || convs[1].Source != "f.json:5[2]" {
		t.Errorf("SkipInvalid: %d convs, stats %+v, err %v, sources %v", len(convs), st, err, convs)
	}
	// Broken array syntax stops the parse even with SkipInvalid, naming
	// the line of the damage.
	broken := "[\n {\"instruction\": \"a\", \"output\": \"b\"},\n {\"instruction\": \"a\" \"output\": \"b\"}\n]"
	for _, skip := range []bool{false, true} {
		_, _, err = ParseAlpaca([]byte(broken), "f.json", skip)
		wantRowErr(t, err, "f.json", 3, -1, "invalid JSON")
	}
	_, _, err = ParseAlpaca([]byte("[\n{\"instruction\": \"a\", \"output\": \"b\"},\n"), "f.json", true)
	wantRowErr(t, err, "f.json", 3, -1, "end of file")
	convs, _, err = ParseAlpaca([]byte("\ufeff[{\"instruction\": \"a\", \"output\": \"b\"}]"), "bom.json", false)
	if err != nil || len(convs) != 1 {
		t.Errorf("JSON array after a byte-order mark: %d convs, %v", len(convs), err)
	}
	_, _, err = ParseAlpaca([]byte("[]\n{}"), "f.json", true)
	wantRowErr(t, err, "f.json", 1, -1, "after the top-level array")
}

func TestAlpacaStatusAndHistory(t *testing.T) {
	data := `{"instruction": "a", "output": "b", "status": "ok"}
{"instruction": "a", "output": "b", "status": "too short"}
{"instruction": "q2", "input": "in", "output": "a2", "system": "S", "history": [["q1", "a1"]], "answer": "x"}
`
	convs, st, err := ParseAlpaca([]byte(data), "f.jsonl", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2 || st.Filtered != 1 || st.Rows != 3 {
		t.Fatalf("%d convs, stats %+v", len(convs), st)
	}
	c := convs[1]
	if c.System != "S" || len(c.Turns) != 2 || c.Turns[0] != (Turn{User: "q1", Assistant: "a1"}) ||
		c.Turns[1] != (Turn{User: "q2", Input: "in", Assistant: "a2"}) || c.Source != "f.jsonl:3" {
		t.Errorf("conversation %+v", c)
	}
}

func TestShareGPTParse(t *testing.T) {
	data := `[
 {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "u1"}, {"from": "gpt", "value": "a1"}, {"from": "human", "value": "u2"}, {"from": "gpt", "value": "a2"}]},
 {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "system": "T"}
]`
	convs, st, err := ParseShareGPT([]byte(data), "s.json", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2 || st.Rows != 2 {
		t.Fatalf("%d convs, %+v", len(convs), st)
	}
	if c := convs[0]; c.System != "S" || len(c.Turns) != 2 || c.Turns[1] != (Turn{User: "u2", Assistant: "a2"}) || c.Source != "s.json:2[0]" {
		t.Errorf("conv 0: %+v", c)
	}
	if c := convs[1]; c.System != "T" || len(c.Turns) != 1 || c.Turns[0] != (Turn{User: "u", Assistant: "a"}) {
		t.Errorf("conv 1: %+v", c)
	}

	bad := []struct{ row, frag string }{
		{`{"conversations": [{"from": "gpt", "value": "a"}]}`, "without a user message"},
		{`{"conversations": [{"from": "human", "value": "a"}]}`, "no answer"},
		{`{"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]}`, "two user messages"},
		{`{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": 3}]}`, `key "conversations[1].value": want a string, got a number`},
		{`{"conversations": [{"from": "human"}, {"from": "gpt", "value": "b"}]}`, `missing key "conversations[0].value"`},
		{`{"conversations": [{"from": "tool", "value": "a"}]}`, `unsupported role "tool"`},
		{`{"conversations": [{"from": "human", "value": "a"}, {"from": "system", "value": "b"}]}`, "first only"},
		{`{"conversations": {"from": "human"}}`, "want an array, got an object"},
		{`{"conversations": []}`, "no user and assistant"},
		{`{"conversations": [7]}`, "conversations[0]: want an object, got a number"},
		{`{"prompt": "x"}`, `missing key "conversations"`},
	}
	good := `{"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}`
	for _, b := range bad {
		data := good + "\n" + good + "\n" + b.row + "\n"
		_, _, err := ParseShareGPT([]byte(data), "s.jsonl", false)
		wantRowErr(t, err, "s.jsonl", 3, -1, b.frag)
		convs, st, err := ParseShareGPT([]byte(data), "s.jsonl", true)
		if err != nil || len(convs) != 2 || st.Invalid != 1 {
			t.Errorf("SkipInvalid on %s: %d convs, %+v, %v", b.row, len(convs), st, err)
		}
	}
}

func TestPromptCompletionParse(t *testing.T) {
	data := "{\"prompt\": \"p\", \"completion\": \" c\", \"id\": 4}\n\n{\"prompt\": \"p\"}\n"
	_, _, err := ParsePromptCompletion([]byte(data), "pc.jsonl", false)
	wantRowErr(t, err, "pc.jsonl", 3, -1, `missing key "completion"`)
	convs, st, err := ParsePromptCompletion([]byte(data), "pc.jsonl", true)
	if err != nil || len(convs) != 1 || st.Invalid != 1 || convs[0].Turns[0] != (Turn{User: "p", Assistant: " c"}) {
		t.Errorf("%+v %+v %v", convs, st, err)
	}
}

func TestParseText(t *testing.T) {
	docs, _, err := ParseText([]byte("one\n\ntwo\r\nthree"), "t.txt", DocsLines)
	if err != nil || len(docs) != 3 || docs[1].Text != "two" || docs[2].Source != "t.txt:4" {
		t.Errorf("lines: %+v %v", docs, err)
	}
	docs, _, _ = ParseText([]byte("one\ntwo\n"), "t.txt", DocsAuto)
	if len(docs) != 1 || docs[0].Text != "one\ntwo\n" {
		t.Errorf("auto on short lines: %+v", docs)
	}
	long := strings.Repeat("x", 600) + "\n" + strings.Repeat("y", 600) + "\n"
	if docs, _, _ = ParseText([]byte(long), "t.txt", DocsAuto); len(docs) != 2 {
		t.Errorf("auto on long lines: %d docs", len(docs))
	}
	if _, _, err = ParseText([]byte("x"), "t.txt", "paragraphs"); err == nil || !strings.Contains(err.Error(), "t.txt") {
		t.Errorf("bad mode: %v", err)
	}
	docs, _, err = ParseTextRecords([]byte("{\"text\": \"a\"}\n{\"text\": 1}\n"), "c.jsonl", true)
	if err != nil || len(docs) != 1 || docs[0].Source != "c.jsonl:1" {
		t.Errorf("records: %+v %v", docs, err)
	}
}
