package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// brokerListening is the line `dev --broker-only` prints once its broker
// listens.
var brokerListening = regexp.MustCompile(`kafka:\s+(\S+:\d+)`)

// brokerStartTimeout bounds how long a broker process may take to listen.
const brokerStartTimeout = 60 * time.Second

// startBrokerProcess runs `exe dev --broker-only --in-memory` on a free
// port of 127.0.0.1 and returns its address and a function that stops it
// (a kill: it keeps nothing). The process dies with this one where the
// platform allows (see setParentDeathSignal).
func startBrokerProcess(ctx context.Context, exe string) ([]string, func(), error) {
	cmd := exec.Command(exe, "dev", "--broker-only", "--in-memory", "--kafka-addr", "127.0.0.1:0")
	setParentDeathSignal(cmd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, fmt.Errorf("starting %s dev --broker-only: %w", exe, err)
	}
	var stderr strings.Builder
	cmd.Stderr = &limitedWriter{w: &stderr, left: 4 << 10}
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting %s dev --broker-only: %w (or pass --broker-process=false)", exe, err)
	}
	exited := make(chan struct{})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := brokerListening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	timer := time.NewTimer(brokerStartTimeout)
	defer timer.Stop()
	select {
	case addr := <-found:
		return []string{addr}, stop, nil
	case <-exited:
		return nil, nil, fmt.Errorf("%s dev --broker-only exited before listening: %s", exe, strings.TrimSpace(stderr.String()))
	case <-timer.C:
		stop()
		return nil, nil, fmt.Errorf("%s dev --broker-only did not listen within %v", exe, brokerStartTimeout)
	case <-ctx.Done():
		stop()
		return nil, nil, ctx.Err()
	}
}

// limitedWriter keeps the first left bytes written to it.
type limitedWriter struct {
	w    io.Writer
	left int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if l.left > 0 {
		n := min(len(b), l.left)
		_, _ = l.w.Write(b[:n])
		l.left -= n
	}
	return len(b), nil
}
