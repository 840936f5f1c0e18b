// Command gopeft fine-tunes, evaluates and serves parameter-efficient
// adapters for LLaMA-family models. This package only parses the command
// line and calls the library.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "gopeft:", err)
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
	}
	root.AddCommand(newVersionCmd(), newDemoCmd(), newBenchCmd(), newEvalCmd(), newTrainCmd())
	addModelCommands(root)
	return root
}
