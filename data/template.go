package data

import (
	"fmt"
	"slices"
	"strings"
)

// PartKind says what a template Part is.
type PartKind int

const (
	TextPart PartKind = iota // literal text with placeholders
	BOSPart                  // the tokenizer's BOS id (nothing if it has none)
	EOSPart                  // the tokenizer's EOS id (nothing if it has none)
)

// Part is one piece of a chat template. Text may hold the placeholders
// {content} (the message) and, in UserWithInput, {input}.
type Part struct {
	Kind PartKind
	Text string
}

// Txt returns a text part.
func Txt(s string) Part { return Part{Kind: TextPart, Text: s} }

// The special-token parts.
var (
	BOS = Part{Kind: BOSPart}
	EOS = Part{Kind: EOSPart}
)

// Template is a chat template: the text and special tokens around each
// message. Everything rendered from User, UserWithInput, System, Prefix and
// Separator is prompt; everything from Assistant is response.
//
// A conversation renders as
//
//	Prefix, System(system) (unless SystemInFirstUser),
//	User(user₁), Assistant(answer₁), Separator, User(user₂), Assistant(answer₂), ...
//
// where Separator comes only between turns.
type Template struct {
	Name   string
	Prefix []Part
	// System wraps the system prompt; it is left out when the prompt is "".
	System []Part
	// SystemInFirstUser puts the rendered System text (which must be text
	// only) in front of the first user message, inside User's {content}
	// (LLaMA-2's <<SYS>> block sits inside the first [INST]).
	SystemInFirstUser bool
	User              []Part
	// UserWithInput, if set, renders a turn that has an Input (Alpaca's
	// "input" field); otherwise the input is appended to the user message
	// after a newline, as LLaMA-Factory's Alpaca converter does.
	UserWithInput []Part
	Assistant     []Part
	Separator     []Part
	// DefaultSystem is used when the conversation has no system prompt;
	// DefaultSystemWithInput instead when the first turn has an Input.
	DefaultSystem          string
	DefaultSystemWithInput string
	// Stop lists strings, besides EOS, at which generation should stop.
	Stop []string
}

// The built-in templates. Strings were checked against LLaMA-Factory's
// src/llamafactory/data/template.py (register_template "llama2", "alpaca",
// and the former "chatml"), Hugging Face's Llama-2-chat chat_template and
// Stanford Alpaca's train.py PROMPT_DICT; differences are noted per template.
var templates = map[string]*Template{
	// LLaMA-2 chat, as Meta's reference code and the Hugging Face
	// chat_template of Llama-2-*-chat render it:
	//   <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user2} [/INST] ...
	// LLaMA-Factory's "llama2" is the same without the space before </s>.
	"llama2": {
		Name:              "llama2",
		System:            []Part{Txt("<<SYS>>\n{content}\n<</SYS>>\n\n")},
		SystemInFirstUser: true,
		User:              []Part{BOS, Txt("[INST] {content} [/INST]")},
		Assistant:         []Part{Txt(" {content} "), EOS},
	},
	// ChatML (OpenAI; Qwen's format; LLaMA-Factory's former "chatml"):
	//   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n
	// For LLaMA vocabularies the markers are plain text; a tokenizer.json
	// that has them as added tokens encodes them as single ids. BOS starts
	// the sequence and EOS follows <|im_end|> (the Encoder leaves it out when
	// <|im_end|> already is the EOS id), so a generator stopping at EOS works.
	"chatml": {
		Name:      "chatml",
		Prefix:    []Part{BOS},
		System:    []Part{Txt("<|im_start|>system\n{content}<|im_end|>\n")},
		User:      []Part{Txt("<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n")},
		Assistant: []Part{Txt("{content}<|im_end|>"), EOS},
		Separator: []Part{Txt("\n")},
		Stop:      []string{"<|im_end|>"},
	},
	// Stanford Alpaca's prompts (PROMPT_DICT prompt_no_input / prompt_input)
	// with the response and EOS after "### Response:\n". LLaMA-Factory's
	// "alpaca" has the same no-input text but joins instruction and input
	// with "\n" instead of using the with-input preamble, and puts "\n\n"
	// after EOS; here "\n\n" separates turns only.
	"alpaca": {
		Name:                   "alpaca",
		Prefix:                 []Part{BOS},
		System:                 []Part{Txt("{content}")},
		User:                   []Part{Txt("### Instruction:\n{content}\n\n### Response:\n")},
		UserWithInput:          []Part{Txt("### Instruction:\n{content}\n\n### Input:\n{input}\n\n### Response:\n")},
		Assistant:              []Part{Txt("{content}"), EOS},
		Separator:              []Part{Txt("\n\n")},
		DefaultSystem:          "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n",
		DefaultSystemWithInput: "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n",
		Stop:                   []string{"### Instruction:"},
	},
	// Prompt and completion concatenated, as for base-model completion data
	// (LLaMA-Factory's "empty" plus BOS). A system prompt is prepended as is.
	"plain": {
		Name:      "plain",
		Prefix:    []Part{BOS},
		System:    []Part{Txt("{content}")},
		User:      []Part{Txt("{content}")},
		Assistant: []Part{Txt("{content}"), EOS},
	},
}

// Templates returns the names of the built-in templates, sorted.
func Templates() []string {
	names := make([]string, 0, len(templates))
	for n := range templates {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// LookupTemplate returns the built-in template of that name. The result is
// shared: copy it before changing it.
func LookupTemplate(name string) (*Template, error) {
	t, ok := templates[name]
	if !ok {
		return nil, fmt.Errorf("data: unknown chat template %q (have %s)", name, strings.Join(Templates(), ", "))
	}
	return t, nil
}

// RegisterTemplate adds or replaces a template under t.Name. Call it during
// start-up: the registry is not locked against concurrent Loads.
func RegisterTemplate(t *Template) error {
	if t == nil || t.Name == "" {
		return fmt.Errorf("data: RegisterTemplate: template needs a name")
	}
	if t.SystemInFirstUser {
		for _, p := range t.System {
			if p.Kind != TextPart {
				return fmt.Errorf("data: template %q: SystemInFirstUser needs a System of text parts only", t.Name)
			}
		}
	}
	templates[t.Name] = t
	return nil
}

// Turn is one exchange: a user message (with Alpaca's optional Input) and
// the assistant's answer.
type Turn struct {
	User      string
	Input     string
	Assistant string
}

// Conversation is one instruction-data record before tokenization.
type Conversation struct {
	System string
	Turns  []Turn
	Source string // file:line, as in Example.Source
}

// segment is a run of the rendered conversation: text or one special
// token, on the prompt or the response side.
type segment struct {
	kind     PartKind
	text     string
	response bool
}

// segments renders c. With promptOnly the last turn's answer is left out
// (the prompt for generation). system overrides c.System when not "".
func (t *Template) segments(c Conversation, system string, promptOnly bool) []segment {
	var out []segment
	emit := func(parts []Part, response bool, content, input string) {
		r := strings.NewReplacer("{content}", content, "{input}", input)
		for _, p := range parts {
			s := segment{kind: p.Kind, response: response}
			if p.Kind == TextPart {
				s.text = r.Replace(p.Text)
				if s.text == "" {
					continue
				}
			}
			// Merge adjacent text on the same side: fewer encode calls,
			// and no dummy-prefix spaces inside the prompt.
			if n := len(out); n > 0 && s.kind == TextPart && out[n-1].kind == TextPart && out[n-1].response == response {
				out[n-1].text += s.text
				continue
			}
			out = append(out, s)
		}
	}
	if system == "" {
		system = c.System
	}
	if system == "" {
		system = t.DefaultSystem
		if len(c.Turns) > 0 && c.Turns[0].Input != "" && t.DefaultSystemWithInput != "" {
			system = t.DefaultSystemWithInput
		}
	}
	emit(t.Prefix, false, "", "")
	var sysText string
	if system != "" {
		if t.SystemInFirstUser {
			r := strings.NewReplacer("{content}", system)
			for _, p := range t.System {
				sysText += r.Replace(p.Text)
			}
		} else {
			emit(t.System, false, system, "")
		}
	}
	for i, turn := range c.Turns {
		user := turn.User
		if i == 0 {
			user = sysText + user
		}
		switch {
		case turn.Input != "" && t.UserWithInput != nil:
			emit(t.UserWithInput, false, user, turn.Input)
		case turn.Input != "":
			emit(t.User, false, user+"\n"+turn.Input, "")
		default:
			emit(t.User, false, user, "")
		}
		if promptOnly && i == len(c.Turns)-1 {
			break
		}
		emit(t.Assistant, true, turn.Assistant, "")
		if i < len(c.Turns)-1 {
			emit(t.Separator, false, "", "")
		}
	}
	return out
}

// Render returns the conversation as text, with "<s>" and "</s>" standing
// for BOS and EOS: what the template means, before tokenization.
func (t *Template) Render(c Conversation) string {
	var sb strings.Builder
	for _, s := range t.segments(c, "", false) {
		switch s.kind {
		case BOSPart:
			sb.WriteString("<s>")
		case EOSPart:
			sb.WriteString("</s>")
		default:
			sb.WriteString(s.text)
		}
	}
	return sb.String()
}
