package serve

import (
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
)

// Metrics are the engine's counters, written in Prometheus's text format.
type Metrics struct {
	requests         sync.Map // finish reason → *atomic.Int64
	errors           atomic.Int64
	rejected         atomic.Int64
	waiting          atomic.Int64
	promptTokens     atomic.Int64
	genTokens        atomic.Int64
	adapterLoads     atomic.Int64
	adapterEvictions atomic.Int64
	ttft, itl, batch *histogram
}

func newMetrics() *Metrics {
	lat := []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	return &Metrics{
		ttft:  &histogram{bounds: lat, counts: make([]int64, len(lat)+1)},
		itl:   &histogram{bounds: lat, counts: make([]int64, len(lat)+1)},
		batch: &histogram{bounds: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}, counts: make([]int64, 10)},
	}
}

func (m *Metrics) finished(reason string, err error) {
	if err != nil {
		m.errors.Add(1)
	}
	v, _ := m.requests.LoadOrStore(reason, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// histogram is a Prometheus histogram: cumulative buckets written out.
type histogram struct {
	mu     sync.Mutex
	bounds []float64
	counts []int64 // per bucket (not cumulative); the last is +Inf
	sum    float64
	n      int64
}

func (h *histogram) observe(v float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i]++
	h.sum += v
	h.n++
}

func (h *histogram) write(w io.Writer, name, help string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var acc int64
	for i, b := range h.bounds {
		acc += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{le=\"%g\"} %d\n", name, b, acc)
	}
	acc += h.counts[len(h.bounds)]
	fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n%s_sum %g\n%s_count %d\n", name, acc, name, h.sum, name, h.n)
}

// mean is the histogram's mean (NaN when empty).
func (h *histogram) mean() float64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return math.NaN()
	}
	return h.sum / float64(h.n)
}

// WritePrometheus writes every metric; running and the pool come from e.
func (e *Engine) WritePrometheus(w io.Writer) {
	m := e.Met
	counter := func(name, help string, v int64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	gauge := func(name, help string, v float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", name, help, name, name, v)
	}
	fmt.Fprintf(w, "# HELP gopeft_requests_total Requests ended, by finish reason.\n# TYPE gopeft_requests_total counter\n")
	for _, r := range []string{"stop", "length", "abort"} {
		var n int64
		if v, ok := m.requests.Load(r); ok {
			n = v.(*atomic.Int64).Load()
		}
		fmt.Fprintf(w, "gopeft_requests_total{finish_reason=%q} %d\n", r, n)
	}
	counter("gopeft_request_errors_total", "Requests that ended with an error.", m.errors.Load())
	counter("gopeft_requests_rejected_total", "Requests refused with HTTP 429 (queue full).", m.rejected.Load())
	gauge("gopeft_requests_waiting", "Requests in the queue.", float64(e.Waiting()))
	gauge("gopeft_requests_running", "Sequences in the running batch.", float64(e.Running()))
	seqs, blocks := e.pool.InUse()
	gauge("gopeft_kv_cache_sequences", "Sequences holding a KV cache.", float64(seqs))
	gauge("gopeft_kv_cache_blocks_used", "KV cache blocks in use.", float64(blocks))
	gauge("gopeft_kv_cache_blocks_total", "KV cache blocks in the pool.", float64(e.pool.Total()))
	counter("gopeft_prompt_tokens_total", "Prompt tokens prefilled.", m.promptTokens.Load())
	counter("gopeft_generation_tokens_total", "Tokens generated.", m.genTokens.Load())
	loaded := 0
	for _, a := range e.Adapters() {
		if a.Loaded {
			loaded++
		}
	}
	gauge("gopeft_adapters_loaded", "Adapters loaded in memory.", float64(loaded))
	counter("gopeft_adapter_loads_total", "Adapter loads (at run time and reloads after eviction).", m.adapterLoads.Load())
	counter("gopeft_adapter_evictions_total", "Adapters unloaded to stay within --max-cpu-loras.", m.adapterEvictions.Load())
	m.ttft.write(w, "gopeft_time_to_first_token_seconds", "Time from arrival to the first token.")
	m.itl.write(w, "gopeft_time_per_output_token_seconds", "Time between two tokens of a sequence.")
	m.batch.write(w, "gopeft_batch_size", "Sequences per decode step.")
}
