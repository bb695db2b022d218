package cli

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

func TestJSONLogsWriteDurationsWithUnits(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: durationsWithUnits}))
	logger.Info("restored", "took", 1500*time.Millisecond, slog.Group("checkpoint", "age", 90*time.Second), "events", 3)
	if s := buf.String(); !strings.Contains(s, `"took":"1.5s"`) || !strings.Contains(s, `"checkpoint":{"age":"1m30s"}`) || !strings.Contains(s, `"events":3`) {
		t.Errorf("logged %s", s)
	}
}

func TestHelpShowsEachDefaultOnce(t *testing.T) {
	var errb bytes.Buffer
	app := &App{Kinds: []aggregates.Kind{order.Definition()}, Name: "chronicle", Stdout: &bytes.Buffer{}, Stderr: &errb}
	if code := app.Run(context.Background(), []string{"run", "--help"}); code != 0 {
		t.Fatalf("run --help: exit %d\n%s", code, errb.String())
	}
	help := errb.String()
	if !strings.Contains(help, "partitions processed at once (default 2×CPUs)\n") {
		t.Errorf("--concurrency's help lacks its default:\n%s", help)
	}
	for _, line := range strings.Split(help, "\n") {
		if strings.Count(line, "default") > 1 {
			t.Errorf("a flag's default is shown twice: %s", line)
		}
	}
	for _, want := range []string{"Runs the production processor", "Examples:\n  chronicle run --brokers", "--aggregates orders=order"} {
		if !strings.Contains(help, want) {
			t.Errorf("run --help lacks %q:\n%s", want, help)
		}
	}
	errb.Reset()
	if code := app.Run(context.Background(), []string{"dev", "--help"}); code != 0 || !strings.Contains(errb.String(), "Runs the whole stack in this one process") || !strings.Contains(errb.String(), "Examples:\n  chronicle dev\n") {
		t.Errorf("dev --help: exit %d\n%s", code, errb.String())
	}
}

func TestExampleCommandIsAcceptedByANewAggregate(t *testing.T) {
	c, err := newCatalog([]aggregates.Kind{order.Definition()})
	if err != nil {
		t.Fatal(err)
	}
	prefix, id, typ, data := c.example()
	if prefix != "orders" || id != "o-1" || typ != "CreateOrder" || data != `{"user_id":"x"}` {
		t.Errorf("example() = %s %s %s %s; want orders o-1 CreateOrder {\"user_id\":\"x\"}", prefix, id, typ, data)
	}
}
