package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/chronicle-es/chronicle/aggregates"
)

// The counter is an aggregate type of the kind a user writes in their own
// module: it is defined here, not in Chronicle, and reaches the binary only
// through Main (see TestMain).

type counterState struct {
	Total int `json:"total"`
}

type increment struct {
	By int `json:"by"`
}

type incremented struct {
	By int `json:"by"`
}

func counterDefinition() *aggregates.Definition[counterState] {
	return aggregates.MustDefine("counter",
		aggregates.When("Incremented", func(s *counterState, e incremented) { s.Total += e.By }),
		aggregates.Handle("Increment", func(s counterState, c increment) ([]any, error) {
			if c.By <= 0 {
				return nil, aggregates.Reject("not_positive", "by must be positive, got %d", c.By)
			}
			return []any{incremented(c)}, nil
		}),
	)
}

// TestAUserDefinedAggregateGetsEverySubcommand: the counter, passed to Main
// by the program's main, is served by dev and works through send --wait,
// tail and history like the built-in types.
func TestAUserDefinedAggregateGetsEverySubcommand(t *testing.T) {
	d := startDev(t, "--kafka-addr", "127.0.0.1:0", "--in-memory")
	if !strings.Contains(d.Output(), "counters (counter)") {
		t.Errorf("dev does not serve the counter on prefix counters by default:\n%s", d.Output())
	}
	for i, by := range []string{"2", "3"} {
		out, errOut, code := chronicle(t, "", "send", "--brokers", d.brokers, "--wait", "counters", "c-1", "Increment", `{"by":`+by+`}`)
		if code != 0 || !strings.HasPrefix(out, "accepted  counter.Increment c-1 version "+string(rune('0'+i))) {
			t.Fatalf("send Increment by %s: exit %d\nstdout: %s\nstderr: %s", by, code, out, errOut)
		}
	}
	out, errOut, code := chronicle(t, "", "send", "--brokers", d.brokers, "--wait", "counter", "c-1", "counter.Increment", `{"by":0}`)
	if code != 1 || !strings.Contains(out, "not_positive: by must be positive, got 0") {
		t.Fatalf("send Increment by 0 (prefix given as the type name): exit %d, want 1 and the reason\nstdout: %s\nstderr: %s", code, out, errOut)
	}
	_, errOut, code = chronicle(t, "", "send", "--brokers", d.brokers, "counters", "c-1", "Increment", `{"bye":1}`)
	if code != 1 || !strings.Contains(errOut, `unknown field "bye"`) || !strings.Contains(errOut, "the fields of counter.Increment are: by") {
		t.Fatalf("a misspelt field: exit %d\n%s", code, errOut)
	}

	out, errOut, code = chronicle(t, "", "history", "--brokers", d.brokers, "counters", "c-1", "--json")
	var doc struct {
		Events  []json.RawMessage `json:"events"`
		State   counterState      `json:"state"`
		Version int64             `json:"version"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil {
		t.Fatalf("history: exit %d\n%s%s", code, out, errOut)
	}
	if doc.Version != 1 || len(doc.Events) != 2 || doc.State.Total != 5 {
		t.Fatalf("history of c-1: version %d, %d events, total %d; want 1, 2, 5", doc.Version, len(doc.Events), doc.State.Total)
	}
	out, errOut, code = chronicle(t, "", "history", "--brokers", d.brokers, "counters", "c-1", "--at-version", "0")
	if code != 0 || !strings.Contains(out, "State at version 0 (the latest is 1") || !strings.Contains(out, `"total": 2`) {
		t.Fatalf("history --at-version 0: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = chronicle(t, "", "tail", "--brokers", d.brokers, "counters", "--from-beginning")
	if code != 0 || strings.Count(out, "counter.Incremented") != 2 || !strings.Contains(out, `c-1@1  counter.Incremented  {"by":3}`) {
		t.Fatalf("tail counters: exit %d\n%s%s", code, out, errOut)
	}
}

// TestRegisteredTypesShapeDefaultsAndHints runs the library entry point in
// this process (App.Run): defaults and error messages come from the types
// the program registers, and never suggest a type it does not have.
func TestRegisteredTypesShapeDefaultsAndHints(t *testing.T) {
	run := func(kinds []aggregates.Kind, args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		app := &App{Kinds: kinds, Name: "counters-svc", Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb}
		code := app.Run(context.Background(), args)
		return out.String(), errb.String(), code
	}
	counter := []aggregates.Kind{counterDefinition()}

	t.Run("help lists the types and uses the program's name and an example of its own type", func(t *testing.T) {
		out, _, code := run(counter, "--help")
		if code != 0 || !strings.Contains(out, "Usage: counters-svc <command>") || !strings.Contains(out, "Aggregate types: counter (by default on topic prefixes counters=counter)") {
			t.Errorf("--help: exit %d\n%s", code, out)
		}
		_, errOut, code := run(counter, "send", "--help")
		if code != 0 || !strings.Contains(errOut, `counters-svc send counters c-1 Increment '{"by":1}' --wait`) || strings.Contains(errOut, "order") {
			t.Errorf("send --help: exit %d\n%s", code, errOut)
		}
		_, errOut, code = run(counter, "dev", "--help")
		if code != 0 || !strings.Contains(errOut, "--aggregates  [CHRONICLE_AGGREGATES]") || !strings.Contains(errOut, "(default counters=counter)") {
			t.Errorf("dev --help: exit %d\n%s", code, errOut)
		}
	})
	t.Run("run without --aggregates says what to pass", func(t *testing.T) {
		t.Setenv("CHRONICLE_AGGREGATES", "")
		_, errOut, code := run(counter, "run", "--brokers", "127.0.0.1:1")
		if code != 1 || !strings.Contains(errOut, "no aggregate types to serve: pass --aggregates (or set CHRONICLE_AGGREGATES)") || !strings.Contains(errOut, "--aggregates counters=counter") {
			t.Errorf("run without --aggregates: exit %d\n%s", code, errOut)
		}
	})
	t.Run("an unknown type lists the registered ones", func(t *testing.T) {
		_, errOut, code := run(counter, "run", "--brokers", "127.0.0.1:1", "--aggregates", "orders=order")
		if code != 1 || !strings.Contains(errOut, `aggregate type "order" (for topic prefix "orders")`) || !strings.Contains(errOut, "this program's types are counter") {
			t.Errorf("run --aggregates orders=order: exit %d\n%s", code, errOut)
		}
		_, errOut, code = run(counter, "send", "--brokers", "127.0.0.1:1", "orders", "o-1", "CreateOrder")
		if code != 1 || !strings.Contains(errOut, `"orders" is not a known topic prefix (known: counters (counter))`) {
			t.Errorf("send to orders: exit %d\n%s", code, errOut)
		}
	})
	t.Run("a bare prefix is its type's name and an s, or the name itself", func(t *testing.T) {
		c, err := newCatalog(counter)
		if err != nil {
			t.Fatal(err)
		}
		for _, spec := range []string{"counters", "counter", "tallies=counter"} {
			bs, err := c.parseBindings(spec)
			if err != nil || len(bs) != 1 || bs[0].Kind.Name() != "counter" || bs[0].Prefix != strings.TrimSuffix(spec, "=counter") {
				t.Errorf("parseBindings(%q) = %v, %v", spec, bs, err)
			}
		}
	})
	t.Run("no types, or one twice, is a clear error", func(t *testing.T) {
		_, errOut, code := run(nil, "send", "--brokers", "127.0.0.1:1", "orders", "o-1", "CreateOrder")
		if code != 1 || !strings.Contains(errOut, "this program serves no aggregate types: its main must pass them") {
			t.Errorf("no types: exit %d\n%s", code, errOut)
		}
		_, errOut, code = run([]aggregates.Kind{counterDefinition(), counterDefinition()}, "--help")
		if code != 2 || !strings.Contains(errOut, `aggregate type "counter" is passed twice`) {
			t.Errorf("a type twice: exit %d\n%s", code, errOut)
		}
	})
	t.Run("an unknown --log-level lists the valid ones", func(t *testing.T) {
		_, errOut, code := run(counter, "run", "--brokers", "127.0.0.1:1", "--aggregates", "counters", "--log-level", "verbose")
		if code != 1 || !strings.Contains(errOut, `--log-level "verbose": use debug, info, warn or error`) {
			t.Errorf("--log-level verbose: exit %d\n%s", code, errOut)
		}
	})
	t.Run("version prints the program's and Chronicle's version", func(t *testing.T) {
		for _, args := range [][]string{{"--version"}, {"version"}} {
			out, errOut, code := run(counter, args...)
			if code != 0 || !strings.HasPrefix(out, "counters-svc ") || !strings.Contains(out, "go1.") {
				t.Errorf("%v: exit %d\n%s%s", args, code, out, errOut)
			}
		}
	})
}
