// Package proctest runs programs for tests as a user would: built with go
// build, started as processes whose output the test reads, and stopped as
// Ctrl-C stops them. Every process a test starts ends with the test.
package proctest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/internal/syncbuf"
)

// StopTimeout is how long Stop waits for a process to exit after its
// signal before it kills it.
const StopTimeout = 30 * time.Second

// Build runs go build on pkg (a path as go build takes it, e.g. "." or
// "./cmd/accounts", relative to the test's directory) and returns the path
// of the binary, named name, in a directory removed at the test's end.
func Build(t testing.TB, pkg, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build -o %s %s: %v\n%s", name, pkg, err, out)
	}
	return bin
}

// Process is a running program. Its stdout and stderr go, together, to one
// buffer that Output and WaitFor read.
type Process struct {
	cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan struct{}
	err  error // cmd.Wait's, set before done closes

	stopOnce sync.Once
	stopErr  error
}

// Start starts cmd (its Stdout and Stderr must be unset) and returns at
// once. The kernel kills the process if the test binary dies first. At the
// end of the test a process still running is stopped with SIGINT, as
// Ctrl-C would, and the test fails unless it then exits with status 0; a
// process that exited before is left for the test to judge (Err).
func Start(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = sysProcAttr()
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done: // it exited on its own: how is for the test to judge (Err)
			return
		default:
		}
		if err := p.Stop(os.Interrupt); err != nil {
			t.Errorf("%s: %v\n%s", p.name(), err, p.Output())
		}
	})
	return p
}

func (p *Process) name() string { return filepath.Base(p.cmd.Path) }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited is closed when the process has exited; Err then returns how.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Err returns cmd.Wait's error once Exited is closed (nil: status 0).
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// WaitFor waits up to timeout until the output matches re and returns the
// match and its submatches. It fails the test if the process exits first
// or nothing matches in time.
func (p *Process) WaitFor(t testing.TB, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindStringSubmatch(p.Output()); m != nil {
			return m
		}
		select {
		case <-p.done:
			if m := re.FindStringSubmatch(p.Output()); m != nil {
				return m
			}
			t.Fatalf("%s exited (%v) before printing a match of %q:\n%s", p.name(), p.err, re, p.Output())
		case <-deadline.C:
			t.Fatalf("%s printed no match of %q within %s:\n%s", p.name(), re, timeout, p.Output())
		case <-tick.C:
		}
	}
}

// Stop sends sig and waits up to StopTimeout for the process to exit,
// killing it after that. It returns nil when the process exited with status
// 0, or why not. Only the first call signals; later ones return its result.
func (p *Process) Stop(sig os.Signal) error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			p.stopErr = p.exitErr()
			return
		default:
		}
		if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.stopErr = fmt.Errorf("sending %v: %w", sig, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), StopTimeout)
		defer cancel()
		select {
		case <-p.done:
			p.stopErr = errors.Join(p.stopErr, p.exitErr())
		case <-ctx.Done():
			_ = p.cmd.Process.Kill()
			<-p.done
			p.stopErr = fmt.Errorf("did not exit within %s of %v: killed", StopTimeout, sig)
		}
	})
	return p.stopErr
}

// Kill kills the process with SIGKILL and waits for it to exit. It fails
// the test if the process had already exited.
func (p *Process) Kill(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s exited (%v) before it was killed:\n%s", p.name(), p.err, p.Output())
	default:
	}
	p.stopOnce.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
}

func (p *Process) exitErr() error {
	if p.err != nil {
		return fmt.Errorf("exited with %w", p.err)
	}
	return nil
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago, for a program that must be told its address before it starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
