package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/ballot"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/examples/account"
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

// The hint dev prints, and the help texts show, is a command a new
// aggregate accepts, for every aggregate type shipped: the user copies it.
func TestExampleCommandIsAcceptedByANewAggregate(t *testing.T) {
	for _, tc := range []struct {
		kind aggregates.Kind
		want string // prefix id type data
	}{
		{order.Definition(), `orders o-1 CreateOrder {"user_id":"x"}`},
		{ballot.Definition(), `ballots b-1 CreateBallot {"election_id":"x","voter_id":"x"}`},
		// Deposit and Withdraw come first by name; a new account refuses
		// both (not_open), and Open wants a currency code.
		{account.Definition(), `accounts a-1 Open {"owner":"x","currency":"EUR"}`},
	} {
		t.Run(tc.kind.Name(), func(t *testing.T) {
			c, err := newCatalog([]aggregates.Kind{tc.kind})
			if err != nil {
				t.Fatal(err)
			}
			prefix, id, typ, data := c.example()
			if got := strings.Join([]string{prefix, id, typ, data}, " "); got != tc.want {
				t.Errorf("example() = %s, want %s", got, tc.want)
			}
			// As send builds it from the command line.
			cmd, err := buildCommand(tc.kind, commandInput{Type: typ, AggregateID: id, Data: json.RawMessage(data)}, commandDefaults{})
			if err != nil {
				t.Fatalf("the hinted %s %s does not build: %v", typ, data, err)
			}
			if _, err := tc.kind.NewAggregate(id).Execute(&cmd, time.Now()); err != nil {
				t.Errorf("a new %s rejects the hinted %s %s: %v", tc.kind.Name(), typ, data, err)
			}
		})
	}
}
