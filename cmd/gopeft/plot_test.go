package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// plot draws runs given as directories or metrics files into one PNG, and
// names what is wrong: no --output, labels that do not match the runs, a
// run without eval loss, a missing metrics file.
func TestPlotRuns(t *testing.T) {
	dir := t.TempDir()
	write := func(name, lines string) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "metrics.jsonl"), []byte(lines), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	a := write("bf16", `{"step":1,"loss":4.7,"eval_loss":5.0}`+"\n"+`{"step":2,"loss":4.1,"eval_loss":4.2}`+"\n")
	b := write("fp32", `{"step":1,"loss":4.6,"eval_loss":5.0}`+"\n"+`{"step":2,"loss":4.0,"eval_loss":4.1}`+"\n")
	noEval := write("noeval", `{"step":1,"loss":4.6}`+"\n")
	png := filepath.Join(dir, "cmp.png")
	if out, err := run(t, "plot", a, filepath.Join(b, "metrics.jsonl"), "-o", png); err != nil || !strings.Contains(out, "2 runs") {
		t.Fatalf("plot: %v\n%s", err, out)
	}
	if img, err := os.ReadFile(png); err != nil || !bytes.HasPrefix(img, []byte("\x89PNG")) {
		t.Fatalf("the chart is not a PNG: %v", err)
	}
	if _, err := run(t, "plot", noEval, "--train", "-o", png); err != nil {
		t.Errorf("--train over a run without eval loss: %v", err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{a}, "--output"},
		{[]string{a, b, "--labels", "x", "-o", png}, "--labels has 1 names for 2 runs"},
		{[]string{a, noEval, "-o", png}, `run "noeval" has no finite eval loss`},
		{[]string{filepath.Join(dir, "none"), "-o", png}, "none"},
	} {
		if _, err := run(t, append([]string{"plot"}, c.args...)...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("plot %v: %v, want %q", c.args, err, c.want)
		}
	}
}
