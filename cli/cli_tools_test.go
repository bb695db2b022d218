package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/internal/proctest"
)

// cloudEvent is the part of a CloudEvents document the tests look at.
type cloudEvent struct {
	SpecVersion string          `json:"specversion"`
	Type        string          `json:"type"`
	Subject     string          `json:"subject"`
	Time        time.Time       `json:"time"`
	Version     int64           `json:"aggregateversion"`
	Data        json.RawMessage `json:"data"`
}

// historyDoc is the output of `chronicle history --json`.
type historyDoc struct {
	Events  []cloudEvent `json:"events"`
	State   *order.State `json:"state"`
	Version int64        `json:"version"`
}

// TestSendTailAndHistoryAgainstDevSurviveARestart drives send, tail and
// history as a user would, against `chronicle dev` on a fixed port, then
// restarts dev on the same data directory and port and reads the history
// again.
func TestSendTailAndHistoryAgainstDevSurviveARestart(t *testing.T) {
	addr := proctest.FreeAddr(t)
	dataDir := t.TempDir()
	d := startDev(t, "--kafka-addr", addr, "--data-dir", dataDir)
	b := d.brokers
	if b != addr {
		t.Fatalf("dev listens on %s, want %s", b, addr)
	}
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow() // later steps build on this one
		}
	}

	step("send --wait accepts CreateOrder and two AddLines", func(t *testing.T) {
		for _, c := range [][]string{
			{"o-1", "CreateOrder", `{"user_id":"u-1"}`},
			{"o-1", "AddLine", `{"product_id":512,"quantity":1,"unit_price":1999}`},
			{"o-1", "order.AddLine", `{"product_id":7,"quantity":2,"unit_price":100}`},
		} {
			out, errOut, code := chronicle(t, "", append([]string{"send", "--brokers", b, "--wait", "orders"}, c...)...)
			want := fmt.Sprintf("order.%s o-1 version", strings.TrimPrefix(c[1], "order."))
			if code != 0 || !strings.HasPrefix(out, "accepted") || !strings.Contains(out, want) {
				t.Fatalf("send %v: exit %d\nstdout: %s\nstderr: %s", c, code, out, errOut)
			}
		}
	})

	step("tail --from-beginning --json prints the events as CloudEvents in version order and exits", func(t *testing.T) {
		out, errOut, code := chronicle(t, "", "tail", "--brokers", b, "orders", "--from-beginning", "--json")
		if code != 0 {
			t.Fatalf("tail: exit %d\n%s%s", code, out, errOut)
		}
		var got []cloudEvent
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			var e cloudEvent
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("tail --json line %q: %v", line, err)
			}
			if e.Subject == "o-1" {
				got = append(got, e)
			}
		}
		wantTypes := []string{"order.OrderCreated", "order.LineAdded", "order.LineAdded"}
		if len(got) != len(wantTypes) {
			t.Fatalf("tail printed %d events of o-1, want 3:\n%s", len(got), out)
		}
		for i, e := range got {
			if e.SpecVersion != "1.0" || e.Version != int64(i) || e.Type != wantTypes[i] {
				t.Errorf("event %d: specversion %q, version %d, type %s; want 1.0, %d, %s", i, e.SpecVersion, e.Version, e.Type, i, wantTypes[i])
			}
		}
	})

	step("tail --aggregate prints one aggregate's events readably", func(t *testing.T) {
		out, errOut, code := chronicle(t, "", "tail", "--brokers", b, "orders", "--from-beginning", "--aggregate", "o-1")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 3 || !strings.Contains(lines[2], "o-1@2  order.LineAdded  {\"product_id\":7,\"quantity\":2,\"unit_price\":100}") {
			t.Fatalf("tail --aggregate o-1: exit %d\n%s%s", code, out, errOut)
		}
		if strings.Contains(out, "\x1b[") {
			t.Errorf("tail colored its output in a pipe:\n%q", out)
		}
	})

	step("history --at-version 1 shows the state with one line and marks the later event", func(t *testing.T) {
		out, errOut, code := chronicle(t, "", "history", "--brokers", b, "orders", "o-1", "--at-version", "1")
		if code != 0 {
			t.Fatalf("history: exit %d\n%s%s", code, out, errOut)
		}
		table, state, ok := strings.Cut(out, "State at version 1 (the latest is 2; events marked + are not applied)")
		if !ok {
			t.Fatalf("history prints no \"State at version 1 (the latest is 2; …)\":\n%s", out)
		}
		if !strings.Contains(table, "+ 2 ") || strings.Contains(table, "+ 1 ") || strings.Count(table, "order.LineAdded") != 2 {
			t.Errorf("the table should list every event and mark only version 2 with +:\n%s", table)
		}
		if strings.Count(state, `"product_id"`) != 1 || !strings.Contains(state, `"product_id": 512`) || !strings.Contains(state, `"total": 1999`) {
			t.Errorf("the state at version 1 should have the one line of product 512:\n%s", state)
		}

		out, errOut, code = chronicle(t, "", "history", "--brokers", b, "orders", "o-1", "--at-version", "1", "--json")
		var doc historyDoc
		if code != 0 || json.Unmarshal([]byte(out), &doc) != nil {
			t.Fatalf("history --json: exit %d\n%s%s", code, out, errOut)
		}
		if doc.Version != 1 || len(doc.Events) != 3 || doc.State == nil || len(doc.State.Lines) != 1 || doc.State.Total != 1999 {
			t.Fatalf("history --json at version 1: %+v", doc)
		}

		// The time of version 1 selects version 1 (version 2 came later).
		at := doc.Events[1].Time.Format(time.RFC3339Nano)
		out, errOut, code = chronicle(t, "", "history", "--brokers", b, "orders", "o-1", "--at-time", at, "--json")
		doc = historyDoc{}
		if code != 0 || json.Unmarshal([]byte(out), &doc) != nil || doc.Version != 1 || len(doc.State.Lines) != 1 {
			t.Fatalf("history --at-time %s: exit %d, %+v\n%s%s", at, code, doc, out, errOut)
		}
		// Before the first event the order did not exist.
		out, errOut, code = chronicle(t, "", "history", "--brokers", b, "orders", "o-1", "--at-time", "2000-01-01T00:00:00Z")
		if code != 0 || !strings.Contains(out, "did not exist yet") {
			t.Fatalf("history before the first event: exit %d\n%s%s", code, out, errOut)
		}
	})

	step("a rejected command exits 1 with its reason", func(t *testing.T) {
		out, errOut, code := chronicle(t, "", "send", "--brokers", b, "--wait", "orders", "o-1", "AddLine", `{"product_id":9,"quantity":0,"unit_price":1}`)
		if code != 1 || !strings.HasPrefix(out, "rejected") || !strings.Contains(out, "invalid_quantity: quantity must be greater than 0") {
			t.Fatalf("AddLine with quantity 0: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
		if !strings.Contains(errOut, "1 of 1 commands were not accepted") {
			t.Errorf("stderr does not say how many were refused: %s", errOut)
		}
	})

	step("JSON lines from stdin are sent with --wait, in order, and a resent id is a duplicate", func(t *testing.T) {
		id, err := aggregates.NewID(time.Now())
		if err != nil {
			t.Fatal(err)
		}
		stdin := `{"aggregate_id":"o-2","type":"CreateOrder","data":{"user_id":"u-2"}}` + "\n\n" +
			fmt.Sprintf(`{"id":%q,"type":"order.AddLine","aggregate_id":"o-2","data":{"product_id":1,"quantity":3,"unit_price":50},"metadata":{"actor":"alice"}}`, id) + "\n"
		out, errOut, code := chronicle(t, stdin, "send", "--brokers", b, "--wait", "orders")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "accepted  order.CreateOrder o-2 version 0") || !strings.HasPrefix(lines[1], "accepted  order.AddLine o-2 version 1") {
			t.Fatalf("send from stdin: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
		out, errOut, code = chronicle(t, stdin[strings.Index(stdin, "\n\n")+2:], "send", "--brokers", b, "--wait", "orders", "-", "--json")
		var r aggregates.Result
		if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Status != aggregates.StatusDuplicate || r.CommandID != id.String() {
			t.Fatalf("resending command %s: exit %d\nstdout: %s\nstderr: %s", id, code, out, errOut)
		}
	})

	step("a batch with a refused command exits 1 and prints every result", func(t *testing.T) {
		stdin := `{"aggregate_id":"o-3","type":"CreateOrder","data":{"user_id":"u-3"}}
{"aggregate_id":"o-3","type":"ChangeStatus","data":{"status":"shipped"}}
`
		out, errOut, code := chronicle(t, stdin, "send", "--brokers", b, "--wait", "orders")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != 1 || len(lines) != 2 || !strings.HasPrefix(lines[0], "accepted") || !strings.HasPrefix(lines[1], "rejected") ||
			!strings.Contains(lines[1], "invalid_transition: an order that is new cannot become shipped") {
			t.Fatalf("ChangeStatus to shipped on a new order: exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
		}
	})

	step("history of an aggregate without events exits 1", func(t *testing.T) {
		_, errOut, code := chronicle(t, "", "history", "--brokers", b, "orders", "o-nobody")
		if code != 1 || !strings.Contains(errOut, `"o-nobody" has no events in orders.events`) {
			t.Fatalf("history o-nobody: exit %d\n%s", code, errOut)
		}
	})

	d.stop(t)
	if t.Failed() {
		t.FailNow()
	}
	d = startDev(t, "--kafka-addr", addr, "--data-dir", dataDir)

	step("history and tail still show the events after a restart", func(t *testing.T) {
		out, errOut, code := chronicle(t, "", "history", "--brokers", d.brokers, "orders", "o-1", "--json")
		var doc historyDoc
		if code != 0 || json.Unmarshal([]byte(out), &doc) != nil {
			t.Fatalf("history after restart: exit %d\n%s%s", code, out, errOut)
		}
		if doc.Version != 2 || len(doc.Events) != 3 || doc.State == nil || len(doc.State.Lines) != 2 || doc.State.Total != 2199 {
			t.Fatalf("history after restart: %+v", doc)
		}
		out, errOut, code = chronicle(t, "", "tail", "--brokers", d.brokers, "orders", "--from-beginning", "--aggregate", "o-2")
		if code != 0 || strings.Count(out, "o-2@") != 2 {
			t.Fatalf("tail o-2 after restart: exit %d\n%s%s", code, out, errOut)
		}
		// The processor restored o-1 at version 2 and carries on.
		out, errOut, code = chronicle(t, "", "send", "--brokers", d.brokers, "--wait", "orders", "o-1", "RemoveLine", `{"product_id":7}`)
		if code != 0 || !strings.HasPrefix(out, "accepted  order.RemoveLine o-1 version 3") {
			t.Fatalf("send after restart: exit %d\n%s%s", code, out, errOut)
		}
	})
}

// TestSendRefusesBadCommandsLocally shows that commands are checked before
// Kafka is contacted: the brokers given do not exist, and every error names
// the line and what to fix.
func TestSendRefusesBadCommandsLocally(t *testing.T) {
	nowhere := proctest.FreeAddr(t)
	cases := []struct {
		name  string
		stdin string
		args  []string
		want  []string
	}{
		{
			name: "a misspelt data field is refused with the right field names",
			args: []string{"orders", "o-1", "AddLine", `{"product_id":1,"quantiy":1,"unit_price":1}`},
			want: []string{`unknown field "quantiy"`, "product_id, quantity, unit_price"},
		},
		{
			name: "an unknown command type lists the known ones",
			args: []string{"orders", "o-1", "AddLin", `{}`},
			want: []string{`"AddLin" is not a command of "order"`, "order.AddLine"},
		},
		{
			name: "an unknown prefix says how to add one",
			args: []string{"invoices", "i-1", "Create"},
			want: []string{`"invoices" is not a known topic prefix`, "--aggregates"},
		},
		{
			name:  "bad stdin lines are all reported with their numbers and nothing is sent",
			stdin: "{\"aggregate_id\":\"o-1\",\"type\":\"CreateOrder\",\"data\":{\"user_id\":\"u\"}}\n{\"aggregate_id\":\"o-1\",\"typ\":\"AddLine\"}\nnot json\n{\"type\":\"AddLine\",\"aggregate_id\":\"o-1\",\"data\":{\"quantity\":\"one\"}}\n",
			args:  []string{"orders"},
			want:  []string{`line 2: json: unknown field "typ"`, "line 3: ", "line 4: ", "nothing was sent"},
		},
		{
			name:  "a bad explicit id is refused",
			stdin: `{"id":"nope","aggregate_id":"o-1","type":"CreateOrder","data":{"user_id":"u"}}`,
			args:  []string{"orders", "-"},
			want:  []string{`line 1: "id" "nope" is not a ULID`},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			out, errOut, code := chronicle(t, c.stdin, append([]string{"send", "--brokers", nowhere, "--wait"}, c.args...)...)
			if code != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q, want 1 and nothing\nstderr: %s", code, out, errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errOut)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refusing took %v: it should not wait for Kafka", d)
			}
		})
	}
}

func TestToolsHelpHasASynopsisAndEveryFlag(t *testing.T) {
	for _, c := range []struct {
		cmd   string
		flags []string
	}{
		{"send", []string{"--wait", "--timeout", "--expected-version", "--actor", "--correlation-id", "--aggregates", "--brokers", "--json"}},
		{"tail", []string{"--from-beginning", "--follow", "--aggregate", "--json", "--brokers"}},
		{"history", []string{"--at-version", "--at-time", "--json", "--aggregates", "--brokers"}},
	} {
		_, errOut, code := chronicle(t, "", c.cmd, "--help")
		if code != 0 || !strings.Contains(errOut, "Usage: chronicle "+c.cmd+" PREFIX") || !strings.Contains(errOut, "Examples:") {
			t.Errorf("%s --help: exit %d\n%s", c.cmd, code, errOut)
		}
		for _, f := range c.flags {
			if !strings.Contains(errOut, "  "+f+"  [CHRONICLE_") {
				t.Errorf("%s --help does not document %s:\n%s", c.cmd, f, errOut)
			}
		}
		if _, _, code := chronicle(t, "", c.cmd); code != 2 {
			t.Errorf("%s without arguments: exit %d, want 2 (usage)", c.cmd, code)
		}
	}
}

func TestBuildCommandQualifiesTypesAndFillsDefaults(t *testing.T) {
	kind := order.Definition()
	ev := int64(-1)
	defaults := commandDefaults{expectedVersion: &ev, metadata: aggregates.Metadata{Actor: "cli", CorrelationID: "c-1"}}
	id, err := aggregates.NewID(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := buildCommand(kind, commandInput{ID: id.String(), AggregateID: "o-1", Type: "CreateOrder",
		Data: json.RawMessage(`{"user_id":"u-1"}`), Metadata: &aggregates.Metadata{Actor: "alice"}}, defaults)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.ID != id || cmd.Type != "order.CreateOrder" || cmd.AggregateID != "o-1" || *cmd.ExpectedVersion != -1 ||
		cmd.Metadata.Actor != "alice" || cmd.Metadata.CorrelationID != "c-1" || string(cmd.Data) != `{"user_id":"u-1"}` {
		t.Fatalf("built %+v", cmd)
	}
	// What the processor will do with it: decode it, and accept it.
	b, err := cmd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	wire, err := aggregates.DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kind.New("o-1").Execute(&wire, time.Now()); err != nil {
		t.Fatalf("the built command is not accepted: %v", err)
	}

	if _, err := buildCommand(kind, commandInput{AggregateID: "o-1", Type: "ballot.Vote"}, defaults); err == nil {
		t.Error("a command type of another aggregate was accepted")
	}
	_, err = buildCommand(kind, commandInput{Type: "AddLine", Data: json.RawMessage(`{"quantiy":1}`)}, defaults)
	if !errors.Is(err, aggregates.ErrMalformed) || !strings.Contains(err.Error(), `"aggregate_id" is missing`) || strings.Contains(err.Error(), "\n") {
		t.Errorf("two problems should both be reported on one line, the misspelt field matching ErrMalformed: %v", err)
	}
}

func TestEventKeyAggregate(t *testing.T) {
	for _, c := range []struct {
		key  string
		id   string
		ok   bool
		name string
	}{
		{"o-1@00000000000000000002", "o-1", true, "an event key"},
		{"a@b@00000000000000000000", "a@b", true, "an id with @"},
		{"o-1", "", false, "a bare id"},
		{"o-1@0000000000000000000x", "", false, "a non-digit version"},
		{"@00000000000000000002", "", false, "an empty id"},
	} {
		id, ok := eventKeyAggregate([]byte(c.key))
		if id != c.id || ok != c.ok {
			t.Errorf("%s: eventKeyAggregate(%q) = %q, %v; want %q, %v", c.name, c.key, id, ok, c.id, c.ok)
		}
	}
}

func TestProgressDrawsOnlyOnATerminal(t *testing.T) {
	if got := renderProgress("commands", 250, 1000, 0, 0); got != "[█████░░░░░░░░░░░░░░░]  25% 250/1000 commands" {
		t.Errorf("bar: %q", got)
	}
	if got := renderProgress("reading", 0, 0, 1, 2500*time.Millisecond); got != "⠙ reading 2s" {
		t.Errorf("spinner: %q", got)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTerminal(w) || isTerminal(&bytes.Buffer{}) {
		t.Error("a pipe or a buffer was taken for a terminal")
	}
	if p := startProgress(w, "quiet", 0); p != nil {
		p.Stop()
		t.Error("a progress indicator was started on a pipe")
	}
	// A nil indicator is a no-op.
	var p *progress
	ran := false
	p.Add(1)
	p.Pause(func() { ran = true })
	p.Stop()
	if !ran {
		t.Error("Pause on a nil indicator did not run its function")
	}
	// A drawn one ends with the line erased.
	var buf syncBuffer
	p = newProgress(&buf, "working", 2)
	p.Add(1)
	p.Pause(func() { buf.Write([]byte("output\n")) })
	p.Stop()
	p.Stop()
	if s := buf.String(); !strings.Contains(s, "working") || !strings.Contains(s, "\r\x1b[Koutput\n") || !strings.HasSuffix(s, "\r\x1b[K") {
		t.Errorf("drawn: %q", s)
	}
}
