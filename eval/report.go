package eval

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"

	"github.com/gopeft/gopeft/internal/atomicfile"
)

// Sample is one line of the samples file: the item's index in file order,
// each option's log-likelihood, the predicted and the gold option. For
// STS-B Pred is the expected score and Gold the gold score; for perplexity
// each line is a document, Loglik holds its total, Pred its number of
// tokens and Gold is null.
type Sample struct {
	Index  int       `json:"index"`
	Loglik []float64 `json:"loglik"`
	Pred   any       `json:"pred"`
	Gold   any       `json:"gold"`
}

// finite returns v, or nil for NaN and ±Inf, which JSON cannot hold.
func finite(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return v
}

// MarshalJSON writes non-finite log-likelihoods as null.
func (s Sample) MarshalJSON() ([]byte, error) {
	ll := make([]any, len(s.Loglik))
	for i, v := range s.Loglik {
		ll[i] = finite(v)
	}
	pred, gold := s.Pred, s.Gold
	if f, ok := pred.(float64); ok {
		pred = finite(f)
	}
	if f, ok := gold.(float64); ok {
		gold = finite(f)
	}
	return json.Marshal(struct {
		Index  int   `json:"index"`
		Loglik []any `json:"loglik"`
		Pred   any   `json:"pred"`
		Gold   any   `json:"gold"`
	}{s.Index, ll, pred, gold})
}

func writeSample(w io.Writer, s Sample) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func writeItemSample(w io.Writer, i int, it Item, s scored, regression bool) error {
	smp := Sample{Index: i, Loglik: s.lls, Pred: s.pred, Gold: it.Gold}
	if regression {
		smp.Pred, smp.Gold = s.expect, it.Score
	}
	return writeSample(w, smp)
}

// MarshalJSON writes a missing (NaN) standard error as null.
func (m Metric) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name   string `json:"name"`
		Value  any    `json:"value"`
		Stderr any    `json:"stderr"`
	}{m.Name, finite(m.Value), finite(m.Stderr)})
}

// UnmarshalJSON reads what MarshalJSON writes (null → NaN).
func (m *Metric) UnmarshalJSON(b []byte) error {
	var v struct {
		Name   string   `json:"name"`
		Value  *float64 `json:"value"`
		Stderr *float64 `json:"stderr"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	m.Name, m.Value, m.Stderr = v.Name, math.NaN(), math.NaN()
	if v.Value != nil {
		m.Value = *v.Value
	}
	if v.Stderr != nil {
		m.Stderr = *v.Stderr
	}
	return nil
}

// resultsJSON is the results file's layout.
type resultsJSON struct {
	Results []resultJSON `json:"results"`
}

type resultJSON struct {
	Task    string   `json:"task"`
	Data    string   `json:"data"`
	Shots   int      `json:"shots"`
	N       int      `json:"n"`
	Metrics []Metric `json:"metrics"`
}

// WriteJSON writes results as {"results": [{"task", "data", "shots", "n",
// "metrics": [{"name", "value", "stderr"}]}]}, indented; a missing stderr
// is null.
func WriteJSON(w io.Writer, results []Result) error {
	out := resultsJSON{Results: make([]resultJSON, len(results))}
	for i, r := range results {
		out.Results[i] = resultJSON{r.Task, r.Data, r.Shots, r.N, r.Metrics}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteJSONFile writes WriteJSON's output to path atomically.
func WriteJSONFile(path string, results []Result) error {
	return atomicfile.Write(path, func(w io.Writer) error { return WriteJSON(w, results) })
}

// ReadJSON reads a results file written by WriteJSON.
func ReadJSON(r io.Reader) ([]Result, error) {
	var in resultsJSON
	if err := json.NewDecoder(r).Decode(&in); err != nil {
		return nil, fmt.Errorf("results JSON: %w", err)
	}
	out := make([]Result, len(in.Results))
	for i, r := range in.Results {
		out[i] = Result{Task: r.Task, Data: r.Data, Shots: r.Shots, N: r.N, Metrics: r.Metrics}
	}
	return out, nil
}

// fmtValue prints a metric value with 4 decimals, or "—" when missing.
func fmtValue(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return strconv.FormatFloat(v, 'f', 4, 64)
}

// WriteMarkdown writes results as a table "| task | metric | value |
// stderr | n |", one row per metric; a task's name appears on its first
// row only. Shots are shown with the task when non-zero ("arc_easy
// (5-shot)").
func WriteMarkdown(w io.Writer, results []Result) error {
	if _, err := fmt.Fprint(w, "| task | metric | value | stderr | n |\n|---|---|---|---|---|\n"); err != nil {
		return err
	}
	for _, r := range results {
		name := r.Task
		if r.Shots > 0 {
			name = fmt.Sprintf("%s (%d-shot)", r.Task, r.Shots)
		}
		for i, m := range r.Metrics {
			if i > 0 {
				name = ""
			}
			if _, err := fmt.Fprintf(w, "| %s | %s | %s | %s | %d |\n", name, m.Name, fmtValue(m.Value), fmtValue(m.Stderr), r.N); err != nil {
				return err
			}
		}
	}
	return nil
}
