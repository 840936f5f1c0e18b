package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/internal/safefile"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/tokenizer"
)

// chatSession is a conversation with a model through a chat template: the
// turns so far, re-rendered as the prompt of every reply.
type chatSession struct {
	m    *llama.Model
	tok  tokenizer.Tokenizer
	enc  *data.Encoder
	opt  llama.GenerateOptions
	conv data.Conversation
	// info receives notes (turns dropped to fit the context).
	info io.Writer
}

func newChatSession(m *llama.Model, tok tokenizer.Tokenizer, tmpl *data.Template, system string, opt llama.GenerateOptions, info io.Writer) (*chatSession, error) {
	enc, err := data.NewEncoder(tok, tmpl, data.EncoderOptions{System: system})
	if err != nil {
		return nil, err
	}
	return &chatSession{m: m, tok: tok, enc: enc, opt: opt, info: info}, nil
}

// prompt adds the user's message as a new turn and returns the token ids
// the reply continues, with the number of new tokens the context leaves:
// the oldest turns are dropped (the system prompt stays) until the prompt
// and at least a quarter of MaxNewTokens (or all of it when smaller than 16)
// fit in the model's context.
func (c *chatSession) prompt(user string) ([]int, int, error) {
	c.conv.Turns = append(c.conv.Turns, data.Turn{User: user})
	ctxLen := c.m.Config.MaxPositionEmbeddings
	want := c.opt.MaxNewTokens
	if want >= 16 {
		want = max(16, want/4)
	}
	dropped := 0
	for {
		ids := c.enc.Prompt(c.conv)
		if len(ids)+want <= ctxLen || len(ids) < ctxLen && len(c.conv.Turns) == 1 {
			if dropped > 0 {
				fmt.Fprintf(c.info, "gopeft: dropped the %d oldest turn(s) to fit the model's context of %d tokens\n", dropped, ctxLen)
			}
			return ids, min(c.opt.MaxNewTokens, ctxLen-len(ids)), nil
		}
		if len(c.conv.Turns) == 1 {
			c.conv.Turns = c.conv.Turns[:0]
			return nil, 0, fmt.Errorf("the message takes %d tokens with the template, the model's context only %d: write a shorter one", len(ids), ctxLen)
		}
		c.conv.Turns = c.conv.Turns[1:]
		dropped++
	}
}

// reply answers the user's message, streaming the answer to w as it is
// generated, and keeps both in the history. Generation stops at EOS, at
// one of the template's stop strings (not printed), or after MaxNewTokens.
func (c *chatSession) reply(ctx context.Context, user string, w io.Writer) (string, error) {
	ids, n, err := c.prompt(user)
	if err != nil {
		return "", err
	}
	opt := c.opt
	opt.MaxNewTokens = n
	s := newStopStream(w, c.enc.Template().Stop)
	prev := ids[len(ids)-1]
	_, err = c.m.Generate(ctx, ids, opt, func(id int) bool {
		more := s.write(c.tok.DecodeToken(prev, id))
		prev = id
		return more
	})
	answer := s.finish()
	c.conv.Turns[len(c.conv.Turns)-1].Assistant = answer
	if err != nil {
		return answer, err
	}
	return answer, nil
}

// reset forgets the conversation.
func (c *chatSession) reset() { c.conv.Turns = nil }

// stopStream writes generated text as it comes, except leading and
// trailing whitespace (the template places the answer) and any tail that
// could begin a stop string, so that a stop string is never printed; it
// keeps the answer as printed.
type stopStream struct {
	w       io.Writer
	stops   []string
	text    strings.Builder // the answer so far, stop string excluded
	pending string          // held back: may begin a stop string
	started bool
	stopped bool
}

func newStopStream(w io.Writer, stops []string) *stopStream {
	var s []string
	for _, x := range stops {
		if x != "" {
			s = append(s, x)
		}
	}
	return &stopStream{w: w, stops: s}
}

// write adds a piece of text; it returns false once a stop string is seen.
func (s *stopStream) write(piece string) bool {
	if s.stopped {
		return false
	}
	if !s.started {
		piece = strings.TrimLeft(piece, " \t\r\n")
		if piece == "" {
			return true
		}
		s.started = true
	}
	s.pending += piece
	for _, stop := range s.stops {
		if i := strings.Index(s.pending, stop); i >= 0 {
			s.emit(strings.TrimRight(s.pending[:i], " \t\r\n"))
			s.pending, s.stopped = "", true
			return false
		}
	}
	hold := 0 // the longest tail that is a proper prefix of a stop string
	for _, stop := range s.stops {
		for n := min(len(stop)-1, len(s.pending)); n > hold; n-- {
			if strings.HasSuffix(s.pending, stop[:n]) {
				hold = n
				break
			}
		}
	}
	// Trailing whitespace waits too: the answer does not end with it.
	out := strings.TrimRight(s.pending[:len(s.pending)-hold], " \t\r\n")
	s.emit(out)
	s.pending = s.pending[len(out):]
	return true
}

func (s *stopStream) emit(t string) {
	if t == "" {
		return
	}
	s.text.WriteString(t)
	io.WriteString(s.w, t)
	if f, ok := s.w.(interface{ Flush() error }); ok {
		f.Flush()
	}
}

// finish writes what was held back, but for trailing whitespace, and
// returns the answer.
func (s *stopStream) finish() string {
	s.emit(strings.TrimRight(s.pending, " \t\r\n"))
	s.pending = ""
	return s.text.String()
}

// chatTemplate picks the template: --template, else the one the adapter
// was trained with (its recipe.yaml's data.template, or its data format's
// default), else llama2. It returns the name and where it came from.
func chatTemplate(name, adapter string) (string, string) {
	if name != "" {
		return name, "--template"
	}
	if adapter != "" {
		path := filepath.Join(adapter, "recipe.yaml")
		if b, err := safefile.ReadFile(path); err == nil {
			var r struct {
				Data struct{ Template, Format string }
			}
			if yaml.Unmarshal(b, &r) == nil {
				if r.Data.Template != "" {
					return r.Data.Template, path
				}
				if t := data.DefaultTemplate(r.Data.Format); t != "" {
					return t, path + " (format " + r.Data.Format + ")"
				}
			}
		}
	}
	return "llama2", "the default"
}

func newChatCmd() *cobra.Command {
	var mf modelFlags
	var templateName, system string
	var opt llama.GenerateOptions
	cmd := &cobra.Command{
		Use:   "chat",
		Short: "Chat with a model (and an adapter) in the terminal, through its chat template",
		Long: `chat reads one message per line from stdin and streams the model's answer to stdout.
The whole conversation is the prompt of every answer, rendered with the chat template (the
adapter's training template unless --template is given); when it outgrows the model's context
the oldest turns are dropped. /reset starts a new conversation, /exit (or end of input) quits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSampling(cmd, opt); err != nil {
				return err
			}
			if opt.MaxNewTokens < 1 {
				return fmt.Errorf("--max-new-tokens (-n) %d: must be at least 1", opt.MaxNewTokens)
			}
			name, from := chatTemplate(templateName, mf.adapter)
			tmpl, err := data.LookupTemplate(name)
			if err != nil {
				return fmt.Errorf("%s: %w", from, err)
			}
			m, tok, err := mf.loadWithTokenizer()
			if err != nil {
				return err
			}
			info := cmd.ErrOrStderr()
			s, err := newChatSession(m, tok, tmpl, system, opt, info)
			if err != nil {
				return err
			}
			fmt.Fprintf(info, "gopeft chat: template %s (%s), up to %d tokens an answer; /reset starts over, /exit quits\n", name, from, opt.MaxNewTokens)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
			defer stop()
			return chatLoop(ctx, s, cmd.InOrStdin(), cmd.OutOrStdout(), info)
		},
	}
	mf.register(cmd)
	mf.registerAdapter(cmd, "PEFT adapter directory to chat with")
	fl := cmd.Flags()
	fl.StringVar(&templateName, "template", "", "chat template: "+strings.Join(data.Templates(), ", ")+" (default: the adapter's training template, else llama2)")
	fl.StringVar(&system, "system", "", "system prompt (default: the template's)")
	fl.IntVarP(&opt.MaxNewTokens, "max-new-tokens", "n", 256, "most tokens in one answer")
	fl.Float64Var(&opt.Temperature, "temperature", 0.7, "sampling temperature; 0 is greedy")
	fl.IntVar(&opt.TopK, "top-k", 0, "sample among the K most likely tokens (0: all)")
	fl.Float64Var(&opt.TopP, "top-p", 0.9, "sample from the smallest set reaching probability P (1: all)")
	fl.Uint64Var(&opt.Seed, "seed", 42, "random seed for sampling")
	return cmd
}

// chatLoop reads messages line by line until end of input or /exit, and
// answers each; a message that cannot be answered (too long) is reported
// and the chat goes on.
func chatLoop(ctx context.Context, s *chatSession, in io.Reader, out, info io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	w := bufio.NewWriter(out)
	defer w.Flush()
	for {
		fmt.Fprint(info, "> ")
		if !sc.Scan() {
			fmt.Fprintln(info)
			return sc.Err()
		}
		line := strings.TrimSpace(sc.Text())
		switch line {
		case "":
			continue
		case "/exit", "/quit":
			return nil
		case "/reset":
			s.reset()
			fmt.Fprintln(info, "gopeft: a new conversation")
			continue
		}
		_, err := s.reply(ctx, line, w)
		fmt.Fprintln(w)
		w.Flush()
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if err != nil {
			fmt.Fprintf(info, "gopeft: %v\n", err)
		}
	}
}
