package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// isTerminal reports whether stream (a reader or writer) is a terminal: an
// *os.File on a character device. Pipes, regular files and buffers are not.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// useColor reports whether to color what is written to w: only on a
// terminal, and never when NO_COLOR is set (https://no-color.org) or the
// terminal is "dumb".
func useColor(w io.Writer) bool {
	if _, set := os.LookupEnv("NO_COLOR"); set || os.Getenv("TERM") == "dumb" {
		return false
	}
	return isTerminal(w)
}

// ANSI styles used on terminals.
const (
	ansiReset = "\x1b[0m"
	ansiDim   = "\x1b[2m"
	ansiBold  = "\x1b[1m"
	ansiRed   = "\x1b[31m"
	ansiGreen = "\x1b[32m"
	ansiCyan  = "\x1b[36m"
)

// paint wraps s in an ANSI style when on is true.
func paint(on bool, style, s string) string {
	if !on || s == "" {
		return s
	}
	return style + s + ansiReset
}

// progress is a one-line indicator redrawn on a terminal (stderr) while a
// long operation runs: a bar when the total is known, a spinner otherwise.
// A nil *progress does nothing, so callers never check whether one is shown.
// Its methods are safe for concurrent use.
type progress struct {
	w     io.Writer
	label string
	total int64
	start time.Time

	mu   sync.Mutex
	n    int64
	tick int
	stop chan struct{}
	done chan struct{}
}

// progressInterval is how often the line is redrawn.
const progressInterval = 100 * time.Millisecond

// startProgress starts drawing on w when w is a terminal and returns nil
// (nothing drawn) otherwise: pipes and logs stay clean. total is the
// number of steps, or 0 for a spinner.
func startProgress(w io.Writer, label string, total int64) *progress {
	if !isTerminal(w) {
		return nil
	}
	return newProgress(w, label, total)
}

// newProgress starts drawing on w unconditionally.
func newProgress(w io.Writer, label string, total int64) *progress {
	p := &progress{w: w, label: label, total: total, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(progressInterval)
	defer t.Stop()
	for {
		p.mu.Lock()
		p.draw()
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// draw writes the current line; p.mu is held.
func (p *progress) draw() {
	p.tick++
	fmt.Fprint(p.w, "\r\x1b[K"+renderProgress(p.label, p.n, p.total, p.tick, time.Since(p.start)))
}

// Add records n more steps done.
func (p *progress) Add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.n += n
	p.mu.Unlock()
}

// Pause clears the line, runs fn (which may write to the same terminal) and
// draws the line again, so that output and the indicator do not mix.
func (p *progress) Pause(fn func()) {
	if p == nil {
		fn()
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprint(p.w, "\r\x1b[K")
	fn()
	p.draw()
}

// Stop erases the line and stops drawing. It is idempotent.
func (p *progress) Stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	select {
	case <-p.stop:
		p.mu.Unlock()
		return
	default:
		close(p.stop)
	}
	p.mu.Unlock()
	<-p.done
	fmt.Fprint(p.w, "\r\x1b[K")
}

// spinnerFrames are drawn in turn while the total is unknown.
const spinnerFrames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

// renderProgress returns the indicator's text: with a total, a 20-cell bar,
// the percentage and the counts; without one, a spinner frame. The elapsed
// time follows once it reaches a second.
func renderProgress(label string, n, total int64, tick int, elapsed time.Duration) string {
	var b strings.Builder
	if total > 0 {
		const width = 20
		if n > total {
			n = total
		}
		filled := int(n * width / total)
		fmt.Fprintf(&b, "[%s%s] %3d%% %d/%d %s", strings.Repeat("█", filled), strings.Repeat("░", width-filled), n*100/total, n, total, label)
	} else {
		frames := []rune(spinnerFrames)
		fmt.Fprintf(&b, "%c %s", frames[tick%len(frames)], label)
		if n > 0 {
			fmt.Fprintf(&b, " (%d)", n)
		}
	}
	if elapsed >= time.Second {
		fmt.Fprintf(&b, " %s", elapsed.Truncate(time.Second))
	}
	return b.String()
}
