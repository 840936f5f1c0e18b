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
	return writePlot(path, p)
}

// writePlot pads an empty range and writes p as an 8×5-inch PNG to path,
// atomically.
func writePlot(path string, p *plot.Plot) error {
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

// Curve is one training run's metrics under a label, for PlotRuns.
type Curve struct {
	Label   string
	Records []Record
}

// runColors are the lines' colours, in order (matplotlib's first ten).
var runColors = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255}, {148, 103, 189, 255},
	{140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}, {188, 189, 34, 255}, {23, 190, 207, 255},
}

// PlotRuns draws several runs' loss curves on one chart, a colour a run:
// evaluation loss (lines with points) when eval is set, else training
// loss. A run with no finite value of that loss is an error naming it.
func PlotRuns(path string, runs []Curve, eval bool, title string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = map[bool]string{true: "eval loss", false: "training loss"}[eval]
	p.Add(plotter.NewGrid())
	for i, r := range runs {
		var xy plotter.XYs
		for _, rec := range r.Records {
			v := rec.Loss
			if eval {
				if rec.EvalLoss == nil {
					continue
				}
				v = *rec.EvalLoss
			}
			if IsFinite(v) {
				xy = append(xy, plotter.XY{X: float64(rec.Step), Y: v})
			}
		}
		if len(xy) == 0 {
			return fmt.Errorf("plot %s: run %q has no finite %s values", path, r.Label, p.Y.Label.Text)
		}
		c := runColors[i%len(runColors)]
		if eval {
			l, s, err := plotter.NewLinePoints(xy)
			if err != nil {
				return fmt.Errorf("plot %s: run %q: %w", path, r.Label, err)
			}
			l.Color, s.Color, l.Width = c, c, vg.Points(1.2)
			p.Add(l, s)
			p.Legend.Add(r.Label, l, s)
			continue
		}
		l, err := plotter.NewLine(xy)
		if err != nil {
			return fmt.Errorf("plot %s: run %q: %w", path, r.Label, err)
		}
		l.Color, l.Width = c, vg.Points(1.2)
		p.Add(l)
		p.Legend.Add(r.Label, l)
	}
	if len(runs) == 0 {
		return fmt.Errorf("plot %s: no runs", path)
	}
	return writePlot(path, p)
}
