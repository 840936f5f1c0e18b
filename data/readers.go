package data

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Each Parse function reads records from data, a JSON array of objects or
// JSONL (one object a line; see forEachRecord), naming the file name in
// errors. With skipInvalid, bad rows are counted in Stats.Invalid instead
// of stopping the parse; broken JSON array syntax always stops it.

// ParseAlpaca reads Alpaca rows: {"instruction", "input", "output"}, with
// "input" optional, and optional "system" (a system prompt) and "history"
// (earlier turns, [[user, answer], ...], as LLaMA-Factory reads them).
// Other keys ("answer", "similarity", ...) are ignored. A row with a
// "status" key whose value is not "ok" is left out and counted in
// Stats.Filtered (alpaca-libre marks rejected generations that way).
func ParseAlpaca(data []byte, name string, skipInvalid bool) ([]Conversation, Stats, error) {
	var st Stats
	var out []Conversation
	err := forEachRecord(data, name, skipInvalid, &st, func(p pos, o object) error {
		if status, ok, err := o.str(p, "status"); err != nil {
			return err
		} else if ok && status != "ok" {
			st.Filtered++
			return nil
		}
		var t Turn
		var err error
		if t.User, err = o.mustStr(p, "instruction"); err != nil {
			return err
		}
		if t.Input, _, err = o.str(p, "input"); err != nil {
			return err
		}
		if t.Assistant, err = o.mustStr(p, "output"); err != nil {
			return err
		}
		c := Conversation{Source: p.source()}
		if c.System, _, err = o.str(p, "system"); err != nil {
			return err
		}
		if o.has("history") {
			var hist [][]string
			if err := json.Unmarshal(o["history"], &hist); err != nil {
				return p.errorf("key %q: want an array of [user, answer] string pairs", "history")
			}
			for i, h := range hist {
				if len(h) != 2 {
					return p.errorf("key %q: entry %d has %d strings, want 2", "history", i, len(h))
				}
				c.Turns = append(c.Turns, Turn{User: h[0], Assistant: h[1]})
			}
		}
		c.Turns = append(c.Turns, t)
		out = append(out, c)
		return nil
	})
	return out, st, err
}

// ParseShareGPT reads conversations in ShareGPT form,
// {"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}, or
// OpenAI form, {"messages": [{"role": "user"|"assistant"|"system",
// "content": ...}]} (either key pair is accepted in either list). An
// optional row-level "system" string is the system prompt. A system
// message may come first only; then user and assistant messages must
// alternate, starting with the user and ending with the assistant. Other
// row keys are ignored.
func ParseShareGPT(data []byte, name string, skipInvalid bool) ([]Conversation, Stats, error) {
	var st Stats
	var out []Conversation
	err := forEachRecord(data, name, skipInvalid, &st, func(p pos, o object) error {
		key := "conversations"
		if !o.has(key) {
			key = "messages"
		}
		if !o.has(key) {
			return p.errorf("missing key %q (or %q)", "conversations", "messages")
		}
		var msgs []json.RawMessage
		if jsonKind(o[key]) != "an array" {
			return p.errorf("key %q: want an array, got %s", key, jsonKind(o[key]))
		}
		if err := json.Unmarshal(o[key], &msgs); err != nil {
			return p.errorf("key %q: %v", key, err)
		}
		c := Conversation{Source: p.source()}
		var err error
		if c.System, _, err = o.str(p, "system"); err != nil {
			return err
		}
		wantUser := true
		for i, raw := range msgs {
			mp := func(k string) string { return fmt.Sprintf("%s[%d].%s", key, i, k) }
			m, err := decodeObject(p, raw)
			if err != nil {
				return p.errorf("%s[%d]: want an object, got %s", key, i, jsonKind(raw))
			}
			// ShareGPT's from/value or OpenAI's role/content; a message
			// missing its text is reported under its style's key.
			roleKey, textKey := "from", "value"
			if !m.has("from") {
				roleKey, textKey = "role", "content"
			}
			if m.has("value") {
				textKey = "value"
			} else if m.has("content") {
				textKey = "content"
			}
			role, err := m.mustStrNamed(p, roleKey, mp(roleKey))
			if err != nil {
				return err
			}
			text, err := m.mustStrNamed(p, textKey, mp(textKey))
			if err != nil {
				return err
			}
			switch strings.ToLower(role) {
			case "system":
				if i != 0 {
					return p.errorf("%s: a system message may come first only", mp(roleKey))
				}
				c.System = text
			case "human", "user":
				if !wantUser {
					return p.errorf("%s: two user messages in a row", mp(roleKey))
				}
				c.Turns = append(c.Turns, Turn{User: text})
				wantUser = false
			case "gpt", "assistant", "chatgpt", "bing", "bard", "model":
				if wantUser {
					return p.errorf("%s: assistant message without a user message before it", mp(roleKey))
				}
				c.Turns[len(c.Turns)-1].Assistant = text
				wantUser = true
			default:
				return p.errorf("%s: unsupported role %q", mp(roleKey), role)
			}
		}
		if len(c.Turns) == 0 {
			return p.errorf("key %q: no user and assistant messages", key)
		}
		if !wantUser {
			return p.errorf("key %q: ends with a user message that has no answer", key)
		}
		out = append(out, c)
		return nil
	})
	return out, st, err
}

// ParsePromptCompletion reads {"prompt", "completion"} rows (optional
// "system"); other keys are ignored.
func ParsePromptCompletion(data []byte, name string, skipInvalid bool) ([]Conversation, Stats, error) {
	var st Stats
	var out []Conversation
	err := forEachRecord(data, name, skipInvalid, &st, func(p pos, o object) error {
		var t Turn
		var err error
		if t.User, err = o.mustStr(p, "prompt"); err != nil {
			return err
		}
		if t.Assistant, err = o.mustStr(p, "completion"); err != nil {
			return err
		}
		c := Conversation{Turns: []Turn{t}, Source: p.source()}
		if c.System, _, err = o.str(p, "system"); err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, st, err
}

// How ParseText splits a plain-text file into documents.
const (
	DocsAuto  = ""      // "lines" if the file has ≥ 512 bytes per non-empty line, else "file"
	DocsFile  = "file"  // the whole file is one document
	DocsLines = "lines" // each non-empty line is a document (wiki_demo.txt)
)

// ParseText reads plain text as documents (mode: DocsAuto, DocsFile or
// DocsLines). Invalid UTF-8 is kept as is: the tokenizer's byte fallback
// handles it.
func ParseText(data []byte, name, mode string) ([]Document, Stats, error) {
	var st Stats
	data = bytes.TrimPrefix(data, []byte("\ufeff"))
	if mode == DocsAuto {
		mode = DocsFile
		lines := 0
		for l := range bytes.SplitSeq(data, []byte{'\n'}) {
			if len(bytes.TrimSpace(l)) > 0 {
				lines++
			}
		}
		if lines > 0 && len(data)/lines >= 512 {
			mode = DocsLines
		}
	}
	var docs []Document
	switch mode {
	case DocsFile:
		if len(bytes.TrimSpace(data)) > 0 {
			docs = append(docs, Document{Text: string(data), Source: name + ":1"})
		}
	case DocsLines:
		for i, l := range bytes.Split(data, []byte{'\n'}) {
			l = bytes.TrimRight(l, "\r")
			if len(bytes.TrimSpace(l)) == 0 {
				continue
			}
			docs = append(docs, Document{Text: string(l), Source: pos{file: name, line: i + 1, index: -1}.source()})
		}
	default:
		return nil, st, &RowError{File: name, Index: -1, Msg: "unknown text document mode " + strconv.Quote(mode) + " (want \"file\" or \"lines\")"}
	}
	st.Rows = len(docs)
	return docs, st, nil
}

// ParseTextRecords reads documents from {"text": ...} rows (C4 JSONL);
// other keys are ignored.
func ParseTextRecords(data []byte, name string, skipInvalid bool) ([]Document, Stats, error) {
	var st Stats
	var out []Document
	err := forEachRecord(data, name, skipInvalid, &st, func(p pos, o object) error {
		text, err := o.mustStr(p, "text")
		if err != nil {
			return err
		}
		out = append(out, Document{Text: text, Source: p.source()})
		return nil
	})
	return out, st, err
}
