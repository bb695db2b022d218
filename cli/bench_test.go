package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/bench"
)

func TestBenchMeasuresEveryPhaseOnTinySizes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	app := &App{Kinds: []aggregates.Kind{order.Definition()}, Name: "chronicle", Stdout: &out, Stderr: &errb}
	code := app.Run(ctx, []string{"bench", "--commands", "400", "--orders", "40", "--partitions", "2", "--commit-every", "100",
		"--commit-interval", "20ms", "--latency-duration", "200ms", "--replay-events", "2000", "--checkpoint-back", "200", "--json"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var res bench.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output is not the JSON result (%v):\n%s", err, out.String())
	}
	if res.Chronicle == nil || res.Chronicle.Commands != 400 || res.Bare == nil || res.Ratio <= 0 {
		t.Errorf("throughput: %+v %+v ratio %v", res.Chronicle, res.Bare, res.Ratio)
	}
	if len(res.Latency) != 2 || res.Latency[0].Share != 0.1 || res.Latency[1].Share != 0.5 || res.Latency[0].P99 <= 0 {
		t.Errorf("latency: %+v", res.Latency)
	}
	if res.Restore == nil || res.Restore.Events != 2000 || res.Restore.CheckpointEvents != 200 {
		t.Errorf("restore: %+v", res.Restore)
	}
	if errb.Len() != 0 {
		t.Errorf("stderr is not a terminal, yet got %q", errb.String())
	}

	out.Reset()
	if code := app.Run(ctx, []string{"bench", "--commands", "200", "--orders", "20", "--phases", "chronicle,bare"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"chronicle", "bare loop", "ratio"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if code := app.Run(ctx, []string{"bench", "--phases", "latency,warp"}); code != 1 || !strings.Contains(errb.String(), `unknown phase "warp"`) {
		t.Errorf("bad phases: exit %d, %s", code, errb.String())
	}
}

// TestBenchRunsEachRoundsBrokerAsAProcess runs the program as a user does:
// without --brokers, each round's broker must be a process of its own (the
// program's dev --broker-only), and the bench must end with them stopped.
func TestBenchRunsEachRoundsBrokerAsAProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary(t), "bench", "--commands", "400", "--orders", "40", "--partitions", "2", "--commit-every", "100",
		"--commit-interval", "20ms", "--phases", "bare,chronicle", "--rounds", "2", "--json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	var res bench.Result
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output is not the JSON result (%v):\n%s", err, out.String())
	}
	if !strings.Contains(res.Broker, "process of its own") || len(res.RoundRatios) != 2 || res.Ratio <= 0 {
		t.Errorf("broker %q, round ratios %v, ratio %v", res.Broker, res.RoundRatios, res.Ratio)
	}
	// A killed process may take a moment to go.
	left := brokerProcesses(t)
	for deadline := time.Now().Add(10 * time.Second); len(left) > 0 && time.Now().Before(deadline); left = brokerProcesses(t) {
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("broker processes still running after the bench: %v", left)
	}
}

// brokerProcesses lists the running processes started as
// `... dev --broker-only --in-memory --kafka-addr 127.0.0.1:0` (what bench
// starts), where /proc tells.
func brokerProcesses(t *testing.T) []string {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Logf("no /proc to list processes (%v): not checked", err)
		return nil
	}
	var found []string
	for _, d := range dirs {
		b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if strings.Join(args[1:], " ") == "dev --broker-only --in-memory --kafka-addr 127.0.0.1:0" {
			if st, err := os.ReadFile("/proc/" + d.Name() + "/stat"); err == nil && strings.Contains(string(st), ") Z ") {
				continue // a zombie: exited, not yet reaped by its parent
			}
			found = append(found, d.Name())
		}
	}
	return found
}
