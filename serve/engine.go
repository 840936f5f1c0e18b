// Package serve is gopeft's inference server: one base model, many
// adapters, continuous batching, an OpenAI-compatible HTTP API
// (/v1/completions, /v1/chat/completions, /v1/models), run-time adapter
// loading, Prometheus metrics and a web playground.
//
// The engine owns the model. One scheduler goroutine runs steps; at every
// step it first admits waiting requests (each is prefilled alone, exactly as
// llama.Model.Generate starts), then runs one decode step over every running
// sequence at once (llama.Model.DecodeStep): the projections are one GEMM
// for the whole batch and each adapter's hooks run on its own rows (the
// per-sequence routing of nn.Pass.Adapters), attention reads each
// sequence's own KV cache. A sequence leaves the batch as soon as it ends,
// and its cache goes back to the pool.
package serve

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
)

// Config sizes the engine. Names follow vLLM's flags.
type Config struct {
	// MaxBatch is the most sequences decoded in one step (vLLM's
	// --max-num-seqs).
	MaxBatch int
	// MaxQueue is the most requests waiting for a place in the batch;
	// beyond it Submit fails with ErrQueueFull (HTTP 429).
	MaxQueue int
	// MaxLoras is the most distinct adapters in one running batch.
	MaxLoras int
	// MaxCPULoras is the most adapters kept loaded; the least recently
	// used idle one is unloaded to make room and reloaded from its
	// directory when asked for again.
	MaxCPULoras int
	// KVBlocks bounds the KV cache memory: the pool hands out at most this
	// many blocks of BlockSize positions (0: MaxBatch full contexts).
	KVBlocks int
	// MaxPrefillTokens bounds the prompt tokens prefilled in one step, so
	// that running sequences keep decoding while long prompts arrive (at
	// least one request is admitted per step).
	MaxPrefillTokens int
}

func (c *Config) defaults(context int) {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 32
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 256
	}
	if c.MaxLoras <= 0 {
		c.MaxLoras = c.MaxBatch
	}
	if c.MaxCPULoras <= 0 {
		c.MaxCPULoras = 64
	}
	if c.KVBlocks <= 0 {
		c.KVBlocks = c.MaxBatch * ((context + BlockSize - 1) / BlockSize)
	}
	if c.MaxPrefillTokens <= 0 {
		c.MaxPrefillTokens = 2048
	}
}

// Errors Submit returns.
var (
	ErrQueueFull    = errors.New("the request queue is full: try again later")
	ErrUnknownModel = errors.New("no such model")
	ErrClosed       = errors.New("the server is shutting down")
)

// Request is one sequence to generate.
type Request struct {
	Adapter   string // "" is the base model
	Prompt    []int  // token ids, BOS included
	MaxTokens int
	Sampling  llama.Sampling
	IgnoreEOS bool
	// Events receives each token, then a final event with Done set. The
	// engine never blocks on it: Submit sizes it.
	Events chan Event

	ctx      context.Context
	arrived  time.Time
	lastTok  time.Time
	canceled atomic.Bool
	// scheduler state
	cache   *llama.KVCache
	blocks  int
	sampler *llama.Sampler
	out     int
	last    int
}

// Cancel asks the scheduler to drop the sequence at its next step (a
// client that went away, a stop string found).
func (r *Request) Cancel() { r.canceled.Store(true) }

// Event is one token of a request, or its end.
type Event struct {
	Token  int
	Done   bool
	Finish string // "stop" (EOS), "length" (max tokens) or "abort"
	Err    error
}

// adapterEntry is an adapter the server knows: loaded or not.
type adapterEntry struct {
	name, dir string
	loaded    bool
	lastUsed  time.Time
	running   int
	added     time.Time
}

// Engine schedules requests over one peft.Model.
type Engine struct {
	pm   *peft.Model
	m    *llama.Model
	cfg  Config
	pool *Pool
	Met  *Metrics

	mu       sync.Mutex // the model's hooks and the adapter table
	adapters map[string]*adapterEntry

	qmu     sync.Mutex
	pending []*Request
	closed  bool
	wake    chan struct{}

	running []*Request // scheduler goroutine only
	nrun    atomic.Int64
	done    chan struct{}
	load    func(pm *peft.Model, dir, name string) error
}

// NewEngine starts the scheduler over pm. load attaches an adapter from a
// directory (nil: peft.Model.LoadAdapter).
func NewEngine(pm *peft.Model, cfg Config, load func(pm *peft.Model, dir, name string) error) *Engine {
	m := pm.Base
	cfg.defaults(m.Config.MaxPositionEmbeddings)
	if load == nil {
		load = func(pm *peft.Model, dir, name string) error { _, err := pm.LoadAdapter(dir, name); return err }
	}
	e := &Engine{pm: pm, m: m, cfg: cfg, pool: NewPool(m, cfg.KVBlocks), Met: newMetrics(),
		adapters: map[string]*adapterEntry{}, wake: make(chan struct{}, 1), done: make(chan struct{}), load: load}
	for _, name := range pm.Adapters() { // adapters attached before
		e.adapters[name] = &adapterEntry{name: name, loaded: true, added: time.Now()}
	}
	go e.loop()
	return e
}

// Config returns the engine's configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Model is the base model.
func (e *Engine) Model() *llama.Model { return e.m }

// Pool is the KV cache pool.
func (e *Engine) Pool() *Pool { return e.pool }

// Running is the number of sequences in the batch.
func (e *Engine) Running() int { return int(e.nrun.Load()) }

// Waiting is the number of requests in the queue.
func (e *Engine) Waiting() int {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	return len(e.pending)
}

// AdapterInfo describes a known adapter.
type AdapterInfo struct {
	Name, Dir string
	Loaded    bool
	Created   time.Time
}

// Adapters lists the adapters the engine serves, by name.
func (e *Engine) Adapters() []AdapterInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []AdapterInfo
	for _, a := range e.adapters {
		out = append(out, AdapterInfo{a.name, a.dir, a.loaded, a.added})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// HasAdapter reports whether name is served.
func (e *Engine) HasAdapter(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.adapters[name]
	return ok
}

// LoadAdapter loads the adapter in dir under name; it serves at once. A
// failure leaves the server as it was.
func (e *Engine) LoadAdapter(name, dir string) error {
	if name == "" {
		return fmt.Errorf("an adapter needs a name")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.adapters[name]; ok {
		return fmt.Errorf("adapter %q is already loaded", name)
	}
	if err := e.makeRoom(); err != nil {
		return err
	}
	if err := e.load(e.pm, dir, name); err != nil {
		return err
	}
	e.adapters[name] = &adapterEntry{name: name, dir: dir, loaded: true, lastUsed: time.Now(), added: time.Now()}
	e.Met.adapterLoads.Add(1)
	return nil
}

// UnloadAdapter stops serving name: its running and waiting requests end
// with finish reason "abort", later requests for it get ErrUnknownModel,
// and its tensors are released.
func (e *Engine) UnloadAdapter(name string) error {
	e.mu.Lock()
	a, ok := e.adapters[name]
	if !ok {
		e.mu.Unlock()
		return fmt.Errorf("%w: adapter %q is not loaded", ErrUnknownModel, name)
	}
	delete(e.adapters, name)
	var err error
	if a.loaded {
		// The scheduler runs steps holding mu: no step is under way, and
		// the next one drops this adapter's sequences before running.
		err = e.pm.DeleteAdapter(name)
	}
	e.mu.Unlock()
	e.qmu.Lock()
	keep := e.pending[:0]
	for _, r := range e.pending {
		if r.Adapter == name {
			r.Events <- Event{Done: true, Finish: "abort", Err: fmt.Errorf("%w: adapter %q was unloaded", ErrUnknownModel, name)}
			e.Met.waiting.Add(-1)
		} else {
			keep = append(keep, r)
		}
	}
	e.pending = keep
	e.qmu.Unlock()
	e.signal()
	return err
}

// makeRoom unloads the least recently used idle adapter when MaxCPULoras
// are loaded. mu held.
func (e *Engine) makeRoom() error {
	n := 0
	var lru *adapterEntry
	for _, a := range e.adapters {
		if !a.loaded {
			continue
		}
		n++
		if a.running == 0 && a.dir != "" && (lru == nil || a.lastUsed.Before(lru.lastUsed)) {
			lru = a
		}
	}
	if n < e.cfg.MaxCPULoras {
		return nil
	}
	if lru == nil {
		return fmt.Errorf("%d adapters are loaded (--max-cpu-loras) and none is idle", n)
	}
	if err := e.pm.DeleteAdapter(lru.name); err != nil {
		return err
	}
	lru.loaded = false
	e.Met.adapterEvictions.Add(1)
	return nil
}

// Submit queues a request for model adapter ("" the base). It fails at
// once with ErrQueueFull beyond MaxQueue waiting requests.
func (e *Engine) Submit(ctx context.Context, r *Request) error {
	if r.Adapter != "" && !e.HasAdapter(r.Adapter) {
		return fmt.Errorf("%w: %q", ErrUnknownModel, r.Adapter)
	}
	if len(r.Prompt) == 0 || r.MaxTokens <= 0 {
		return fmt.Errorf("serve: a request needs a prompt and max tokens ≥ 1")
	}
	if n := len(r.Prompt) + r.MaxTokens; n > e.m.Config.MaxPositionEmbeddings {
		return fmt.Errorf("serve: %d prompt + %d new tokens exceed the context of %d", len(r.Prompt), r.MaxTokens, e.m.Config.MaxPositionEmbeddings)
	}
	r.ctx = ctx
	r.arrived = time.Now()
	r.Events = make(chan Event, r.MaxTokens+2)
	e.qmu.Lock()
	if e.closed {
		e.qmu.Unlock()
		return ErrClosed
	}
	if len(e.pending) >= e.cfg.MaxQueue {
		e.qmu.Unlock()
		e.Met.rejected.Add(1)
		return ErrQueueFull
	}
	e.pending = append(e.pending, r)
	e.Met.waiting.Add(1)
	e.qmu.Unlock()
	e.signal()
	return nil
}

func (e *Engine) signal() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Close refuses new requests, lets the queued and running ones finish,
// then stops the scheduler. It returns when the scheduler has stopped or
// ctx ends (then the remaining sequences are aborted).
func (e *Engine) Close(ctx context.Context) error {
	e.qmu.Lock()
	e.closed = true
	e.qmu.Unlock()
	e.signal()
	select {
	case <-e.done:
		return nil
	case <-ctx.Done():
		e.qmu.Lock()
		for _, r := range e.pending {
			r.Cancel()
		}
		e.qmu.Unlock()
		e.mu.Lock()
		for _, r := range e.running {
			r.Cancel()
		}
		e.mu.Unlock()
		<-e.done
		return ctx.Err()
	}
}

func (e *Engine) loop() {
	defer close(e.done)
	for {
		e.mu.Lock()
		e.admit()
		if len(e.running) > 0 {
			e.step()
		}
		n := len(e.running)
		e.mu.Unlock()
		if n > 0 {
			continue
		}
		e.qmu.Lock()
		idle, closed := len(e.pending) == 0, e.closed
		e.qmu.Unlock()
		if idle && closed {
			return
		}
		if idle {
			<-e.wake
		}
	}
}

// finish ends a sequence and returns its cache. mu held.
func (e *Engine) finish(r *Request, reason string, err error) {
	if r.cache != nil {
		e.pool.Put(r.cache, r.blocks)
		r.cache = nil
	}
	if a := e.adapters[r.Adapter]; a != nil {
		a.running--
	}
	r.Events <- Event{Done: true, Finish: reason, Err: err}
	e.Met.finished(reason, err)
}

func (r *Request) gone() bool { return r.canceled.Load() || r.ctx.Err() != nil }

// admit moves waiting requests into the batch while there is room, each
// prefilled alone. mu held.
func (e *Engine) admit() {
	e.qmu.Lock()
	defer e.qmu.Unlock()
	active := map[string]bool{}
	for _, r := range e.running {
		active[r.Adapter] = true
	}
	prefilled := 0
	keep := e.pending[:0]
	for i, r := range e.pending {
		take := len(e.running) < e.cfg.MaxBatch && (prefilled == 0 || prefilled+len(r.Prompt) <= e.cfg.MaxPrefillTokens)
		if r.gone() {
			e.Met.waiting.Add(-1)
			r.Events <- Event{Done: true, Finish: "abort"}
			e.Met.finished("abort", nil)
			continue
		}
		if !take || (!active[r.Adapter] && len(active) >= e.cfg.MaxLoras) {
			keep = append(keep, r)
			continue
		}
		a := e.adapters[r.Adapter]
		if r.Adapter != "" {
			if a == nil {
				e.Met.waiting.Add(-1)
				r.Events <- Event{Done: true, Finish: "abort", Err: fmt.Errorf("%w: %q", ErrUnknownModel, r.Adapter)}
				continue
			}
			if !a.loaded { // evicted: reload from its directory
				if err := e.makeRoom(); err != nil {
					keep = append(keep, r)
					continue
				}
				if err := e.load(e.pm, a.dir, a.name); err != nil {
					e.Met.waiting.Add(-1)
					r.Events <- Event{Done: true, Finish: "abort", Err: fmt.Errorf("reloading adapter %q from %s: %w", a.name, a.dir, err)}
					continue
				}
				a.loaded = true
				e.Met.adapterLoads.Add(1)
			}
			a.lastUsed = time.Now()
		}
		cache, blocks := e.pool.Get(len(r.Prompt) + r.MaxTokens)
		if cache == nil { // the pool is spent: wait for sequences to end
			keep = append(keep, e.pending[i:]...)
			break
		}
		e.Met.waiting.Add(-1)
		r.cache, r.blocks = cache, blocks
		if a != nil {
			a.running++
		}
		active[r.Adapter] = true
		prefilled += len(r.Prompt)
		r.sampler = llama.NewSampler(r.Sampling)
		logits, err := e.m.Prefill(&nn.Pass{Adapters: []string{r.Adapter}}, r.Prompt, cache)
		e.Met.promptTokens.Add(int64(len(r.Prompt)))
		if err != nil {
			e.finish(r, "abort", err)
			continue
		}
		if e.emit(r, logits) {
			e.running = append(e.running, r)
		}
	}
	e.pending = keep
	e.nrun.Store(int64(len(e.running)))
}

// emit draws the next token of r from its logits and sends it; it reports
// whether the sequence goes on. As Generate: a non-finite logit is an
// error, EOS (and BOS for llama2.c models) stops unless ignore_eos.
func (e *Engine) emit(r *Request, logits []float32) bool {
	for i, l := range logits {
		if l-l != 0 {
			e.finish(r, "abort", fmt.Errorf("the logit of token %d is %v at generation step %d: the model computes non-finite values", i, l, r.out+1))
			return false
		}
	}
	id := r.sampler.Sample(logits)
	if !r.IgnoreEOS && (id == e.m.Config.EOSTokenID || (e.m.StopAtBOS && id == e.m.Config.BOSTokenID)) {
		e.finish(r, "stop", nil)
		return false
	}
	now := time.Now()
	if r.out == 0 {
		e.Met.ttft.observe(now.Sub(r.arrived).Seconds())
	} else {
		e.Met.itl.observe(now.Sub(r.lastTok).Seconds())
	}
	r.lastTok = now
	r.out++
	r.last = id
	e.Met.genTokens.Add(1)
	r.Events <- Event{Token: id}
	if r.out >= r.MaxTokens {
		e.finish(r, "length", nil)
		return false
	}
	return true
}

// step decodes one token of every running sequence. mu held.
func (e *Engine) step() {
	live := e.running[:0]
	for _, r := range e.running {
		switch {
		case r.gone():
			e.finish(r, "abort", nil)
		case r.Adapter != "" && e.adapters[r.Adapter] == nil:
			e.finish(r, "abort", fmt.Errorf("%w: adapter %q was unloaded", ErrUnknownModel, r.Adapter))
		default:
			live = append(live, r)
		}
	}
	e.running = live
	if len(live) == 0 {
		e.nrun.Store(0)
		return
	}
	ids := make([]int, len(live))
	caches := make([]*llama.KVCache, len(live))
	names := make([]string, len(live))
	for i, r := range live {
		ids[i], caches[i], names[i] = r.last, r.cache, r.Adapter
	}
	e.Met.batch.observe(float64(len(live)))
	logits, err := e.m.DecodeStep(&nn.Pass{Adapters: names}, ids, caches)
	next := live[:0:0]
	for i, r := range live {
		if err != nil {
			e.finish(r, "abort", err)
			continue
		}
		if e.emit(r, logits.Row(i)) {
			next = append(next, r)
		}
	}
	e.running = next
	e.nrun.Store(int64(len(next)))
}

// randomSeed is a seed for a request that names none.
func randomSeed() uint64 { return rand.Uint64() }

// BlockSize is the number of positions in one KV cache block.
const BlockSize = 16

// Pool hands out one-sequence KV caches whose sizes are whole blocks, at
// most a fixed number of blocks in all, and keeps returned caches for
// reuse (within the same bound).
type Pool struct {
	m      *llama.Model
	mu     sync.Mutex
	total  int
	used   int
	idle   int
	seqs   int
	free   map[int][]*llama.KVCache
	maxCap int
}

// NewPool returns a pool of blocks blocks.
func NewPool(m *llama.Model, blocks int) *Pool {
	return &Pool{m: m, total: blocks, free: map[int][]*llama.KVCache{}}
}

// Get returns an empty cache for at least positions positions and the
// blocks it holds, or nil when the pool has not that many blocks left.
func (p *Pool) Get(positions int) (*llama.KVCache, int) {
	n := (positions + BlockSize - 1) / BlockSize
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used+n > p.total {
		return nil, 0
	}
	p.used += n
	p.seqs++
	if l := p.free[n]; len(l) > 0 {
		c := l[len(l)-1]
		p.free[n] = l[:len(l)-1]
		p.idle -= n
		return c, n
	}
	// Make room for a new buffer by dropping idle ones of other sizes.
	for size, l := range p.free {
		for len(l) > 0 && p.used+p.idle > p.total {
			l = l[:len(l)-1]
			p.idle -= size
		}
		p.free[size] = l
	}
	return p.m.NewKVCache(1, n*BlockSize), n
}

// Put returns a cache Get gave, with the blocks it reported.
func (p *Pool) Put(c *llama.KVCache, blocks int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used -= blocks
	p.seqs--
	// A prefix adapter grows a cache past its blocks: do not keep that one.
	if c.Capacity() == blocks*BlockSize && p.used+p.idle+blocks <= p.total {
		c.Reset()
		p.free[blocks] = append(p.free[blocks], c)
		p.idle += blocks
	}
}

// InUse returns the sequences holding caches and the blocks they hold.
func (p *Pool) InUse() (seqs, blocks int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seqs, p.used
}

// Total is the pool's size in blocks.
func (p *Pool) Total() int { return p.total }
