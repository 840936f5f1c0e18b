package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gopeft/gopeft/tensor"
)

// LoadOptions configure a load-generator run (gopeft loadgen).
type LoadOptions struct {
	URL            string
	Models         []string
	Alpha          float64 // power-law popularity exponent over Models (S-LoRA's generator)
	Rate           float64 // requests per second; 0 sends all at once (azure: replays the trace's times)
	CV             float64 // coefficient of variation of the Gamma inter-arrival times (1: Poisson)
	NumPrompts     int
	MaxConcurrency int
	Dataset        string // random, sharegpt, azure-conv, azure-code
	DatasetPath    string
	InputLen       int
	OutputLen      int
	SLOTTFTms      float64
	Seed           uint64
	Progress       io.Writer // nil: no progress bar
}

// Stats are the mean and percentiles of a latency, in milliseconds.
type Stats struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
}

// LoadReport is a run's result; its JSON keys are the ones the issue and
// vLLM's benchmark name.
type LoadReport struct {
	Completed         int     `json:"completed"`
	Failed            int     `json:"failed"`
	Rejected          int     `json:"rejected_429"`
	DurationS         float64 `json:"duration_s"`
	RequestThroughput float64 `json:"request_throughput"`
	OutputThroughput  float64 `json:"output_throughput"`
	TotalInputTokens  int     `json:"total_input_tokens"`
	TotalOutputTokens int     `json:"total_output_tokens"`
	TTFT              Stats   `json:"ttft_ms"`
	TPOT              Stats   `json:"tpot_ms"`
	ITL               Stats   `json:"itl_ms"`
	E2E               Stats   `json:"e2e_ms"`
	SLOAttainment     float64 `json:"slo_attainment"`
	FirstError        string  `json:"first_error,omitempty"`
}

// loadRequest is one request of the workload.
type loadRequest struct {
	at        time.Duration // send time from the start
	model     string
	prompt    any // string or token ids
	maxTokens int
	ignoreEOS bool
}

// CheckLoopback refuses a URL whose host is not this machine: the load
// generator only ever loads a local server.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("--url %q: %w", raw, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("--url %q: the load generator only sends to this machine (localhost, 127.0.0.1 or ::1)", raw)
}

// RunLoad builds the workload and sends it, returning the report.
func RunLoad(ctx context.Context, o LoadOptions) (*LoadReport, error) {
	if err := CheckLoopback(o.URL); err != nil {
		return nil, err
	}
	if len(o.Models) == 0 || o.NumPrompts <= 0 {
		return nil, fmt.Errorf("loadgen: need at least one model and one prompt")
	}
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = o.NumPrompts
	}
	ctxLen := 0
	var models struct {
		Data []struct {
			ID     string `json:"id"`
			MaxLen int    `json:"max_model_len"`
		} `json:"data"`
	}
	if resp, err := http.Get(strings.TrimRight(o.URL, "/") + "/v1/models"); err == nil {
		json.NewDecoder(resp.Body).Decode(&models)
		resp.Body.Close()
		if len(models.Data) > 0 {
			ctxLen = models.Data[0].MaxLen
		}
	}
	reqs, err := buildWorkload(o, ctxLen)
	if err != nil {
		return nil, err
	}
	type result struct {
		ok, rejected  bool
		err           string
		ttft, e2e     float64
		itl           []float64
		inTok, outTok int
	}
	results := make([]result, len(reqs))
	sem := make(chan struct{}, o.MaxConcurrency)
	var wg sync.WaitGroup
	var done sync.Mutex
	finished := 0
	client := &http.Client{Timeout: 10 * time.Minute}
	start := time.Now()
	for i, r := range reqs {
		if d := time.Until(start.Add(r.at)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res := &results[i]
			body, _ := json.Marshal(map[string]any{"model": r.model, "prompt": r.prompt, "max_tokens": r.maxTokens,
				"temperature": 0, "ignore_eos": r.ignoreEOS, "stream": true})
			t0 := time.Now()
			hreq, _ := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(o.URL, "/")+"/v1/completions", bytes.NewReader(body))
			hreq.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(hreq)
			if err != nil {
				res.err = err.Error()
			} else {
				defer resp.Body.Close()
				switch {
				case resp.StatusCode == 429:
					res.rejected, res.err = true, "HTTP 429"
				case resp.StatusCode != 200:
					b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
					res.err = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, b)
				default:
					sc := bufio.NewScanner(resp.Body)
					last := t0
					first := true
					for sc.Scan() {
						data, ok := strings.CutPrefix(sc.Text(), "data: ")
						if !ok {
							continue
						}
						if data == "[DONE]" {
							res.ok = true
							break
						}
						var c struct {
							Choices []struct {
								Text string `json:"text"`
							} `json:"choices"`
							Usage map[string]int `json:"usage"`
							Error *struct {
								Message string `json:"message"`
							} `json:"error"`
						}
						if json.Unmarshal([]byte(data), &c) != nil {
							continue
						}
						if c.Error != nil {
							res.err = c.Error.Message
							break
						}
						now := time.Now()
						if len(c.Choices) > 0 && c.Choices[0].Text != "" {
							if first {
								res.ttft = now.Sub(t0).Seconds() * 1000
								first = false
							} else {
								res.itl = append(res.itl, now.Sub(last).Seconds()*1000)
							}
							last = now
						}
						if c.Usage != nil {
							res.inTok, res.outTok = c.Usage["prompt_tokens"], c.Usage["completion_tokens"]
						}
					}
					if first && res.ok {
						res.ttft = time.Since(t0).Seconds() * 1000
					}
					if !res.ok && res.err == "" {
						res.err = "the stream ended early"
					}
				}
			}
			res.e2e = time.Since(t0).Seconds() * 1000
			done.Lock()
			finished++
			if o.Progress != nil {
				w := 40 * finished / len(reqs)
				fmt.Fprintf(o.Progress, "\r[%s%s] %d/%d", strings.Repeat("#", w), strings.Repeat(".", 40-w), finished, len(reqs))
			}
			done.Unlock()
		}()
	}
	wg.Wait()
	if o.Progress != nil {
		fmt.Fprintln(o.Progress)
	}
	dur := time.Since(start).Seconds()
	rep := &LoadReport{DurationS: dur}
	var ttft, tpot, itl, e2e []float64
	met := 0
	for _, r := range results {
		if !r.ok {
			rep.Failed++
			if r.rejected {
				rep.Rejected++
			}
			if rep.FirstError == "" {
				rep.FirstError = r.err
			}
			continue
		}
		rep.Completed++
		rep.TotalInputTokens += r.inTok
		rep.TotalOutputTokens += r.outTok
		ttft, e2e = append(ttft, r.ttft), append(e2e, r.e2e)
		itl = append(itl, r.itl...)
		if r.outTok > 1 {
			tpot = append(tpot, (r.e2e-r.ttft)/float64(r.outTok-1))
		}
		if o.SLOTTFTms <= 0 || r.ttft <= o.SLOTTFTms {
			met++
		}
	}
	rep.RequestThroughput = float64(rep.Completed) / dur
	rep.OutputThroughput = float64(rep.TotalOutputTokens) / dur
	rep.TTFT, rep.TPOT, rep.ITL, rep.E2E = stats(ttft), stats(tpot), stats(itl), stats(e2e)
	if len(reqs) > 0 {
		rep.SLOAttainment = float64(met) / float64(len(reqs))
	}
	return rep, nil
}

func stats(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	q := func(p float64) float64 { return s[max(0, int(math.Ceil(p*float64(len(s))))-1)] }
	return Stats{Mean: sum / float64(len(s)), P50: q(0.5), P90: q(0.9), P99: q(0.99)}
}

// gamma draws from Gamma(k, 1) (Marsaglia and Tsang).
func gamma(g *tensor.RNG, k float64) float64 {
	if k < 1 {
		return gamma(g, k+1) * math.Pow(g.Float64(), 1/k)
	}
	d := k - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := normal(g)
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := g.Float64()
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return d * v
		}
	}
}

func normal(g *tensor.RNG) float64 {
	u1, u2 := g.Float64(), g.Float64()
	return math.Sqrt(-2*math.Log(1-u1)) * math.Cos(2*math.Pi*u2)
}

// buildWorkload draws the requests: models by power-law popularity
// P(i) ∝ (i+1)^-α, Gamma arrivals with mean 1/rate and coefficient of
// variation cv (shape 1/cv², scale cv²/rate), lengths from the dataset,
// bounded by the server's context ctxLen (0: unknown).
func buildWorkload(o LoadOptions, ctxLen int) ([]loadRequest, error) {
	g := tensor.NewRNG(o.Seed)
	weights := make([]float64, len(o.Models))
	total := 0.0
	for i := range weights {
		weights[i] = math.Pow(float64(i+1), -o.Alpha)
		total += weights[i]
	}
	pick := func() string {
		r := g.Float64() * total
		for i, w := range weights {
			if r -= w; r < 0 {
				return o.Models[i]
			}
		}
		return o.Models[len(o.Models)-1]
	}
	randomIDs := func(n int) []int {
		ids := make([]int, n)
		ids[0] = 1 // BOS
		for i := 1; i < n; i++ {
			ids[i] = 10 + g.IntN(490) // ids every LLaMA vocabulary has
		}
		return ids
	}
	fit := func(in, out int) (int, int) { // scale a length pair into the context
		in, out = max(in, 2), max(out, 1)
		if ctxLen > 0 && in+out > ctxLen {
			f := float64(ctxLen-1) / float64(in+out)
			in, out = max(2, int(float64(in)*f)), max(1, int(float64(out)*f))
		}
		return in, out
	}
	var reqs []loadRequest
	var times []time.Duration
	switch o.Dataset {
	case "", "random":
		for range o.NumPrompts {
			in, out := fit(o.InputLen, o.OutputLen)
			reqs = append(reqs, loadRequest{prompt: randomIDs(in), maxTokens: out, ignoreEOS: true})
		}
	case "sharegpt":
		path := o.DatasetPath
		if path == "" {
			return nil, fmt.Errorf("--dataset sharegpt needs --dataset-path (ShareGPT_V3_filtered_1000_prompts.json)")
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var convs []struct {
			Conversations []struct {
				From  string `json:"from"`
				Value string `json:"value"`
			} `json:"conversations"`
		}
		if err := json.Unmarshal(b, &convs); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var prompts []string
		for _, c := range convs {
			if len(c.Conversations) > 0 && c.Conversations[0].Value != "" {
				p := c.Conversations[0].Value
				// Cut a prompt that cannot fit: a token covers at least one
				// byte, half the context in bytes leaves room for the answer.
				if lim := (ctxLen - o.OutputLen) / 2; ctxLen > 0 && len(p) > lim {
					p = strings.ToValidUTF8(p[:max(lim, 1)], "")
				}
				prompts = append(prompts, p)
			}
		}
		if len(prompts) == 0 {
			return nil, fmt.Errorf("%s: no prompts", path)
		}
		for i := range o.NumPrompts {
			_, out := fit(1, o.OutputLen)
			reqs = append(reqs, loadRequest{prompt: prompts[i%len(prompts)], maxTokens: out})
		}
	case "azure-conv", "azure-code":
		path := o.DatasetPath
		if path == "" {
			return nil, fmt.Errorf("--dataset %s needs --dataset-path (AzureLLMInferenceTrace_%s.csv)", o.Dataset, strings.TrimPrefix(o.Dataset, "azure-"))
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		rows, err := csv.NewReader(f).ReadAll()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var t0 time.Time
		for i, row := range rows[1:] {
			if len(reqs) == o.NumPrompts {
				break
			}
			if len(row) < 3 {
				return nil, fmt.Errorf("%s: row %d has %d fields, want TIMESTAMP,ContextTokens,GeneratedTokens", path, i+2, len(row))
			}
			ts, err := time.Parse("2006-01-02 15:04:05.9999999", row[0])
			in, err2 := strconv.Atoi(row[1])
			out, err3 := strconv.Atoi(row[2])
			if err != nil || err2 != nil || err3 != nil {
				return nil, fmt.Errorf("%s: row %d: %q is not a trace row", path, i+2, strings.Join(row, ","))
			}
			if t0.IsZero() {
				t0 = ts
			}
			times = append(times, ts.Sub(t0))
			in, out = fit(in, out)
			reqs = append(reqs, loadRequest{prompt: randomIDs(in), maxTokens: out, ignoreEOS: true})
		}
	default:
		return nil, fmt.Errorf("--dataset %q: want random, sharegpt, azure-conv or azure-code", o.Dataset)
	}
	for i := range reqs {
		reqs[i].model = pick()
	}
	switch {
	case o.Rate > 0:
		cv := o.CV
		if cv <= 0 {
			cv = 1
		}
		k := 1 / (cv * cv)
		var t float64
		for i := range reqs {
			reqs[i].at = time.Duration(t * float64(time.Second))
			t += gamma(g, k) / (k * o.Rate)
		}
	case times != nil: // the trace's own arrivals
		for i := range reqs {
			reqs[i].at = times[i]
		}
	}
	return reqs, nil
}
