package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gopeft/gopeft/internal/shared"
)

// SIGTERM drains: the real binary, serving stories260K on loopback, stops
// accepting connections, lets the streams already running finish to their
// last token, and exits with status 0.
func TestServeSIGTERMDrains(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(exe)
	child.Env = append(os.Environ(), "GOPEFT_TEST_ARGS="+strings.Join([]string{"serve", "--model", model, "--host", "127.0.0.1", "--port", "0", "--max-batch", "4"}, "\x1f"))
	stderr, err := child.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	defer func() {
		select {
		case <-exited:
		default:
			child.Process.Kill()
		}
	}()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- child.Wait()
	}()
	waitLine := func(re *regexp.Regexp) []string {
		t.Helper()
		timeout := time.After(60 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the server exited before printing %q", re)
				}
				if m := re.FindStringSubmatch(l); m != nil {
					return m
				}
			case <-timeout:
				t.Fatalf("no line %q from the server in a minute", re)
			}
		}
	}
	base := "http://" + waitLine(regexp.MustCompile(`on http://(127\.0\.0\.1:\d+) `))[1]

	// Four long streams, each seen running.
	const n = 480
	type result struct {
		text, finish string
		tokens       int
		done         bool
		err          error
	}
	results := make([]result, 4)
	var wg sync.WaitGroup
	started := make(chan struct{}, len(results))
	for i := range results {
		b, _ := json.Marshal(map[string]any{"model": "stories260K", "prompt": "Once", "max_tokens": n, "ignore_eos": true, "stream": true})
		resp, err := http.Post(base+"/v1/completions", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			r := &results[i]
			sc := bufio.NewScanner(resp.Body)
			first := true
			for sc.Scan() {
				data, ok := strings.CutPrefix(sc.Text(), "data: ")
				if !ok {
					continue
				}
				if first {
					started <- struct{}{}
					first = false
				}
				if data == "[DONE]" {
					r.done = true
					break
				}
				var c struct {
					Choices []struct {
						Text   string  `json:"text"`
						Finish *string `json:"finish_reason"`
					} `json:"choices"`
					Usage map[string]int `json:"usage"`
				}
				if r.err = json.Unmarshal([]byte(data), &c); r.err != nil {
					return
				}
				for _, ch := range c.Choices {
					r.text += ch.Text
					if ch.Finish != nil {
						r.finish = *ch.Finish
					}
				}
				if c.Usage != nil {
					r.tokens = c.Usage["completion_tokens"]
				}
			}
			if first {
				started <- struct{}{}
			}
			if r.err == nil {
				r.err = sc.Err()
			}
		}()
	}
	for range results {
		<-started
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^gopeft_requests_running [1-9]`).Match(metrics) {
		t.Fatal("the streams ended before SIGTERM: the test proves nothing")
	}
	if err := child.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLine(regexp.MustCompile(`draining`))
	// New connections are refused once the drain has begun (it starts
	// just after the line: allow it a moment).
	c := &http.Client{Timeout: 5 * time.Second}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		resp, err := c.Get(base + "/health")
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Since(start) > 5*time.Second {
			t.Errorf("new requests are still answered (HTTP %d) 5 s after SIGTERM", resp.StatusCode)
			break
		}
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil || !r.done || r.finish != "length" || r.tokens != n {
			t.Errorf("stream %d after SIGTERM: err %v, [DONE] %v, finish %q, %d tokens (want %d)", i, r.err, r.done, r.finish, r.tokens, n)
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the server exited with %v after draining, want status 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Error("the server did not exit within a minute of draining")
	}
}
