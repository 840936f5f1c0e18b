package train

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Progress reports training progress. On a terminal it keeps one status
// line up to date with carriage returns; elsewhere (a log file, a pipe) it
// prints a plain line every Every steps, plus the first and the last.
type Progress struct {
	// Every is the step interval of plain lines (non-terminal output).
	Every int
	// Terminal selects the single updating line; NewProgress sets it from
	// IsTerminal(w).
	Terminal bool

	w         io.Writer
	total     int
	startStep int
	start     time.Time
	now       func() time.Time
	lastWidth int // characters of the status line on screen; 0 when none
}

// NewProgress reports to w for a run that is at startStep (non-zero when
// resuming) and ends at total steps. w is treated as a terminal when it is
// an *os.File on a character device (see IsTerminal).
func NewProgress(w io.Writer, startStep, total int) *Progress {
	return &Progress{Every: 10, w: w, Terminal: IsTerminal(w), total: total, startStep: startStep, start: time.Now(), now: time.Now}
}

// IsTerminal reports whether w is an *os.File on a character device (a
// terminal), using only the standard library.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Update reports that step updates are done; loss and tokensPerSec describe
// the latest one.
func (p *Progress) Update(step int, loss, tokensPerSec float64) {
	elapsed := p.now().Sub(p.start)
	eta := "?"
	if done := step - p.startStep; done > 0 && step <= p.total {
		eta = fmtDuration(time.Duration(float64(elapsed) / float64(done) * float64(p.total-step)))
	}
	if p.Terminal {
		pct := 0.0
		if p.total > 0 {
			pct = 100 * float64(step) / float64(p.total)
		}
		line := fmt.Sprintf("step %d/%d (%.1f%%) | loss %.4f | %.0f tok/s | elapsed %s | ETA %s",
			step, p.total, pct, loss, tokensPerSec, fmtDuration(elapsed), eta)
		pad := ""
		if n := p.lastWidth - len(line); n > 0 {
			pad = strings.Repeat(" ", n) // erase the tail of a longer line
		}
		fmt.Fprintf(p.w, "\r%s%s", line, pad)
		p.lastWidth = len(line)
		return
	}
	every := max(p.Every, 1)
	if step%every != 0 && step != p.startStep+1 && step != p.total {
		return
	}
	fmt.Fprintf(p.w, "step %d/%d loss %.4f tok/s %.0f elapsed %s eta %s\n",
		step, p.total, loss, tokensPerSec, fmtDuration(elapsed), eta)
}

// Printf prints a message on its own line without garbling the status line
// (which the next Update redraws).
func (p *Progress) Printf(format string, args ...any) {
	p.clear()
	msg := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	io.WriteString(p.w, msg)
}

// Done ends the status line on a terminal.
func (p *Progress) Done() {
	if p.Terminal && p.lastWidth > 0 {
		io.WriteString(p.w, "\n")
		p.lastWidth = 0
	}
}

// clear erases the status line on a terminal.
func (p *Progress) clear() {
	if p.Terminal && p.lastWidth > 0 {
		fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.lastWidth))
		p.lastWidth = 0
	}
}

// fmtDuration prints d rounded to seconds: 45s, 12m03s, 3h07m12s.
func fmtDuration(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%dh%02dm%02ds", s/3600, s/60%60, s%60)
}
