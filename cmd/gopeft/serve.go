package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/serve"
)

func newServeCmd() *cobra.Command {
	var mf modelFlags
	var name, host string
	var loras []string
	var port int
	var runtimeLoRA bool
	var cfg serve.Config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the base model and many adapters over an OpenAI-compatible HTTP API",
		Long: `serve runs an OpenAI-compatible server (/v1/completions, /v1/chat/completions,
/v1/models, /metrics, /health, a web playground at /, and with --allow-runtime-lora
/v1/load_lora_adapter and /v1/unload_lora_adapter) over one base model and any number of
PEFT adapters, batching requests for different adapters together. Name an adapter in the
request's "model" field.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			type lora struct{ name, dir string }
			var ls []lora
			for _, l := range loras {
				n, dir, ok := strings.Cut(l, "=")
				if !ok || n == "" || dir == "" {
					return fmt.Errorf("--lora %q: want NAME=DIR", l)
				}
				ls = append(ls, lora{n, dir})
			}
			m, tok, err := mf.loadWithTokenizer()
			if err != nil {
				return err
			}
			if name == "" {
				name = strings.TrimSuffix(filepath.Base(mf.model), filepath.Ext(mf.model))
			}
			pm := peft.Wrap(m)
			load := func(pm *peft.Model, dir, n string) error {
				_, err := loadAdapterAs(pm, dir, n, mf.allowNonFinite)
				return err
			}
			for _, l := range ls {
				if l.name == name {
					return fmt.Errorf("--lora %s=%s: %q is the base model's name (--served-model-name)", l.name, l.dir, l.name)
				}
			}
			e := serve.NewEngine(pm, cfg, load)
			for _, l := range ls {
				if err := e.LoadAdapter(l.name, l.dir); err != nil {
					return fmt.Errorf("--lora %s=%s: %w", l.name, l.dir, err)
				}
			}
			api := serve.NewServer(e, name, tok)
			api.RuntimeLoRA = runtimeLoRA
			srv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
			ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				return err
			}
			// Catch SIGTERM before saying where we listen: a supervisor
			// that stops the server as soon as it is up gets a drain.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(cmd.ErrOrStderr(), "gopeft: serving %s with %d adapter(s) on http://%s (max batch %d, queue %d, KV pool %d blocks of %d)\n",
				name, len(ls), ln.Addr(), e.Config().MaxBatch, e.Config().MaxQueue, e.Pool().Total(), serve.BlockSize)
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "gopeft: draining running requests")
			drain, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			err = srv.Shutdown(drain) // waits for the handlers, hence their sequences
			if cerr := e.Close(drain); err == nil {
				err = cerr
			}
			if errors.Is(err, http.ErrServerClosed) {
				err = nil
			}
			return err
		},
	}
	mf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&name, "served-model-name", "", "the base model's name in the API (default: the checkpoint's file name)")
	fl.StringArrayVar(&loras, "lora", nil, "adapter to serve, NAME=DIR (repeatable)")
	fl.StringVar(&host, "host", "127.0.0.1", "address to listen on")
	fl.BoolVar(&runtimeLoRA, "allow-runtime-lora", false, "turn on /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM: VLLM_ALLOW_RUNTIME_LORA_UPDATING): a client may then make the server read any adapter path")
	fl.IntVar(&port, "port", 8000, "port to listen on (0: any free one)")
	fl.IntVar(&cfg.MaxBatch, "max-batch", 32, "most sequences decoded together")
	fl.IntVar(&cfg.MaxQueue, "max-queue", 256, "most requests waiting; beyond, HTTP 429")
	fl.IntVar(&cfg.MaxLoras, "max-loras", 0, "most distinct adapters in one batch (0: max-batch)")
	fl.IntVar(&cfg.MaxCPULoras, "max-cpu-loras", 64, "most adapters kept in memory; the least recently used idle one is unloaded and reloaded on demand")
	fl.IntVar(&cfg.KVBlocks, "kv-blocks", 0, fmt.Sprintf("KV cache pool size in blocks of %d positions (0: max-batch full contexts)", serve.BlockSize))
	return cmd
}
