package serve

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzAPI posts arbitrary bodies to the two generation endpoints of a
// server with adapters: whatever the body, the answer is never a 5xx and
// never a dropped connection (a panic in a handler would be either), and
// every 4xx carries an OpenAI error body.
func FuzzAPI(f *testing.F) {
	fx := getFixture(f)
	_, ts := start(f, fx, Config{MaxBatch: 4})
	for _, s := range []struct {
		chat bool
		body string
	}{
		{false, `{"model": "alpha", "prompt": "Once upon a time", "max_tokens": 4, "temperature": 0}`},
		{false, `{"model": "stories260K", "prompt": ["a", "b"], "max_tokens": 2, "stream": true}`},
		{false, `{"model": "beta", "prompt": [1, 2, 3], "max_tokens": 3, "stop": ["x", "y"], "seed": 7, "top_k": 2}`},
		{false, `{"model": "gamma", "prompt": "x", "max_tokens": 1e9}`},
		{false, `{"model": "alpha", "prompt": [-1]}`},
		{false, `{"model": "alpha", "prompt": "", "n": 3, "logprobs": 2}`},
		{true, `{"model": "alpha", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}`},
		{true, `{"model": "beta", "messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, {"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": true}`},
		{true, `{"model": "alpha", "messages": [{"role": "user", "content": null}]}`},
		{true, `{"messages": [{"role": "user"}], "temperature": "hot"}`},
		{true, `[1, 2`},
	} {
		f.Add(s.chat, s.body)
	}
	f.Fuzz(func(t *testing.T, chat bool, body string) {
		path := "/v1/completions"
		if chat {
			path = "/v1/chat/completions"
		}
		resp, err := http.Post(ts.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s %q: %v", path, body, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s %q: reading the answer: %v", path, body, err)
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %q: HTTP %d %s", path, body, resp.StatusCode, b)
		}
		if resp.StatusCode >= 400 && !strings.Contains(string(b), `"error"`) {
			t.Fatalf("%s %q: HTTP %d without an OpenAI error body: %s", path, body, resp.StatusCode, b)
		}
	})
}
