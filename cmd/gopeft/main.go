// Command gopeft fine-tunes, evaluates and serves parameter-efficient
// adapters for LLaMA-family models. This package only parses the command
// line and calls the library.
package main

import (
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// gcPercent is the GC target used unless GOGC is set. A training step
// allocates its activations afresh and drops them at the end, and the
// default (100) lets the heap grow to twice what survived the last
// collection before the next one. The tensors hold no pointers, so a
// collection costs little, and the model's weights are outside the heap
// (tensor.OffHeap), so the headroom is a share of the step's activations
// only: at 25 a tinyllama-1.1B QLoRA step keeps its speed and peaks about
// 100 MiB lower than at 50 (docs/performance.md, QLoRA).
const gcPercent = 25

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if err := newRootCmd().Execute(); err != nil {
		report(err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "gopeft",
		Short: "Parameter-efficient fine-tuning for LLaMA-family models, in one Go binary",
		Long: `gopeft loads LLaMA-family checkpoints (llama2.c, Hugging Face, GGUF), fine-tunes
them with parameter-efficient methods, evaluates them and generates text, on the CPU.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       versionString(), // --version, as `gopeft version` prints it
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.AddCommand(newVersionCmd(), newDemoCmd(), newBenchCmd(), newEvalCmd(), newTrainCmd(), newPlotCmd(), newServeCmd(), newLoadgenCmd())
	addModelCommands(root)
	return root
}
