package cli

import (
	"bytes"
	"context"
	"encoding/json"
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
