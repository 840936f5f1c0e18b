package train

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func f64(v float64) *float64 { return &v }

func TestMetricsLogLines(t *testing.T) {
	var buf bytes.Buffer
	l := NewMetricsLog(&buf)
	recs := []Record{
		{Step: 1, Epoch: 0.01, Loss: 2.5, LR: 1e-5, GradNorm: 0.75, TokensPerSec: 1234.5, Elapsed: 1.5},
		{Step: 2, Loss: math.NaN(), LR: 2e-5, GradNorm: math.Inf(1), EvalLoss: f64(2.25), Elapsed: 3,
			Extra: map[string]float64{"eval_accuracy": 0.5, "a\"b": 1}},
	}
	for _, r := range recs {
		if err := l.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	want := `{"step":1,"epoch":0.01,"loss":2.5,"lr":1e-05,"grad_norm":0.75,"tokens_per_s":1234.5,"elapsed_s":1.5}
{"step":2,"epoch":0,"loss":null,"lr":2e-05,"grad_norm":null,"tokens_per_s":0,"eval_loss":2.25,"elapsed_s":3,"a\"b":1,"eval_accuracy":0.5}
`
	if buf.String() != want {
		t.Fatalf("log:\n%s\nwant:\n%s", buf.String(), want)
	}
	got, err := ReadMetrics(strings.NewReader(buf.String()), "m.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].TokensPerSec != 1234.5 || got[0].EvalLoss != nil ||
		!math.IsNaN(got[1].Loss) || got[1].EvalLoss == nil || *got[1].EvalLoss != 2.25 || got[1].Extra["eval_accuracy"] != 0.5 {
		t.Errorf("read back %+v", got)
	}
	if err := l.Write(Record{Extra: map[string]float64{"loss": 1}}); err == nil {
		t.Error("extra key clashing with loss accepted")
	}
	_, err = ReadMetrics(strings.NewReader("{\"step\":1}\n\n{\"step\":\"x\"}\n"), "m.jsonl")
	if err == nil || !strings.Contains(err.Error(), "m.jsonl:3") {
		t.Errorf("bad line: %v", err)
	}
}

func TestResumeMetricsLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.jsonl")
	l, err := CreateMetricsLog(path)
	if err != nil {
		t.Fatal(err)
	}
	for s := 1; s <= 5; s++ {
		l.Write(Record{Step: s, Loss: float64(s)})
	}
	l.Close()
	// A crash mid-line leaves a partial record.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"step":6,"lo`)
	f.Close()

	l, err = ResumeMetricsLog(path, 3) // the checkpoint was at step 3
	if err != nil {
		t.Fatal(err)
	}
	l.Write(Record{Step: 4, Loss: 40})
	l.Close()
	got, err := ReadMetricsFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var steps []int
	for _, r := range got {
		steps = append(steps, r.Step)
	}
	if len(got) != 4 || got[3].Loss != 40 || steps[2] != 3 {
		t.Errorf("steps after resume %v (last loss %v), want [1 2 3 4] with 40", steps, got[len(got)-1].Loss)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v after rewrite", fi.Mode())
	}
	os.WriteFile(path, []byte("{\"step\":1}\nnot json\n"), 0o644)
	if _, err := ResumeMetricsLog(path, 3); err == nil || !strings.Contains(err.Error(), path+":2") {
		t.Errorf("corrupt log: %v", err)
	}
	fresh := filepath.Join(t.TempDir(), "new.jsonl")
	if l, err := ResumeMetricsLog(fresh, 10); err != nil {
		t.Errorf("missing log: %v", err)
	} else {
		l.Close()
	}
}

func FuzzReadMetrics(f *testing.F) {
	f.Add([]byte(`{"step":1,"loss":2.5,"eval_loss":null,"x":3}`))
	f.Add([]byte("{\"step\":-1}\n{}"))
	f.Add([]byte(`{"step":1e300}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := ReadMetrics(bytes.NewReader(data), "fuzz.jsonl")
		if err != nil {
			return
		}
		// Whatever parses must write and parse back to the same steps.
		var buf bytes.Buffer
		l := NewMetricsLog(&buf)
		for _, r := range recs {
			if r.Step < 0 {
				t.Fatalf("negative step %d accepted", r.Step)
			}
			if err := l.Write(r); err != nil {
				t.Fatalf("record read back does not write: %v", err)
			}
		}
		again, err := ReadMetrics(&buf, "again")
		if err != nil || len(again) != len(recs) {
			t.Fatalf("round trip: %v (%d vs %d records)", err, len(again), len(recs))
		}
	})
}

func TestPlotLoss(t *testing.T) {
	var recs []Record
	for s := 1; s <= 200; s++ {
		r := Record{Step: s, Loss: 3*math.Exp(-float64(s)/60) + 0.5}
		if s%50 == 0 {
			r.EvalLoss = f64(r.Loss + 0.2)
		}
		recs = append(recs, r)
	}
	recs[10].Loss = math.NaN() // skipped, not fatal
	path := filepath.Join(t.TempDir(), "loss.png")
	if err := PlotLoss(path, recs, "stories15M LoRA"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 5000 {
		t.Errorf("not a plausible PNG: %d bytes, starts %q", len(b), b[:min(8, len(b))])
	}
	if err := PlotLoss(path, []Record{{Step: 1, Loss: math.NaN()}}, ""); err == nil {
		t.Error("plot without finite values accepted")
	}
	if err := PlotLoss(filepath.Join(t.TempDir(), "one.png"), []Record{{Step: 1, Loss: 2}}, ""); err != nil {
		t.Errorf("single point: %v", err)
	}
}

// fakeClock advances by step on every call.
func fakeClock(step time.Duration) func() time.Time {
	t := time.Unix(0, 0)
	return func() time.Time { t = t.Add(step); return t }
}

func TestProgressPlain(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, 0, 25)
	if p.Terminal {
		t.Fatal("a bytes.Buffer taken for a terminal")
	}
	p.start, p.now = time.Unix(0, 0), fakeClock(2*time.Second)
	for s := 1; s <= 25; s++ {
		p.Update(s, 1.5, 1000)
	}
	p.Done()
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	// Steps 1, 10, 20 and 25 (the last).
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "step 10/25 loss 1.5000 tok/s 1000") || !strings.HasPrefix(lines[3], "step 25/25") {
		t.Fatalf("lines:\n%s", buf.String())
	}
	// After 10 steps at 2 s each, 15 steps remain: 30 s.
	if !strings.Contains(lines[1], "elapsed 20s eta 30s") {
		t.Errorf("ETA line %q, want elapsed 20s eta 30s", lines[1])
	}
	if strings.Contains(buf.String(), "\r") {
		t.Error("carriage return in plain output")
	}
}

func TestProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, 100, 1000) // resumed at step 100
	p.Terminal = true
	p.start, p.now = time.Unix(0, 0), fakeClock(time.Minute)
	p.Update(101, 12.25, 50000) // 1 step per minute, 899 left
	p.Update(102, 2.5, 5)
	p.Printf("saved checkpoint")
	p.Update(103, 2.5, 5)
	p.Done()
	out := buf.String()
	parts := strings.Split(out, "\r")
	if len(parts) < 3 || !strings.HasPrefix(parts[1], "step 101/1000 (10.1%) | loss 12.2500 | 50000 tok/s | elapsed 1m00s | ETA 14h59m00s") {
		t.Fatalf("status lines %q", parts)
	}
	// The second line is shorter and must blank the first one's tail.
	first, second := parts[1], parts[2]
	if len(second) != len(first) || !strings.HasSuffix(second, " ") {
		t.Errorf("shorter line not padded: %q after %q", second, first)
	}
	if !strings.Contains(out, "\rsaved checkpoint\n") || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 2 {
		t.Errorf("message or final newline wrong: %q", out)
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) || IsTerminal(&bytes.Buffer{}) {
		t.Error("a regular file or buffer reported as a terminal")
	}
	if dn, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0); err == nil {
		// /dev/null is a character device, as a terminal is: the check
		// accepts it, which is harmless (nothing is shown).
		if !IsTerminal(dn) {
			t.Error("/dev/null is a character device")
		}
		dn.Close()
	}
}
