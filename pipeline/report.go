package pipeline

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/gopeft/gopeft/internal/atomicfile"
)

// Num is a metric in JSON: a number, or null when there is none (NaN: a
// classification set before any head exists for it).
type Num float64

// MarshalJSON writes NaN and infinities as null.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// UnmarshalJSON reads null as NaN.
func (n *Num) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = Num(f)
	return nil
}

// The metrics of a stage's held-out set.
const (
	MetricPerplexity = "perplexity" // language-model stages: exp(mean token loss), lower is better
	MetricAccuracy   = "accuracy"   // classification stages: higher is better
)

// Report is continual.json: how every stage's held-out set fares after
// every stage.
type Report struct {
	Strategy string   `json:"strategy"`
	Stages   []string `json:"stages"`
	// Metric is the metric of every set (perplexity or accuracy), or
	// "mixed" when they differ; Metrics gives each set's.
	Metric  string   `json:"metric"`
	Metrics []string `json:"metrics"`
	// Before is the base model on each stage's set; Matrix[i][j] the
	// model after stage i on stage j's set.
	Before []Num   `json:"before"`
	Matrix [][]Num `json:"matrix"`
	// The standard summaries over the final row (Lopez-Paz and Ranzato,
	// 2017; Chaudhry et al., 2018), in the metric's own units:
	// AverageFinal is the mean of the last row; BackwardTransfer the mean
	// over the stages before the last of final − just after training it
	// (for perplexity a positive value means the set got worse);
	// Forgetting the mean over the same stages of how much worse the final
	// model is than the best model since the stage trained (worse is
	// higher perplexity or lower accuracy; negative when it got better).
	// Null for mixed metrics.
	AverageFinal     Num `json:"average_final"`
	BackwardTransfer Num `json:"backward_transfer"`
	Forgetting       Num `json:"forgetting"`
	// StageForgetting is each stage's forgetting (null for the last).
	StageForgetting []Num `json:"stage_forgetting"`
}

// summarize fills the summaries from Matrix.
func (r *Report) summarize() {
	nan := Num(math.NaN())
	r.AverageFinal, r.BackwardTransfer, r.Forgetting = nan, nan, nan
	T := len(r.Matrix)
	r.StageForgetting = make([]Num, len(r.Stages))
	for j := range r.StageForgetting {
		r.StageForgetting[j] = nan
	}
	if T == 0 {
		return
	}
	last := r.Matrix[T-1]
	for j := 0; j < T-1 && j < len(last); j++ {
		best := math.NaN()
		for i := j; i < T-1; i++ {
			v := float64(r.Matrix[i][j])
			if math.IsNaN(best) || (r.Metrics[j] == MetricAccuracy && v > best) || (r.Metrics[j] != MetricAccuracy && v < best) {
				best = v
			}
		}
		f := float64(last[j]) - best // perplexity: the rise
		if r.Metrics[j] == MetricAccuracy {
			f = best - float64(last[j])
		}
		r.StageForgetting[j] = Num(f)
	}
	if r.Metric == "mixed" || T != len(r.Stages) {
		return
	}
	var avg float64
	for _, v := range last {
		avg += float64(v)
	}
	r.AverageFinal = Num(avg / float64(len(last)))
	if T < 2 {
		return
	}
	var bwt, fg float64
	for j := 0; j < T-1; j++ {
		bwt += float64(last[j]) - float64(r.Matrix[j][j])
		fg += float64(r.StageForgetting[j])
	}
	r.BackwardTransfer = Num(bwt / float64(T-1))
	r.Forgetting = Num(fg / float64(T-1))
}

// Markdown renders the matrix as a table with the summaries below it.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Forgetting matrix (strategy %s; row: after the stage, column: the stage's held-out set; %s)\n\n", r.Strategy, r.metricWords())
	b.WriteString("| after \\ on |")
	for j, s := range r.Stages {
		fmt.Fprintf(&b, " %s (%s) |", s, r.Metrics[j])
	}
	b.WriteString("\n|---|")
	for range r.Stages {
		b.WriteString("---:|")
	}
	row := func(name string, vals []Num) {
		fmt.Fprintf(&b, "\n| %s |", name)
		for _, v := range vals {
			fmt.Fprintf(&b, " %s |", fmtNum(v))
		}
	}
	row("base", r.Before)
	for i, vals := range r.Matrix {
		row(r.Stages[i], vals)
	}
	fmt.Fprintf(&b, "\n\naverage final %s, backward transfer %s, forgetting %s\n", fmtNum(r.AverageFinal), fmtNum(r.BackwardTransfer), fmtNum(r.Forgetting))
	return b.String()
}

func (r *Report) metricWords() string {
	switch r.Metric {
	case MetricPerplexity:
		return "perplexity, lower is better"
	case MetricAccuracy:
		return "accuracy, higher is better"
	}
	return "perplexity lower and accuracy higher is better"
}

func fmtNum(v Num) string {
	if math.IsNaN(float64(v)) {
		return "–"
	}
	return fmt.Sprintf("%.4g", float64(v))
}

// heatGrid is the matrix (with the base as row 0) for plotter.HeatMap,
// each column scaled to its own range so that sets with different
// metrics and scales share the colours: 0 is the column's best value, 1
// its worst.
type heatGrid struct {
	rows [][]Num
	lo   []float64
	hi   []float64
	acc  []bool
}

func (g heatGrid) Dims() (c, r int) { return len(g.lo), len(g.rows) }
func (g heatGrid) X(c int) float64  { return float64(c) }
func (g heatGrid) Y(r int) float64  { return float64(r) }

// Z is row r from the bottom: the first row (the base) is drawn on top.
func (g heatGrid) Z(c, r int) float64 {
	v := float64(g.rows[len(g.rows)-1-r][c])
	if math.IsNaN(v) {
		return math.NaN()
	}
	if g.hi[c] == g.lo[c] {
		return 0
	}
	z := (v - g.lo[c]) / (g.hi[c] - g.lo[c])
	if g.acc[c] {
		z = 1 - z
	}
	return z
}

// WritePNG draws the matrix as a heat map (green: the set's best value
// across rows, red: its worst) with each cell's value written in it.
func (r *Report) WritePNG(path string) error {
	rows := append([][]Num{r.Before}, r.Matrix...)
	g := heatGrid{rows: rows, lo: make([]float64, len(r.Stages)), hi: make([]float64, len(r.Stages)), acc: make([]bool, len(r.Stages))}
	for c := range r.Stages {
		g.lo[c], g.hi[c] = math.Inf(1), math.Inf(-1)
		g.acc[c] = r.Metrics[c] == MetricAccuracy
		for _, row := range rows {
			if v := float64(row[c]); !math.IsNaN(v) {
				g.lo[c], g.hi[c] = math.Min(g.lo[c], v), math.Max(g.hi[c], v)
			}
		}
		if math.IsInf(g.lo[c], 0) {
			g.lo[c], g.hi[c] = 0, 0
		}
	}
	p := plot.New()
	p.Title.Text = "forgetting matrix (" + r.Strategy + "): rows after each stage, columns each stage's set"
	pal := greenRed{}
	hm := plotter.NewHeatMap(g, pal)
	hm.NaN = color.Gray{Y: 220}
	hm.Min, hm.Max = 0, 1
	p.Add(hm)
	var xys plotter.XYs
	var labels []string
	for ri, row := range rows {
		for c, v := range row {
			xys = append(xys, plotter.XY{X: float64(c), Y: float64(len(rows) - 1 - ri)})
			labels = append(labels, fmtNum(v))
		}
	}
	lb, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].XAlign, lb.TextStyle[i].YAlign = -0.5, -0.5
	}
	p.Add(lb)
	var xt, yt []plot.Tick
	for c, s := range r.Stages {
		xt = append(xt, plot.Tick{Value: float64(c), Label: s + " (" + r.Metrics[c] + ")"})
	}
	for ri := range rows {
		label := "base"
		if ri > 0 {
			label = "after " + r.Stages[ri-1]
		}
		yt = append(yt, plot.Tick{Value: float64(len(rows) - 1 - ri), Label: label})
	}
	p.X.Tick.Marker = plot.ConstantTicks(xt)
	p.Y.Tick.Marker = plot.ConstantTicks(yt)
	p.X.Label.Text, p.Y.Label.Text = "held-out set", "model"
	wt, err := p.WriterTo(vg.Length(2+1.6*float64(len(r.Stages)))*vg.Inch, vg.Length(1.5+0.6*float64(len(rows)))*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return atomicfile.Write(path, func(w io.Writer) error {
		_, err := wt.WriteTo(w)
		return err
	})
}

// greenRed is a palette from green (0) through yellow to red (1).
type greenRed struct{}

func (greenRed) Colors() []color.Color {
	var cs []color.Color
	for i := 0; i < 32; i++ {
		t := float64(i) / 31
		r, g := math.Min(1, 2*t), math.Min(1, 2*(1-t))
		cs = append(cs, color.RGBA{R: uint8(80 + 175*r), G: uint8(80 + 150*g), B: 90, A: 255})
	}
	return cs
}
