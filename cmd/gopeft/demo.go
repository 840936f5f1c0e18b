package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/tokenizer"
)

// findShared looks for the development workspace's shared/ folder beside the
// current directory or one of its parents.
func findShared() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		p := filepath.Join(dir, "..", "shared", "data")
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return filepath.Clean(filepath.Join(dir, "..", "shared")), true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func newDemoCmd() *cobra.Command {
	var n int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the main job end to end (today: load a real checkpoint and generate)",
		Long: `demo will run a complete multi-stage fine-tune once LoRA training lands. Until then it
runs the most real thing that exists: it loads the pretrained stories260K checkpoint (when
../shared/data is present), or a randomly initialised stories15M-shaped model otherwise, and
generates text greedily, reporting the speed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "gopeft demo: LoRA fine-tuning is not built yet; this demo loads a model and generates.")
			var m *llama.Model
			var tok tokenizer.Tokenizer
			var err error
			if shared, ok := findShared(); ok {
				dir := filepath.Join(shared, "data", "models", "stories260K")
				fmt.Fprintf(out, "model: %s (real pretrained stories260K)\n", dir)
				if m, err = llama.Load(filepath.Join(dir, "stories260K.bin"), llama.LoadOptions{}); err != nil {
					return err
				}
				if tok, err = tokenizer.Load(filepath.Join(dir, "tok512.bin")); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(out, "model: random stories15M-shaped weights (../shared/data not found), token ids only")
				if m, err = llama.NewPreset("stories15M", 1); err != nil {
					return err
				}
			}
			prompt := []int{m.Config.BOSTokenID}
			if tok != nil {
				prompt = append(prompt, tok.Encode("Once upon a time")...)
				fmt.Fprint(out, "\nOnce upon a time")
			}
			start := time.Now()
			prev := prompt[len(prompt)-1]
			ids, err := m.Generate(context.Background(), prompt, llama.GenerateOptions{MaxNewTokens: n}, func(id int) bool {
				if tok != nil {
					fmt.Fprint(out, tok.DecodeToken(prev, id))
				} else {
					fmt.Fprintf(out, " %d", id)
				}
				prev = id
				return true
			})
			if err != nil {
				return err
			}
			el := time.Since(start)
			fmt.Fprintf(out, "\n\n%d tokens in %v (%.0f tokens/s)\n", len(ids), el.Round(time.Millisecond), float64(len(ids))/el.Seconds())
			return nil
		},
	}
	cmd.Flags().IntVarP(&n, "max-new-tokens", "n", 100, "tokens to generate")
	return cmd
}
