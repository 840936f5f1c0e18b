package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/tokenizer"
)

// runChat runs gopeft chat with stdin and returns stdout and stderr.
func runChat(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"chat"}, args...))
	err := root.Execute()
	return out.String(), errOut.String(), err
}

// greedyAnswer is what the chat should answer to conv's last user message:
// the greedy continuation of the template's prompt for the whole
// conversation, as the chat streams it.
func greedyAnswer(t *testing.T, m *llama.Model, tok tokenizer.Tokenizer, tmpl *data.Template, conv data.Conversation, n int) string {
	t.Helper()
	enc, err := data.NewEncoder(tok, tmpl, data.EncoderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids := enc.Prompt(conv)
	s := newStopStream(&bytes.Buffer{}, tmpl.Stop)
	prev := ids[len(ids)-1]
	if _, err := m.Generate(context.Background(), ids, llama.GenerateOptions{MaxNewTokens: n}, func(id int) bool {
		more := s.write(tok.DecodeToken(prev, id))
		prev = id
		return more
	}); err != nil {
		t.Fatal(err)
	}
	return s.finish()
}

// gopeft chat answers each line of stdin on stdout, streaming, with the
// whole conversation as the prompt: the second answer is the greedy
// continuation of both turns rendered by the template. /reset forgets the
// history, and /exit ends the chat.
func TestChatThroughStdinStdout(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	const n = 24
	for _, name := range []string{"llama2", "chatml"} {
		out, info, err := runChat(t, "Tell me about a cat.\n\nWhat did it do?\n/reset\nWhat did it do?\n/exit\nnever read\n",
			"--model", model, "--template", name, "--temperature", "0", "-n", "24")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(info, "template "+name+" (--template)") || !strings.Contains(info, "a new conversation") {
			t.Errorf("%s: stderr %q", name, info)
		}
		m, tok, err := (&modelFlags{model: model}).loadWithTokenizer()
		if err != nil {
			t.Fatal(err)
		}
		tmpl, _ := data.LookupTemplate(name)
		first := greedyAnswer(t, m, tok, tmpl, data.Conversation{Turns: []data.Turn{{User: "Tell me about a cat."}}}, n)
		second := greedyAnswer(t, m, tok, tmpl, data.Conversation{Turns: []data.Turn{{User: "Tell me about a cat.", Assistant: first}, {User: "What did it do?"}}}, n)
		alone := greedyAnswer(t, m, tok, tmpl, data.Conversation{Turns: []data.Turn{{User: "What did it do?"}}}, n)
		if second == alone {
			t.Fatalf("%s: the history does not change the answer; the test proves nothing", name)
		}
		if want := first + "\n" + second + "\n" + alone + "\n"; out != want {
			t.Errorf("%s: stdout\n%q\nwant\n%q", name, out, want)
		}
	}
}

// The history is cut from the oldest turn when it outgrows the context,
// keeping the system prompt; a message too long alone is refused and the
// chat goes on.
func TestChatHistoryFitsTheContext(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	m, tok, err := (&modelFlags{model: model}).loadWithTokenizer()
	if err != nil {
		t.Fatal(err)
	}
	tmpl, _ := data.LookupTemplate("llama2")
	var info bytes.Buffer
	s, err := newChatSession(m, tok, tmpl, "Be kind.", llama.GenerateOptions{MaxNewTokens: 64}, &info)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("The cat sat on the mat. ", 8)
	for i := 0; i < 6; i++ {
		s.conv.Turns = append(s.conv.Turns, data.Turn{User: "Go on.", Assistant: long})
	}
	ids, room, err := s.prompt("And then?")
	if err != nil {
		t.Fatal(err)
	}
	ctxLen := m.Config.MaxPositionEmbeddings
	if len(ids)+16 > ctxLen || room < 16 || len(s.conv.Turns) >= 7 || !strings.Contains(info.String(), "dropped the") {
		t.Errorf("prompt of %d tokens with %d turns left and room for %d in %d; note %q", len(ids), len(s.conv.Turns), room, ctxLen, info.String())
	}
	if s.conv.Turns[len(s.conv.Turns)-1].User != "And then?" || !strings.Contains(tok.Decode(ids), "Be kind.") {
		t.Error("the new message or the system prompt was dropped")
	}
	s.reset()
	if _, _, err := s.prompt(strings.Repeat("cat ", 600)); err == nil || !strings.Contains(err.Error(), "shorter") {
		t.Errorf("a message longer than the context: %v", err)
	}
	if len(s.conv.Turns) != 0 {
		t.Error("the refused message stayed in the history")
	}
}

// Stop strings are never printed, even split across tokens; text that only
// looked like the start of one is printed once it is clear; leading
// whitespace is dropped.
func TestStopStream(t *testing.T) {
	for _, c := range []struct {
		pieces     []string
		want, text string
		stopped    bool
	}{
		{[]string{" ", " Hel", "lo <|im", "_end|>more"}, "Hello", "Hello", true},
		{[]string{"a \n", "b\n\n", " "}, "a \nb", "a \nb", false},
		{[]string{"a<", "|im_x", "b"}, "a<|im_xb", "a<|im_xb", false},
		{[]string{"x### Instr", "uction:", "y"}, "x", "x", true},
		{[]string{"ends with <|im_"}, "ends with <|im_", "ends with <|im_", false},
	} {
		var out bytes.Buffer
		s := newStopStream(&out, []string{"<|im_end|>", "### Instruction:"})
		stopped := false
		for _, p := range c.pieces {
			if !s.write(p) {
				stopped = true
				break
			}
		}
		text := s.finish()
		if out.String() != c.want || text != c.text || stopped != c.stopped {
			t.Errorf("%q: printed %q, answer %q, stopped %v; want %q, %q, %v", c.pieces, out.String(), text, stopped, c.want, c.text, c.stopped)
		}
	}
}

// Without --template the chat uses the adapter's training template: its
// recipe's data.template, else its format's default.
func TestChatTemplateFromAdapterRecipe(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ recipe, want string }{
		{"data: {path: x.json, format: alpaca}\n", "alpaca"},
		{"data: {path: x.json, format: sharegpt, template: chatml}\n", "chatml"},
		{"data: {path: x.txt, format: text}\n", "llama2"},
	} {
		os.WriteFile(filepath.Join(dir, "recipe.yaml"), []byte(c.recipe), 0o644)
		if got, _ := chatTemplate("", dir); got != c.want {
			t.Errorf("%q: template %s, want %s", c.recipe, got, c.want)
		}
	}
	if got, from := chatTemplate("plain", dir); got != "plain" || from != "--template" {
		t.Errorf("--template plain gave %s (%s)", got, from)
	}
	if _, _, err := runChat(t, "", "--model", "x", "--template", "nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown template: %v", err)
	}
}
