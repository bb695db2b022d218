// Package aggregatetest is a given-when-then test fixture for aggregates:
// given these events, when this command, then these events or this error.
//
//	aggregatetest.New(t, order.Definition()).
//		Given(order.OrderCreated{UserID: "u-1"}).
//		When(order.AddLine{ProductID: 512, Quantity: 1, UnitPrice: 999}).
//		Then(order.LineAdded{ProductID: 512, Quantity: 1, UnitPrice: 999})
//
// Every emitted event is also encoded and decoded through the aggregate's
// codec, so a payload that does not survive the wire fails the test.
package aggregatetest

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
)

// AggregateID is the id the fixture's aggregate has.
const AggregateID = "test-aggregate"

// Fixture holds one scenario. Create it with New.
type Fixture[S any] struct {
	t       testing.TB
	def     *aggregates.Definition[S]
	root    *aggregates.Root[S]
	now     time.Time
	cmd     *aggregates.Command
	events  []aggregates.Event
	err     error
	whenRan bool
	before  int    // len(root.Changes()) before the last When
	snap    []byte // the aggregate's snapshot before the last When
}

// New starts a scenario on a new aggregate of def.
func New[S any](t testing.TB, def *aggregates.Definition[S]) *Fixture[S] {
	t.Helper()
	return &Fixture[S]{t: t, def: def, root: def.New(AggregateID), now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// Given replays events (payload values of registered event types) as the
// aggregate's history, versions 0, 1, 2…
func (f *Fixture[S]) Given(payloads ...any) *Fixture[S] {
	f.t.Helper()
	for _, p := range payloads {
		name, ok := f.def.EventType(p)
		if !ok {
			f.t.Fatalf("Given: %T is not a registered event of %q", p, f.def.Name())
		}
		e := aggregates.Event{Type: name, Subject: AggregateID, Version: f.root.Version() + 1, Data: p, Time: f.now}
		if err := f.root.Apply(&e); err != nil {
			f.t.Fatalf("Given: applying %s: %v", name, err)
		}
	}
	return f
}

// GivenCommands runs commands first, requiring each to succeed; their events
// become the history.
func (f *Fixture[S]) GivenCommands(payloads ...any) *Fixture[S] {
	f.t.Helper()
	for _, p := range payloads {
		cmd := f.command(p)
		if _, err := f.root.Execute(&cmd, f.now); err != nil {
			f.t.Fatalf("GivenCommands: %s failed: %v", cmd.Type, err)
		}
	}
	f.root.ClearChanges()
	return f
}

// When executes one command (a payload value of a registered command type).
func (f *Fixture[S]) When(payload any) *Fixture[S] {
	f.t.Helper()
	cmd := f.command(payload)
	return f.WhenCommand(cmd)
}

// WhenCommand executes a full command envelope, for scenarios about ids,
// expected versions and metadata.
func (f *Fixture[S]) WhenCommand(cmd aggregates.Command) *Fixture[S] {
	f.t.Helper()
	f.cmd = &cmd
	f.before = len(f.root.Changes())
	snap, err := f.root.MarshalSnapshot()
	if err != nil {
		f.t.Fatalf("WhenCommand: snapshotting the aggregate before %s: %v", cmd.Type, err)
	}
	f.snap = snap
	f.events, f.err = f.root.Execute(&cmd, f.now)
	f.whenRan = true
	return f
}

// Command builds the envelope When would use for payload, so a scenario can
// set its expected version or send it twice.
func (f *Fixture[S]) Command(payload any) aggregates.Command {
	f.t.Helper()
	return f.command(payload)
}

func (f *Fixture[S]) command(payload any) aggregates.Command {
	f.t.Helper()
	cmd, err := f.def.NewCommand(AggregateID, payload, aggregates.Metadata{Actor: "tester"})
	if err != nil {
		f.t.Fatalf("building command: %v", err)
	}
	return cmd
}

// Then asserts the command succeeded and produced exactly these event
// payloads, in order.
func (f *Fixture[S]) Then(want ...any) *Fixture[S] {
	f.t.Helper()
	f.mustHaveRun("Then")
	if f.err != nil {
		f.t.Fatalf("Then: %s failed: %v; want events %s", f.cmd.Type, f.err, describe(want))
	}
	got := make([]any, len(f.events))
	for i := range f.events {
		got[i] = f.events[i].Data
	}
	if !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
		f.t.Fatalf("Then: %s produced %s\nwant %s", f.cmd.Type, describe(got), describe(want))
	}
	f.roundTrip()
	return f
}

// ThenError asserts the command failed with an error matching target
// (errors.Is), produced no events and left the aggregate unchanged.
func (f *Fixture[S]) ThenError(target error) *Fixture[S] {
	f.t.Helper()
	f.mustHaveRun("ThenError")
	if f.err == nil {
		f.t.Fatalf("ThenError: %s succeeded with %s; want error %v", f.cmd.Type, describe(eventsData(f.events)), target)
	}
	if !errors.Is(f.err, target) {
		f.t.Fatalf("ThenError: %s failed with %v; want %v", f.cmd.Type, f.err, target)
	}
	if n := len(f.root.Changes()) - f.before; len(f.events) != 0 || n != 0 {
		f.t.Fatalf("ThenError: failed command left %d events", n)
	}
	// Version, state and remembered command ids are all in the snapshot.
	if after, err := f.root.MarshalSnapshot(); err != nil || string(after) != string(f.snap) {
		f.t.Fatalf("ThenError: failed command changed the aggregate:\nbefore %s\nafter  %s (%v)", f.snap, after, err)
	}
	return f
}

// ThenRejected asserts the command was rejected by its handler with code.
func (f *Fixture[S]) ThenRejected(code string) *Fixture[S] {
	f.t.Helper()
	f.ThenError(aggregates.ErrRejected)
	var r *aggregates.Rejection
	if !errors.As(f.err, &r) || r.Code != code {
		f.t.Fatalf("ThenRejected: %s rejected with %v; want code %q", f.cmd.Type, f.err, code)
	}
	return f
}

// ThenState asserts on the aggregate's state after the command.
func (f *Fixture[S]) ThenState(check func(t testing.TB, s S)) *Fixture[S] {
	f.t.Helper()
	check(f.t, f.root.State())
	return f
}

// Root returns the aggregate under test.
func (f *Fixture[S]) Root() *aggregates.Root[S] { return f.root }

// Err returns the error of the last When.
func (f *Fixture[S]) Err() error { return f.err }

// Events returns the events of the last When.
func (f *Fixture[S]) Events() []aggregates.Event { return f.events }

func (f *Fixture[S]) mustHaveRun(step string) {
	f.t.Helper()
	if !f.whenRan {
		f.t.Fatalf("%s called before When", step)
	}
}

// roundTrip checks every emitted event survives encode → decode unchanged.
func (f *Fixture[S]) roundTrip() {
	f.t.Helper()
	for i := range f.events {
		b, err := f.events[i].Encode()
		if err != nil {
			f.t.Fatalf("encoding %s: %v", f.events[i].Type, err)
		}
		back, err := f.def.DecodeEvent(b)
		if err != nil {
			f.t.Fatalf("decoding %s: %v", f.events[i].Type, err)
		}
		if !reflect.DeepEqual(back.Data, f.events[i].Data) {
			f.t.Fatalf("%s does not survive the wire: sent %#v, read back %#v", f.events[i].Type, f.events[i].Data, back.Data)
		}
	}
}

func eventsData(es []aggregates.Event) []any {
	out := make([]any, len(es))
	for i := range es {
		out[i] = es[i].Data
	}
	return out
}

func describe(vs []any) string {
	if len(vs) == 0 {
		return "no events"
	}
	s := ""
	for i, v := range vs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%T%+v", v, v)
	}
	return s
}
