package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// Record is one line of the metrics log. NaN and ±Inf are written as null
// (JSON has no such numbers) and read back as NaN.
type Record struct {
	Step         int      // optimizer updates completed
	Epoch        float64  // fractional epoch
	Loss         float64  // training loss of the step
	LR           float64  // learning rate used
	GradNorm     float64  // global gradient norm before clipping
	TokensPerSec float64  // training throughput
	EvalLoss     *float64 // present only on steps that evaluated
	Elapsed      float64  // seconds since the run started
	// Extra holds further metrics (eval_accuracy, tokens, ...), written as
	// top-level keys in sorted order after the standard ones.
	Extra map[string]float64
}

// metricKeys are the standard keys, in the order they are written.
var metricKeys = []string{"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "eval_loss", "elapsed_s"}

// AppendJSON appends r as one JSON object (no newline) to b.
func (r Record) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"step":`...)
	b = strconv.AppendInt(b, int64(r.Step), 10)
	num := func(key string, v float64) {
		b = append(b, ',', '"')
		b = append(b, key...)
		b = append(b, '"', ':')
		b = appendNumber(b, v)
	}
	num("epoch", r.Epoch)
	num("loss", r.Loss)
	num("lr", r.LR)
	num("grad_norm", r.GradNorm)
	num("tokens_per_s", r.TokensPerSec)
	if r.EvalLoss != nil {
		num("eval_loss", *r.EvalLoss)
	}
	num("elapsed_s", r.Elapsed)
	keys := make([]string, 0, len(r.Extra))
	for _, k := range slices.Sorted(maps.Keys(r.Extra)) {
		if slices.Contains(metricKeys, k) {
			return nil, fmt.Errorf("metrics: extra key %q clashes with a standard key", k)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		q, _ := json.Marshal(k) // a string always encodes
		b = append(b, ',')
		b = append(b, q...)
		b = append(b, ':')
		b = appendNumber(b, r.Extra[k])
	}
	return append(b, '}'), nil
}

// appendNumber writes v as the shortest JSON number that reads back as the
// same float64, or null for NaN and ±Inf.
func appendNumber(b []byte, v float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// MetricsLog writes Records as JSON Lines. Each line goes to the underlying
// writer in a single Write call, unbuffered, so a crash loses at most the
// line being written.
type MetricsLog struct {
	w   io.Writer
	f   *os.File // non-nil when the log owns a file
	buf []byte
}

// NewMetricsLog writes records to w.
func NewMetricsLog(w io.Writer) *MetricsLog { return &MetricsLog{w: w} }

// CreateMetricsLog creates (or truncates) the log file at path.
func CreateMetricsLog(path string) (*MetricsLog, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("metrics log: %w", err)
	}
	return &MetricsLog{w: f, f: f}, nil
}

// ResumeMetricsLog opens the log at path for a run resuming after step
// updates: records of later steps (written after that checkpoint) and a
// final line cut short by a crash are dropped, the rest kept, and new
// records are appended. A missing file is created.
func ResumeMetricsLog(path string, step int) (*MetricsLog, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return CreateMetricsLog(path)
	}
	if err != nil {
		return nil, fmt.Errorf("metrics log: %w", err)
	}
	var keep []byte
	for lineNo := 1; len(data) > 0; lineNo++ {
		line, rest, complete := bytes.Cut(data, []byte{'\n'})
		data = rest
		if !complete { // an unfinished last line
			break
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		r, err := parseRecord(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, lineNo, err)
		}
		if r.Step <= step {
			keep = append(append(keep, line...), '\n')
		}
	}
	if err := writeAtomic(path, func(w io.Writer) error { _, err := w.Write(keep); return err }); err != nil {
		return nil, fmt.Errorf("metrics log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("metrics log: %w", err)
	}
	return &MetricsLog{w: f, f: f}, nil
}

// Write appends r as one line.
func (l *MetricsLog) Write(r Record) error {
	b, err := r.AppendJSON(l.buf[:0])
	if err != nil {
		return err
	}
	b = append(b, '\n')
	l.buf = b
	if _, err := l.w.Write(b); err != nil {
		return fmt.Errorf("metrics log: %w", err)
	}
	return nil
}

// Close closes the file the log owns (a no-op for NewMetricsLog).
func (l *MetricsLog) Close() error {
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}

// ReadMetrics parses a metrics log; name is used in error messages, which
// give the line number. Blank lines are skipped.
func ReadMetrics(r io.Reader, name string) ([]Record, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	var out []Record
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		rec, err := parseRecord(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %v", name, lineNo, err)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return out, nil
}

// ReadMetricsFile reads the metrics log at path.
func ReadMetricsFile(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadMetrics(f, path)
}

// parseRecord decodes one line. Every value must be a number or null;
// "step" must be a non-negative integer.
func parseRecord(line []byte) (Record, error) {
	var m map[string]*float64
	if err := json.Unmarshal(line, &m); err != nil {
		return Record{}, fmt.Errorf("not a metrics record: %v", err)
	}
	get := func(k string) float64 {
		if v := m[k]; v != nil {
			return *v
		}
		return math.NaN()
	}
	s, ok := m["step"]
	if !ok || s == nil || *s < 0 || *s != math.Trunc(*s) || *s > 1<<53 {
		return Record{}, fmt.Errorf(`"step" must be a non-negative integer`)
	}
	r := Record{
		Step: int(*s), Epoch: get("epoch"), Loss: get("loss"), LR: get("lr"),
		GradNorm: get("grad_norm"), TokensPerSec: get("tokens_per_s"), Elapsed: get("elapsed_s"),
	}
	if _, ok := m["eval_loss"]; ok {
		v := get("eval_loss")
		r.EvalLoss = &v
	}
	for k := range m {
		if !slices.Contains(metricKeys, k) {
			if r.Extra == nil {
				r.Extra = map[string]float64{}
			}
			r.Extra[k] = get(k)
		}
	}
	return r, nil
}

// writeAtomic writes path through a temporary file in the same directory,
// synced and renamed into place, so readers never see a partial file.
func writeAtomic(path string, write func(w io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(0o644)
	if err == nil {
		err = writeFile(f, write)
	} else {
		f.Close()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
