package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// scrape reads /metrics and returns every sample by its name with labels,
// checking the text format: each sample's family has # HELP and # TYPE
// lines before it, and histogram buckets are cumulative and end at +Inf
// equal to _count.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q, want text/plain", ct)
	}
	out := map[string]float64{}
	help, typ := map[string]bool{}, map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if f, ok := strings.CutPrefix(line, "# HELP "); ok {
			help[strings.Fields(f)[0]] = true
			continue
		}
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			fs := strings.Fields(f)
			typ[fs[0]] = fs[1]
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("/metrics line %q is not a sample", line)
		}
		name, val := line[:i], line[i+1:]
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		family := name
		if j := strings.IndexByte(family, '{'); j >= 0 {
			family = family[:j]
		}
		if typ[family] == "" {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if f, ok := strings.CutSuffix(family, suf); ok && typ[f] == "histogram" {
					family = f
				}
			}
		}
		if !help[family] || typ[family] == "" {
			t.Errorf("/metrics sample %q comes without # HELP and # TYPE for %s", line, family)
		}
		out[name] = v
	}
	for family, kind := range typ {
		if kind != "histogram" {
			continue
		}
		prev := -1.0
		for _, le := range []string{"0.001", "0.01", "0.1", "1", "10", "+Inf"} {
			if v, ok := out[family+`_bucket{le="`+le+`"}`]; ok {
				if v < prev {
					t.Errorf("%s: bucket le=%s holds %v, fewer than a smaller bucket's %v", family, le, v, prev)
				}
				prev = v
			}
		}
		if inf := out[family+`_bucket{le="+Inf"}`]; inf != out[family+"_count"] {
			t.Errorf("%s: +Inf bucket %v, count %v", family, inf, out[family+"_count"])
		}
	}
	return out
}

// Every metric of /metrics, checked against a workload whose counts are
// known: requests by finish reason, 429s, prompt and generated tokens, the
// latency histograms' counts, batch sizes, adapter loads and LRU evictions,
// and the gauges (queue, batch, KV pool) while a request runs and after.
func TestMetricsEach(t *testing.T) {
	f := getFixture(t)
	// Three adapters loaded with room for two: loading gamma evicts alpha.
	e, ts := start(t, f, Config{MaxBatch: 2, MaxQueue: 1, MaxCPULoras: 2, KVBlocks: 200})
	m := scrape(t, ts.URL)
	want := map[string]float64{
		"gopeft_adapters_loaded": 2, "gopeft_adapter_loads_total": 3, "gopeft_adapter_evictions_total": 1,
		"gopeft_kv_cache_blocks_total": 200, "gopeft_kv_cache_blocks_used": 0, "gopeft_kv_cache_sequences": 0,
		"gopeft_requests_waiting": 0, "gopeft_requests_running": 0, "gopeft_requests_rejected_total": 0,
		"gopeft_request_errors_total": 0, `gopeft_requests_total{finish_reason="length"}`: 0,
		`gopeft_requests_total{finish_reason="stop"}`: 0, `gopeft_requests_total{finish_reason="abort"}`: 0,
		"gopeft_prompt_tokens_total": 0, "gopeft_generation_tokens_total": 0,
		"gopeft_time_to_first_token_seconds_count": 0, "gopeft_time_per_output_token_seconds_count": 0, "gopeft_batch_size_count": 0,
	}
	check := func(when string, m map[string]float64) {
		t.Helper()
		for k, v := range want {
			got, ok := m[k]
			if !ok {
				t.Errorf("%s: /metrics has no %s", when, k)
			} else if got != v {
				t.Errorf("%s: %s = %v, want %v", when, k, got, v)
			}
		}
	}
	check("at start", m)

	// Two requests one after the other (so the queue of one never
	// overflows): beta, then alpha, which was evicted (reloaded, evicting
	// the least recently used idle adapter).
	prompt, gen := 0, 0
	for _, model := range []string{"beta", "alpha"} {
		code, body := post(t, ts.URL+"/v1/completions", map[string]any{"model": model, "prompt": "Once upon a time", "max_tokens": 7, "ignore_eos": true})
		var r struct{ Usage map[string]int }
		if json.Unmarshal(body, &r); code != 200 || r.Usage["completion_tokens"] != 7 {
			t.Fatalf("%s: HTTP %d %s", model, code, body)
		}
		prompt += r.Usage["prompt_tokens"]
		gen += r.Usage["completion_tokens"]
	}
	waitEmpty(t, e)
	want[`gopeft_requests_total{finish_reason="length"}`] = 2
	want["gopeft_prompt_tokens_total"] = float64(prompt)
	want["gopeft_generation_tokens_total"] = float64(gen)
	want["gopeft_time_to_first_token_seconds_count"] = 2 // one first token per request
	want["gopeft_time_per_output_token_seconds_count"] = float64(gen - 2)
	want["gopeft_batch_size_count"] = float64(2 * 6) // six decode steps each, alone in the batch
	want["gopeft_adapter_loads_total"] = 4
	want["gopeft_adapter_evictions_total"] = 2
	m = scrape(t, ts.URL)
	check("after two requests", m)
	if s := m["gopeft_batch_size_sum"]; s != 12 {
		t.Errorf("gopeft_batch_size_sum = %v, want 12 (batches of one)", s)
	}
	if s := m["gopeft_time_to_first_token_seconds_sum"]; s <= 0 {
		t.Errorf("gopeft_time_to_first_token_seconds_sum = %v", s)
	}

	// Two long streams fill the batch of two; one more waits in the queue
	// of one; the rest get 429. The gauges show it; then every client
	// leaves and the requests end as aborts.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bodies []io.ReadCloser
	for range 3 {
		b, _ := json.Marshal(map[string]any{"model": "beta", "prompt": "x", "max_tokens": 400, "ignore_eos": true, "stream": true})
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions", bytes.NewReader(b))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("stream: %v %v", err, resp)
		}
		bodies = append(bodies, resp.Body)
		if len(bodies) < 3 {
			bufio.NewReader(resp.Body).ReadString('\n') // it runs
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.Running() != 2 || e.Waiting() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("running %d, waiting %d; want 2 and 1", e.Running(), e.Waiting())
		}
		time.Sleep(time.Millisecond)
	}
	var mu sync.Mutex
	rejected := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, _ := post(t, ts.URL+"/v1/completions", map[string]any{"model": "beta", "prompt": "y", "max_tokens": 2}); code == 429 {
				mu.Lock()
				rejected++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	m = scrape(t, ts.URL)
	for k, v := range map[string]float64{"gopeft_requests_running": 2, "gopeft_requests_waiting": 1, "gopeft_kv_cache_sequences": 2,
		"gopeft_requests_rejected_total": float64(rejected)} {
		if m[k] != v {
			t.Errorf("with the batch and queue full: %s = %v, want %v", k, m[k], v)
		}
	}
	if rejected != 4 {
		t.Errorf("%d of 4 requests beyond a full queue got 429", rejected)
	}
	// Each running sequence holds ⌈(prompt + 400)/16⌉ blocks, its prompt
	// two tokens at least.
	if used := m["gopeft_kv_cache_blocks_used"]; used < float64(2*((2+400+BlockSize-1)/BlockSize)) || used > 200 {
		t.Errorf("gopeft_kv_cache_blocks_used = %v with two running sequences of 400 new tokens", used)
	}
	cancel()
	for _, b := range bodies {
		b.Close()
	}
	waitEmpty(t, e)
	m = scrape(t, ts.URL)
	for k, v := range map[string]float64{`gopeft_requests_total{finish_reason="abort"}`: 3, "gopeft_requests_running": 0, "gopeft_requests_waiting": 0,
		"gopeft_kv_cache_sequences": 0, "gopeft_kv_cache_blocks_used": 0, "gopeft_requests_rejected_total": 4, "gopeft_request_errors_total": 0} {
		if m[k] != v {
			t.Errorf("after the clients left: %s = %v, want %v", k, m[k], v)
		}
	}
	if m["gopeft_batch_size_sum"]/m["gopeft_batch_size_count"] <= 1 {
		t.Errorf("batch sizes: sum %v over %d steps, want some steps of two", m["gopeft_batch_size_sum"], int(m["gopeft_batch_size_count"]))
	}
}
