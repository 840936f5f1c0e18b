package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/gopeft/gopeft/train"
)

// newPlotCmd draws several runs' loss curves on one chart: the comparison
// a results table summarises (precisions, methods, learning rates).
func newPlotCmd() *cobra.Command {
	var output, title string
	var trainLoss bool
	var labels []string
	cmd := &cobra.Command{
		Use:   "plot RUN...",
		Short: "Draw several training runs' loss curves on one chart (PNG)",
		Long: `plot reads each RUN's metrics.jsonl (RUN is a train --output directory or a
metrics file) and draws their eval loss (--train: training loss) against the step, a colour
a run, labelled with --labels or the runs' directory names.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, runs []string) error {
			if output == "" {
				return fmt.Errorf("plot: give the chart's file with --output (a .png)")
			}
			if len(labels) > 0 && len(labels) != len(runs) {
				return fmt.Errorf("plot: --labels has %d names for %d runs", len(labels), len(runs))
			}
			curves := make([]train.Curve, len(runs))
			for i, run := range runs {
				// A directory is labelled by its name, a metrics file by its
				// directory's.
				abs, err := filepath.Abs(run)
				if err != nil {
					return fmt.Errorf("plot: %w", err)
				}
				path, label := run, filepath.Base(filepath.Dir(abs))
				if st, err := os.Stat(run); err == nil && st.IsDir() {
					path, label = filepath.Join(run, "metrics.jsonl"), filepath.Base(abs)
				}
				recs, err := train.ReadMetricsFile(path)
				if err != nil {
					return fmt.Errorf("plot: %w", err)
				}
				if len(labels) > 0 {
					label = labels[i]
				}
				curves[i] = train.Curve{Label: label, Records: recs}
			}
			if err := train.PlotRuns(output, curves, !trainLoss, title); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%d runs)\n", output, len(runs))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&output, "output", "o", "", "the chart (PNG) to write")
	fl.StringVar(&title, "title", "", "the chart's title")
	fl.BoolVar(&trainLoss, "train", false, "draw the training loss instead of the eval loss")
	fl.StringSliceVar(&labels, "labels", nil, "the runs' names in the legend, a comma list in the order of the runs (default: their directories)")
	return cmd
}
