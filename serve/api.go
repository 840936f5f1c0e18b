package serve

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/tokenizer"
)

// MaxBodyBytes bounds a request body; a larger one gets HTTP 413.
const MaxBodyBytes = 8 << 20

// Server is the HTTP front of an Engine.
type Server struct {
	E *Engine
	// Name is the base model's name in the API (--served-model-name).
	Name string
	Tok  tokenizer.Tokenizer
	// RuntimeLoRA turns on /v1/load_lora_adapter and
	// /v1/unload_lora_adapter (off: HTTP 403), as vLLM's
	// VLLM_ALLOW_RUNTIME_LORA_UPDATING does: a client that may load an
	// adapter makes the server read a path of its choosing, and one that may
	// unload can take an adapter from everyone else.
	RuntimeLoRA bool
	created     int64
	mux         *http.ServeMux
}

// NewServer returns the API over e.
func NewServer(e *Engine, name string, tok tokenizer.Tokenizer) *Server {
	s := &Server{E: e, Name: name, Tok: tok, created: time.Now().Unix(), mux: http.NewServeMux()}
	s.mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	s.mux.HandleFunc("GET /v1/models", s.models)
	s.mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) { s.generate(w, r, false) })
	s.mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { s.generate(w, r, true) })
	s.mux.HandleFunc("POST /v1/load_lora_adapter", s.runtimeLoRA(s.loadAdapter))
	s.mux.HandleFunc("POST /v1/unload_lora_adapter", s.runtimeLoRA(s.unloadAdapter))
	s.mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		e.WritePrometheus(w)
	})
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(playground)
	})
	return s
}

//go:embed playground.html
var playground []byte

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// apiError writes an OpenAI-style error body.
func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": status}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body into v: 413 beyond MaxBodyBytes, 400 for
// malformed JSON or wrong types; unknown fields are ignored, as OpenAI
// ignores them.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	if err := json.NewDecoder(body).Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			apiError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", fmt.Sprintf("the request body exceeds %d bytes", MaxBodyBytes))
			return false
		}
		apiError(w, http.StatusBadRequest, "invalid_request_error", "invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	ctx := s.E.Model().Config.MaxPositionEmbeddings
	data := []map[string]any{{"id": s.Name, "object": "model", "created": s.created, "owned_by": "gopeft", "root": s.Name, "parent": nil, "max_model_len": ctx}}
	for _, a := range s.E.Adapters() {
		data = append(data, map[string]any{"id": a.Name, "object": "model", "created": a.Created.Unix(), "owned_by": "gopeft", "root": a.Dir, "parent": s.Name, "max_model_len": ctx})
	}
	writeJSON(w, map[string]any{"object": "list", "data": data})
}

// runtimeLoRA lets h run only when s.RuntimeLoRA is on.
func (s *Server) runtimeLoRA(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.RuntimeLoRA {
			apiError(w, http.StatusForbidden, "invalid_request_error",
				"loading and unloading adapters at run time is off: start the server with --allow-runtime-lora")
			return
		}
		h(w, r)
	}
}

func (s *Server) loadAdapter(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"lora_name"`
		Path string `json:"lora_path"`
	}
	if !decode(w, r, &req) {
		return
	}
	if req.Name == "" || req.Path == "" {
		apiError(w, http.StatusBadRequest, "invalid_request_error", "lora_name and lora_path are both required")
		return
	}
	if req.Name == s.Name {
		apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("%q is the base model's name", req.Name))
		return
	}
	if err := s.E.LoadAdapter(req.Name, req.Path); err != nil {
		apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf("loading adapter %q from %s: %v", req.Name, req.Path, err))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "Success: LoRA adapter '%s' added successfully.", req.Name)
}

func (s *Server) unloadAdapter(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"lora_name"`
	}
	if !decode(w, r, &req) {
		return
	}
	if err := s.E.UnloadAdapter(req.Name); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ErrUnknownModel) {
			status = http.StatusNotFound
		}
		apiError(w, status, "invalid_request_error", err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "Success: LoRA adapter '%s' removed successfully.", req.Name)
}

// genRequest is the body of both generation endpoints.
type genRequest struct {
	Model            string          `json:"model"`
	Prompt           json.RawMessage `json:"prompt"`
	Messages         []chatMessage   `json:"messages"`
	MaxTokens        *int            `json:"max_tokens"`
	MaxCompletion    *int            `json:"max_completion_tokens"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	TopK             *int            `json:"top_k"`
	Seed             *int64          `json:"seed"`
	Stop             json.RawMessage `json:"stop"`
	Stream           bool            `json:"stream"`
	IgnoreEOS        bool            `json:"ignore_eos"`
	N                *int            `json:"n"`
	StreamOptions    *struct{}       `json:"stream_options"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text is a message's content: a string, or OpenAI's list of parts whose
// "text" parts are joined.
func (m chatMessage) text() (string, error) {
	var s string
	if err := json.Unmarshal(m.Content, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", fmt.Errorf("a message's content must be a string or a list of text parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("content part of type %q: only text is supported", p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// ChatTemplate renders messages as the prompt of a model without a chat
// template of its own, as llama.cpp's server falls back on one: each
// message "Role: content" on its own line (the system message first as it
// is), then "Assistant:" for the model to continue.
func ChatTemplate(msgs []chatMessage) (string, error) {
	var b strings.Builder
	for _, m := range msgs {
		t, err := m.text()
		if err != nil {
			return "", err
		}
		switch m.Role {
		case "system", "developer":
			b.WriteString(t + "\n\n")
		case "user":
			b.WriteString("User: " + t + "\n")
		case "assistant":
			b.WriteString("Assistant: " + t + "\n")
		default:
			return "", fmt.Errorf("message role %q: want system, user or assistant", m.Role)
		}
	}
	b.WriteString("Assistant:")
	return b.String(), nil
}

// parsePrompt reads a completion prompt: a string, a list of one string,
// or a list of token ids.
func (s *Server) parsePrompt(raw json.RawMessage) ([]int, error) {
	bos := s.E.Model().Config.BOSTokenID
	var str string
	if err := json.Unmarshal(raw, &str); err == nil {
		return append([]int{bos}, s.Tok.Encode(str)...), nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		if len(strs) != 1 {
			return nil, fmt.Errorf("prompt: a list of %d prompts; gopeft takes one per request", len(strs))
		}
		return append([]int{bos}, s.Tok.Encode(strs[0])...), nil
	}
	var ids []int
	if err := json.Unmarshal(raw, &ids); err == nil && len(ids) > 0 {
		for _, id := range ids {
			if id < 0 || id >= s.E.Model().Config.VocabSize {
				return nil, fmt.Errorf("prompt: token id %d is outside the vocabulary of %d", id, s.E.Model().Config.VocabSize)
			}
		}
		return ids, nil
	}
	return nil, fmt.Errorf("prompt must be a string, a list of one string or a list of token ids")
}

func parseStop(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		if one == "" {
			return nil, nil
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("stop must be a string or a list of strings")
	}
	out := many[:0]
	for _, s := range many {
		if s != "" {
			out = append(out, s)
		}
	}
	return out, nil
}

// resolve maps the request's model to an adapter ("" for the base).
func (s *Server) resolve(model string) (string, bool) {
	if model == "" || model == s.Name {
		return "", true
	}
	return model, s.E.HasAdapter(model)
}

func (s *Server) generate(w http.ResponseWriter, r *http.Request, chat bool) {
	var req genRequest
	if !decode(w, r, &req) {
		return
	}
	bad := func(format string, args ...any) {
		apiError(w, http.StatusBadRequest, "invalid_request_error", fmt.Sprintf(format, args...))
	}
	adapter, ok := s.resolve(req.Model)
	if !ok {
		apiError(w, http.StatusNotFound, "NotFoundError", fmt.Sprintf("the model %q does not exist", req.Model))
		return
	}
	var prompt []int
	var err error
	if chat {
		if len(req.Messages) == 0 {
			bad("messages: at least one message is required")
			return
		}
		text, err := ChatTemplate(req.Messages)
		if err != nil {
			bad("messages: %v", err)
			return
		}
		prompt = append([]int{s.E.Model().Config.BOSTokenID}, s.Tok.Encode(text)...)
	} else {
		if len(req.Prompt) == 0 {
			bad("prompt is required")
			return
		}
		if prompt, err = s.parsePrompt(req.Prompt); err != nil {
			bad("%v", err)
			return
		}
	}
	if req.N != nil && *req.N != 1 {
		bad("n = %d: gopeft returns one choice per request", *req.N)
		return
	}
	ctxLen := s.E.Model().Config.MaxPositionEmbeddings
	if len(prompt) >= ctxLen {
		bad("the prompt is %d tokens, the model's context only %d: shorten the prompt", len(prompt), ctxLen)
		return
	}
	maxTokens := 16 // OpenAI's and vLLM's default for completions
	if chat {
		maxTokens = ctxLen - len(prompt)
	}
	if req.MaxCompletion != nil {
		req.MaxTokens = req.MaxCompletion
	}
	if req.MaxTokens != nil {
		if *req.MaxTokens <= 0 {
			bad("max_tokens = %d: must be at least 1", *req.MaxTokens)
			return
		}
		maxTokens = *req.MaxTokens
	}
	if len(prompt)+maxTokens > ctxLen {
		bad("this model's maximum context length is %d tokens; the prompt is %d tokens and max_tokens %d (%d in all)", ctxLen, len(prompt), maxTokens, len(prompt)+maxTokens)
		return
	}
	sp := llama.Sampling{Temperature: 1, TopP: 1}
	if req.Temperature != nil {
		sp.Temperature = *req.Temperature
	}
	if req.TopP != nil {
		if *req.TopP <= 0 {
			bad("top_p = %v: must be in (0, 1]", *req.TopP)
			return
		}
		sp.TopP = *req.TopP
	}
	if req.TopK != nil {
		sp.TopK = max(*req.TopK, 0) // vLLM: -1 (or 0) means all
	}
	if req.Seed != nil {
		sp.Seed = uint64(*req.Seed)
	} else {
		sp.Seed = randomSeed()
	}
	if err := sp.Validate(); err != nil {
		bad("%v", err)
		return
	}
	stops, err := parseStop(req.Stop)
	if err != nil {
		bad("%v", err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	job := &Request{Adapter: adapter, Prompt: prompt, MaxTokens: maxTokens, Sampling: sp, IgnoreEOS: req.IgnoreEOS}
	if err := s.E.Submit(ctx, job); err != nil {
		switch {
		case errors.Is(err, ErrQueueFull):
			apiError(w, http.StatusTooManyRequests, "rate_limit_error", err.Error())
		case errors.Is(err, ErrUnknownModel):
			apiError(w, http.StatusNotFound, "NotFoundError", fmt.Sprintf("the model %q does not exist", req.Model))
		case errors.Is(err, ErrClosed):
			apiError(w, http.StatusServiceUnavailable, "server_error", err.Error())
		default:
			bad("%v", err)
		}
		return
	}
	s.respond(w, r, job, &req, chat, stops)
}

// textStream turns tokens into text as `gopeft generate` prints them,
// cutting at a stop string and holding back what may be the start of one
// (and incomplete UTF-8) until it is known.
type textStream struct {
	tok   tokenizer.Tokenizer
	prev  int
	stops []string
	buf   string // text not yet released
	hit   bool
}

// add appends a token and returns the text that is now final.
func (t *textStream) add(id int) string {
	t.buf += t.tok.DecodeToken(t.prev, id)
	t.prev = id
	for _, s := range t.stops {
		if i := strings.Index(t.buf, s); i >= 0 {
			t.buf, t.hit = t.buf[:i], true
		}
	}
	if t.hit {
		return ""
	}
	keep := 0
	for _, s := range t.stops {
		for k := min(len(s)-1, len(t.buf)); k > keep; k-- {
			if strings.HasSuffix(t.buf, s[:k]) {
				keep = k
				break
			}
		}
	}
	n := len(t.buf) - keep
	for i := n - 1; i >= 0 && i >= n-utf8.UTFMax; i-- { // hold back a partial rune
		if utf8.RuneStart(t.buf[i]) {
			if !utf8.FullRuneInString(t.buf[i:n]) {
				n = i
			}
			break
		}
	}
	out := t.buf[:n]
	t.buf = t.buf[n:]
	return out
}

// flush releases what is left at the end.
func (t *textStream) flush() string { out := t.buf; t.buf = ""; return out }

func (s *Server) respond(w http.ResponseWriter, r *http.Request, job *Request, req *genRequest, chat bool, stops []string) {
	id := fmt.Sprintf("cmpl-%x", randomSeed())
	object := "text_completion"
	if chat {
		id, object = "chatcmpl-"+id[5:], "chat.completion"
	}
	model := req.Model
	if model == "" {
		model = s.Name
	}
	created := time.Now().Unix()
	ts := &textStream{tok: s.Tok, prev: job.Prompt[len(job.Prompt)-1], stops: stops}
	usage := func(n int) map[string]int {
		return map[string]int{"prompt_tokens": len(job.Prompt), "completion_tokens": n, "total_tokens": len(job.Prompt) + n}
	}
	choice := func(text string, finish any) map[string]any {
		c := map[string]any{"index": 0, "finish_reason": finish, "logprobs": nil}
		if chat {
			if req.Stream {
				c["delta"] = map[string]any{"content": text}
			} else {
				c["message"] = map[string]any{"role": "assistant", "content": text}
			}
		} else {
			c["text"] = text
		}
		return c
	}
	var flusher http.Flusher
	if req.Stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		flusher, _ = w.(http.Flusher)
		if chat {
			object = "chat.completion.chunk"
			first := map[string]any{"id": id, "object": object, "created": created, "model": model,
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "logprobs": nil, "finish_reason": nil}}}
			sse(w, first)
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
	var text strings.Builder
	n := 0
	finish := ""
	var failure error
	for ev := range job.Events {
		if ev.Done {
			finish, failure = ev.Finish, ev.Err
			break
		}
		n++
		piece := ts.add(ev.Token)
		if ts.hit {
			job.Cancel()
			finish = "stop"
		}
		if req.Stream && piece != "" {
			sse(w, map[string]any{"id": id, "object": object, "created": created, "model": model, "choices": []any{choice(piece, nil)}})
			if flusher != nil {
				flusher.Flush()
			}
		}
		text.WriteString(piece)
		if ts.hit {
			// The engine will end the sequence; no more text is wanted.
			go func() {
				for range job.Events {
				}
			}()
			break
		}
	}
	if !ts.hit {
		rest := ts.flush()
		text.WriteString(rest)
		if req.Stream && rest != "" {
			sse(w, map[string]any{"id": id, "object": object, "created": created, "model": model, "choices": []any{choice(rest, nil)}})
		}
	}
	if r.Context().Err() != nil {
		return // the client left
	}
	if failure != nil {
		status := http.StatusInternalServerError
		if errors.Is(failure, ErrUnknownModel) {
			status = http.StatusNotFound
		}
		if req.Stream {
			sse(w, map[string]any{"error": map[string]any{"message": failure.Error(), "type": "server_error", "code": status}})
			fmt.Fprint(w, "data: [DONE]\n\n")
			return
		}
		apiError(w, status, "server_error", failure.Error())
		return
	}
	if finish == "abort" {
		finish = "stop"
	}
	if req.Stream {
		sse(w, map[string]any{"id": id, "object": object, "created": created, "model": model, "choices": []any{choice("", finish)}, "usage": usage(n)})
		fmt.Fprint(w, "data: [DONE]\n\n")
		if flusher != nil {
			flusher.Flush()
		}
		return
	}
	writeJSON(w, map[string]any{"id": id, "object": object, "created": created, "model": model,
		"choices": []any{choice(text.String(), finish)}, "usage": usage(n)})
}

func sse(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "data: %s\n\n", b)
}
