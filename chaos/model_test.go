package chaos

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

// TestModelAgreesWithTheOrderAggregate runs the workload's commands through
// the reference model and through the real order aggregate, as the
// processor calls it, and compares every outcome, event and state. The
// chaos test's verdicts are only as good as this agreement.
func TestModelAgreesWithTheOrderAggregate(t *testing.T) {
	def := order.Definition()
	w := NewWorkload(7, 50, 6)
	models := map[string]*model{}
	roots := map[string]aggregates.Aggregate{}
	statuses := map[string]int{}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for i := range 8000 {
		s := w.Next()
		cmd, err := aggregates.DecodeCommand(s.Value)
		if err != nil || string(s.Key) != cmd.AggregateID {
			continue // answered before any aggregate sees it
		}
		id := cmd.AggregateID
		m, root := models[id], roots[id]
		if m == nil {
			m, root = newModel(), def.New(id)
			models[id], roots[id] = m, root
		}
		want := m.decide(&cmd)
		events, err := root.Execute(&cmd, now)
		root.ClearChanges()
		res := aggregates.ResultFor(&cmd, "order", root.Version(), events, err)
		statuses[string(res.Status)+" "+res.Code]++
		got := outcome{Status: string(res.Status), Version: res.Version, Code: res.Code}
		if got.String() != want.String() {
			t.Fatalf("record %d (%s) %s: the aggregate says %s, the model %s", i, s.Kind, s.Value, got, want)
		}
		if len(events) != len(want.Events) {
			t.Fatalf("record %d %s: %d events, the model predicts %d", i, s.Value, len(events), len(want.Events))
		}
		for j, e := range events {
			b, err := e.Encode()
			if err != nil {
				t.Fatal(err)
			}
			var doc eventDoc
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatal(err)
			}
			me, err := decodeEventData(doc.Type, doc.Data)
			if err != nil || me != want.Events[j] || *doc.Version != want.Version-int64(len(events)-1-j) {
				t.Fatalf("record %d %s: event %s (%v), the model predicts %s at version %d", i, s.Value, b, err, want.Events[j], want.Version)
			}
		}
		st, err := root.MarshalState()
		if err != nil {
			t.Fatal(err)
		}
		var doc stateDoc
		if err := json.Unmarshal(st, &doc); err != nil {
			t.Fatalf("state %s: %v", st, err)
		}
		if doc.Version != m.version || !equalStates(doc.State, m.state) {
			t.Fatalf("record %d %s: state %s, the model has version %d %+v", i, s.Value, st, m.version, m.state)
		}
	}
	t.Logf("outcomes: %v", statuses)
	for _, want := range []string{"accepted ", "duplicate ", "rejected concurrency_conflict", "rejected invalid_transition",
		"rejected not_found", "rejected already_exists", "rejected invalid_price", "rejected line_not_found",
		"invalid unknown_command", "invalid malformed"} {
		if statuses[want] == 0 {
			t.Errorf("the workload never produced %q", want)
		}
	}
}

// TestModelForgetsCommandsBeyondTheWindow: a command resent after 32 later
// commands produced events is decided again.
func TestModelForgetsCommandsBeyondTheWindow(t *testing.T) {
	m := newModel()
	w := NewWorkload(1, 1, 6)
	decode := func(v []byte) aggregates.Command {
		c, err := aggregates.DecodeCommand(v)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	create := decode(w.encode("o-1", "order.CreateOrder", map[string]any{"user_id": "u"}, nil))
	if out := m.decide(&create); out.Status != statusAccepted {
		t.Fatalf("create: %s", out)
	}
	first := decode(w.encode("o-1", "order.AddLine", map[string]any{"product_id": 1, "quantity": 1, "unit_price": 1}, nil))
	m.decide(&first)
	if out := m.decide(&first); out.Status != statusDuplicate || out.Version != 1 {
		t.Fatalf("resent at once: %s, want duplicate at version 1", out)
	}
	for range IdempotencyWindow {
		c := decode(w.encode("o-1", "order.AddLine", map[string]any{"product_id": 2, "quantity": 1, "unit_price": 1}, nil))
		m.decide(&c)
	}
	if out := m.decide(&first); out.Status != statusAccepted || out.Version != 2+IdempotencyWindow {
		t.Fatalf("resent after %d others: %s, want accepted at version %d", IdempotencyWindow, out, 2+IdempotencyWindow)
	}
}

// TestWorkloadSendsEveryKind checks the workload's bad records are what the
// checker takes them for.
func TestWorkloadSendsEveryKind(t *testing.T) {
	w := NewWorkload(3, 100, 6)
	h := History{CommandsTopic: topic, Partitions: 6}
	offsets := map[int32]int64{}
	for range 5000 {
		s := w.Next()
		p := s.Partition
		if p < 0 {
			p = owner(s.Key, 6)
		}
		h.Commands = append(h.Commands, Record{Partition: p, Offset: offsets[p], Key: s.Key, Value: s.Value, Headers: map[string]string{"chaos-kind": s.Kind}})
		offsets[p]++
	}
	c := classify(&h)
	kinds := map[string]int{}
	for _, b := range c.bad {
		k := b.rec.Headers["chaos-kind"]
		kinds[k]++
		switch {
		case k == SendMalformed && b.id != "":
			t.Errorf("malformed record %s has a readable id", b.rec.Value)
		case (k == SendMalformedID || k == SendKeyMismatch) && b.id == "":
			t.Errorf("%s record %s has no readable id", k, b.rec.Value)
		case k != SendMalformed && k != SendMalformedID && k != SendKeyMismatch:
			t.Errorf("a %s record is bad: %s", k, b.rec.Value)
		}
	}
	for _, f := range c.forwards {
		if k := f.Headers["chaos-kind"]; k != SendWrongPartition && k != SendResend {
			t.Errorf("a %s record is to be forwarded: %s", k, f.Value)
		}
	}
	t.Logf("kinds sent: %v; %d orders", w.Counts(), w.Orders())
	for _, k := range []string{SendCommand, SendWrongPartition, SendResend, SendMalformed, SendMalformedID, SendKeyMismatch, SendUnknownType, SendBadData} {
		if w.Counts()[k] == 0 {
			t.Errorf("the workload sent no %s record", k)
		}
	}
	if len(c.forwards) == 0 || kinds[SendMalformed] == 0 || kinds[SendKeyMismatch] == 0 {
		t.Errorf("forwards %d, bad by kind %v", len(c.forwards), kinds)
	}
}
