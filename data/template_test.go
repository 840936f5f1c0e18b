package data

import (
	"slices"
	"strings"
	"testing"
)

var twoTurns = Conversation{
	System: "Be brief.",
	Turns: []Turn{
		{User: "Hi?", Assistant: "Hello."},
		{User: "2+2?", Assistant: "4"},
	},
}

func TestTemplateRender(t *testing.T) {
	cases := []struct {
		tmpl string
		conv Conversation
		want string
	}{
		{"llama2", twoTurns,
			"<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi? [/INST] Hello. </s><s>[INST] 2+2? [/INST] 4 </s>"},
		{"llama2", Conversation{Turns: []Turn{{User: "Hi?", Assistant: "Hello."}}},
			"<s>[INST] Hi? [/INST] Hello. </s>"},
		{"chatml", twoTurns,
			"<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|></s>\n" +
				"<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|></s>"},
		{"alpaca", Conversation{Turns: []Turn{{User: "Name a color.", Assistant: "Blue."}}},
			"<s>Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
				"### Instruction:\nName a color.\n\n### Response:\nBlue.</s>"},
		{"alpaca", Conversation{Turns: []Turn{{User: "Translate.", Input: "chat", Assistant: "cat"}}},
			"<s>Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n" +
				"### Instruction:\nTranslate.\n\n### Input:\nchat\n\n### Response:\ncat</s>"},
		{"plain", Conversation{Turns: []Turn{{User: "Once upon", Assistant: " a time"}}},
			"<s>Once upon a time</s>"},
		// Without UserWithInput the input joins the instruction after "\n".
		{"llama2", Conversation{Turns: []Turn{{User: "Translate.", Input: "chat", Assistant: "cat"}}},
			"<s>[INST] Translate.\nchat [/INST] cat </s>"},
	}
	for _, c := range cases {
		if got := mustLookup(t, c.tmpl).Render(c.conv); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.tmpl, got, c.want)
		}
	}
}

func TestTemplatesListAndLookup(t *testing.T) {
	names := Templates()
	for _, n := range []string{"alpaca", "chatml", "llama2", "plain"} {
		if !slices.Contains(names, n) {
			t.Errorf("Templates() = %v, missing %q", names, n)
		}
	}
	if _, err := LookupTemplate("nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("LookupTemplate(nope) error = %v", err)
	}
	if err := RegisterTemplate(&Template{Name: "bad", SystemInFirstUser: true, System: []Part{BOS}}); err == nil {
		t.Error("RegisterTemplate accepted a non-text system with SystemInFirstUser")
	}
	qa := &Template{Name: "test_qa", Prefix: []Part{BOS}, User: []Part{Txt("Q: {content}\nA:")}, Assistant: []Part{Txt(" {content}"), EOS}, Separator: []Part{Txt("\n")}}
	if err := RegisterTemplate(qa); err != nil {
		t.Fatal(err)
	}
	if got, want := mustLookup(t, "test_qa").Render(twoTurns), "<s>Q: Hi?\nA: Hello.</s>\nQ: 2+2?\nA: 4</s>"; got != want {
		t.Errorf("registered template renders %q, want %q", got, want)
	}
}

// The encoder's token stream, rendered back with markers, equals Render
// for a tokenizer without dummy prefix: the text is split only where the
// template says, and nothing is added or lost.
func TestEncodeMatchesRender(t *testing.T) {
	f := fakeTok{}
	for _, name := range Templates() {
		tm := mustLookup(t, name)
		enc, err := NewEncoder(f, tm, EncoderOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ex, _, ok, err := enc.Encode(twoTurns)
		if err != nil || !ok {
			t.Fatalf("%s: Encode: ok=%v err=%v", name, ok, err)
		}
		if got, want := f.render(ex.IDs), tm.Render(twoTurns); got != want {
			t.Errorf("%s: tokens render as\n%q\nRender gives\n%q", name, got, want)
		}
	}
}
