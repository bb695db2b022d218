package proctest

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestWaitForAndStop(t *testing.T) {
	// A program that says where it listens, then runs until Ctrl-C and
	// exits with the status its signal handler chooses.
	prog := `echo "listening on port 4711" >&2; trap 'echo bye; exit %s' INT; while :; do sleep 0.05; done`
	for _, tc := range []struct {
		name, status string
		clean        bool
	}{{"a clean exit on SIGINT", "0", true}, {"a failing exit on SIGINT", "3", false}} {
		t.Run(tc.name, func(t *testing.T) {
			p := Start(t, exec.Command("sh", "-c", strings.Replace(prog, "%s", tc.status, 1)))
			if m := p.WaitFor(t, regexp.MustCompile(`port (\d+)`), 30*time.Second); m[1] != "4711" {
				t.Fatalf("WaitFor = %q, want the port", m)
			}
			err := p.Stop(os.Interrupt)
			if (err == nil) != tc.clean || (!tc.clean && !strings.Contains(err.Error(), "exit status 3")) {
				t.Fatalf("Stop = %v, want clean %v", err, tc.clean)
			}
			if !strings.Contains(p.Output(), "bye") {
				t.Errorf("the output lacks what the program printed on SIGINT: %q", p.Output())
			}
			if again := p.Stop(os.Interrupt); (again == nil) != (err == nil) {
				t.Errorf("a second Stop = %v, want the first one's result %v", again, err)
			}
		})
	}
}

func TestKillEndsAProgramThatIgnoresSignals(t *testing.T) {
	p := Start(t, exec.Command("sh", "-c", `trap '' INT TERM; echo up; while :; do sleep 0.05; done`))
	p.WaitFor(t, regexp.MustCompile(`up`), 30*time.Second)
	p.Kill(t)
	select {
	case <-p.Exited():
	default:
		t.Fatal("Kill returned before the program exited")
	}
	if p.Err() == nil {
		t.Error("a killed program reports a clean exit")
	}
}
