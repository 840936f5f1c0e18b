package train

import (
	"fmt"
	"image/color"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// PlotLoss draws training loss (a line) and evaluation loss (a line with
// points) against step from a metrics log and writes the chart as a PNG to
// path (atomically). Non-finite values are left out. title may be empty.
func PlotLoss(path string, recs []Record, title string) error {
	var trainXY, evalXY plotter.XYs
	for _, r := range recs {
		if IsFinite(r.Loss) {
			trainXY = append(trainXY, plotter.XY{X: float64(r.Step), Y: r.Loss})
		}
		if r.EvalLoss != nil && IsFinite(*r.EvalLoss) {
			evalXY = append(evalXY, plotter.XY{X: float64(r.Step), Y: *r.EvalLoss})
		}
	}
	if len(trainXY) == 0 && len(evalXY) == 0 {
		return fmt.Errorf("plot %s: no finite loss values to plot", path)
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = "loss"
	p.Add(plotter.NewGrid())
	if len(trainXY) > 0 {
		l, err := plotter.NewLine(trainXY)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		l.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
		l.Width = vg.Points(1.2)
		p.Add(l)
		p.Legend.Add("train loss", l)
	}
	if len(evalXY) > 0 {
		l, s, err := plotter.NewLinePoints(evalXY)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		orange := color.RGBA{R: 255, G: 127, B: 14, A: 255}
		l.Color, s.Color = orange, orange
		l.Width = vg.Points(1.2)
		p.Add(l, s)
		p.Legend.Add("eval loss", l, s)
	}
	p.Legend.Top = true
	// A single point or a flat curve gives an empty range: pad it.
	if p.Y.Max-p.Y.Min < 1e-9*math.Max(1, math.Abs(p.Y.Max)) {
		p.Y.Min, p.Y.Max = p.Y.Min-0.5, p.Y.Max+0.5
	}
	if p.X.Max == p.X.Min {
		p.X.Min, p.X.Max = p.X.Min-1, p.X.Max+1
	}
	wt, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return writeAtomic(path, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	})
}
