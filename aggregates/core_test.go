package aggregates_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/aggregatetest"
)

// A tiny test-only aggregate: a tally that must stay below 10.
type tally struct {
	Open  bool `json:"open"`
	Count int  `json:"count"`
}

type (
	open     struct{}
	add      struct{ N int }
	explode  struct{}
	opened   struct{}
	added    struct{ N int }
	badApply struct{}
)

func tallyDef(t testing.TB, opts ...aggregates.Option[tally]) *aggregates.Definition[tally] {
	t.Helper()
	base := []aggregates.Option[tally]{
		aggregates.When("Opened", func(s *tally, _ opened) { s.Open = true }),
		aggregates.When("Added", func(s *tally, e added) { s.Count += e.N }),
		aggregates.When("BadApply", func(s *tally, _ badApply) { panic("apply exploded") }),
		aggregates.Handle("Open", func(s tally, _ open) ([]any, error) { return []any{opened{}}, nil }),
		aggregates.Handle("Add", func(s tally, c add) ([]any, error) {
			out := make([]any, 0, c.N)
			for range c.N {
				out = append(out, added{N: 1})
			}
			return out, nil
		}),
		aggregates.Handle("Explode", func(s tally, _ explode) ([]any, error) { panic("handler exploded") }),
		aggregates.Handle("BadApply", func(s tally, _ badApply) ([]any, error) { return []any{badApply{}}, nil }),
		aggregates.Invariant(func(s *tally) error {
			if s.Count >= 10 {
				return fmt.Errorf("count %d reached 10", s.Count)
			}
			return nil
		}),
	}
	d, err := aggregates.Define("tally", append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestVersionsStartAtMinusOneAndCountEvents(t *testing.T) {
	d := tallyDef(t)
	r := d.New("t-1")
	if r.Version() != -1 {
		t.Fatalf("new aggregate at version %d", r.Version())
	}
	cmd, _ := d.NewCommand("t-1", add{N: 3}, aggregates.Metadata{})
	evs, err := r.Execute(&cmd, time.Now())
	if err != nil || len(evs) != 3 || evs[0].Version != 0 || evs[2].Version != 2 || r.Version() != 2 || len(r.Changes()) != 3 {
		t.Fatalf("events %+v err %v version %d", evs, err, r.Version())
	}
	for _, e := range evs {
		if e.CausationID != cmd.ID.String() || e.CorrelationID != cmd.ID.String() || e.Subject != "t-1" || e.Type != "tally.Added" {
			t.Errorf("event envelope %+v", e)
		}
	}
}

func TestInvariantViolationKeepsNoEvents(t *testing.T) {
	f := aggregatetest.New(t, tallyDef(t)).GivenCommands(add{N: 8})
	f.When(add{N: 3}).ThenError(aggregates.ErrInvariantViolated)
	if s := f.Root().State(); s.Count != 8 || f.Root().Version() != 7 {
		t.Fatalf("rejected command changed the state: %+v v%d", s, f.Root().Version())
	}
	var ie *aggregates.InvariantError
	if !errors.As(f.Err(), &ie) || ie.Version != 9 || ie.EventType != "tally.Added" {
		t.Fatalf("error %v", f.Err())
	}
	f.When(add{N: 1}).Then(added{N: 1})
}

func TestPanicsBecomeErrorsAndChangeNothing(t *testing.T) {
	f := aggregatetest.New(t, tallyDef(t)).GivenCommands(add{N: 2})
	f.When(explode{}).ThenError(aggregates.ErrHandlerPanic)
	f.When(badApply{}).ThenError(aggregates.ErrHandlerPanic)
	if f.Root().Version() != 1 || f.Root().State().Count != 2 {
		t.Fatalf("state after panics: %+v", f.Root().State())
	}
}

func TestDuplicateWindowIsRebuiltFromCausationIDs(t *testing.T) {
	d := tallyDef(t, aggregates.Window[tally](3))
	r := d.New("t")
	var cmds []aggregates.Command
	var history []aggregates.Event
	for range 5 {
		c, _ := d.NewCommand("t", add{N: 1}, aggregates.Metadata{})
		evs, err := r.Execute(&c, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
		history = append(history, evs...)
	}
	// Replayed from events, the window is the same.
	replayed := d.New("t")
	if err := replayed.Load(history); err != nil {
		t.Fatal(err)
	}
	checkWindow := func(name string, r *aggregates.Root[tally]) {
		t.Helper()
		for i := len(cmds) - 1; i >= 0; i-- {
			c := cmds[i]
			_, err := r.Execute(&c, time.Now())
			if dup := errors.Is(err, aggregates.ErrDuplicateCommand); dup != (i >= 2) {
				t.Errorf("%s: command %d duplicate=%v", name, i, dup)
			}
			if i < 2 {
				break
			}
		}
	}
	checkWindow("replayed", replayed)
	// And through a snapshot.
	data, err := r.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	restored := d.New("t")
	if err := restored.UnmarshalSnapshot(data); err != nil {
		t.Fatal(err)
	}
	checkWindow("snapshot", restored)
	checkWindow("original", r)
}

func TestApplyRefusesGapsAndForeignEvents(t *testing.T) {
	d := tallyDef(t)
	r := d.New("t")
	err := r.Apply(&aggregates.Event{Type: "tally.Opened", Subject: "t", Version: 1, Data: opened{}})
	var gap *aggregates.VersionGapError
	if !errors.As(err, &gap) || gap.Want != 0 || gap.Got != 1 || !errors.Is(err, aggregates.ErrVersionGap) {
		t.Fatalf("gap: %v", err)
	}
	if err := r.Apply(&aggregates.Event{Type: "tally.Opened", Subject: "other", Version: 0, Data: opened{}}); !errors.Is(err, aggregates.ErrWrongAggregate) {
		t.Fatalf("foreign: %v", err)
	}
	if err := r.Apply(&aggregates.Event{Type: "tally.Nope", Subject: "t", Version: 0}); !errors.Is(err, aggregates.ErrUnknownEventType) {
		t.Fatalf("unknown: %v", err)
	}
}

func TestTimeTravel(t *testing.T) {
	d := tallyDef(t)
	r := d.New("t")
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var history []aggregates.Event
	for i := range 5 {
		c, _ := d.NewCommand("t", add{N: 1}, aggregates.Metadata{})
		evs, err := r.Execute(&c, base.Add(time.Duration(i)*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		history = append(history, evs...)
	}
	at := d.New("t")
	if err := aggregates.Rebuild(at, history, aggregates.UpToVersion(2)); err != nil || at.Version() != 2 || at.State().Count != 3 {
		t.Fatalf("at version 2: v%d %+v %v", at.Version(), at.State(), err)
	}
	at = d.New("t")
	if err := aggregates.Rebuild(at, history, aggregates.UpToTime(base.Add(90*time.Minute))); err != nil || at.Version() != 1 {
		t.Fatalf("at 01:30: v%d %v", at.Version(), err)
	}
}

func TestDecodeCommandReportsEveryProblem(t *testing.T) {
	id := ulid.Make().String()
	for _, tc := range []struct {
		name, doc, want string
		idRead          bool
	}{
		{"not JSON", `{"id":`, "decoding command", false},
		{"missing id", `{"type":"t.A","aggregate_id":"a"}`, `"id" is missing`, false},
		{"bad ULID", `{"id":"xyz","type":"t.A","aggregate_id":"a"}`, "not a ULID", false},
		{"zero ULID", `{"id":"00000000000000000000000000","type":"t.A","aggregate_id":"a"}`, "zero ULID", false},
		{"missing type", `{"id":"` + id + `","aggregate_id":"a"}`, `"type" is missing`, true},
		{"missing aggregate", `{"id":"` + id + `","type":"t.A"}`, `"aggregate_id" is missing`, true},
		{"type too long", `{"id":"` + id + `","type":"` + strings.Repeat("t", 129) + `","aggregate_id":"a"}`, "longer than 128", true},
		{"data a string", `{"id":"` + id + `","type":"t.A","aggregate_id":"a","data":"x"}`, "must be a JSON object", true},
		{"aggregate id too long", `{"id":"` + id + `","type":"t.A","aggregate_id":"` + strings.Repeat("a", 300) + `"}`, "longer than 256", true},
		{"data not an object", `{"id":"` + id + `","type":"t.A","aggregate_id":"a","data":[1]}`, "must be a JSON object", true},
		{"expected version below -1", `{"id":"` + id + `","type":"t.A","aggregate_id":"a","expected_version":-2}`, "below -1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, err := aggregates.DecodeCommand([]byte(tc.doc))
			if !errors.Is(err, aggregates.ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want ErrMalformed containing %q", err, tc.want)
			}
			if got := cmd.ID != (ulid.ULID{}); got != tc.idRead {
				t.Errorf("id read: %v, want %v", got, tc.idRead)
			}
		})
	}
	cmd, err := aggregates.DecodeCommand([]byte(`{"id":"` + id + `","type":"t.A","aggregate_id":"a","expected_version":-1,"data":{"x":1},"metadata":{"actor":"me"}}`))
	if err != nil || *cmd.ExpectedVersion != -1 || cmd.Metadata.Actor != "me" || cmd.Correlation() != id {
		t.Fatalf("valid command: %+v %v", cmd, err)
	}
}

func TestUnknownTypesAndBadPayloads(t *testing.T) {
	d := tallyDef(t)
	cmd, _ := d.NewCommand("t", add{N: 1}, aggregates.Metadata{})
	cmd.Type = "tally.Nope"
	if _, err := d.New("t").Execute(&cmd, time.Now()); !errors.Is(err, aggregates.ErrUnknownCommandType) {
		t.Fatalf("unknown command: %v", err)
	}
	cmd.Type = "Add" // short names resolve
	cmd.Data = json.RawMessage(`{"N":"one"}`)
	if _, err := d.New("t").Execute(&cmd, time.Now()); !errors.Is(err, aggregates.ErrMalformed) {
		t.Fatalf("bad payload: %v", err)
	}
	cmd.Data = json.RawMessage(`{"M":1}`)
	if _, err := d.New("t").Execute(&cmd, time.Now()); !errors.Is(err, aggregates.ErrMalformed) || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := d.DecodeEvent([]byte(`{"specversion":"1.0","id":"` + ulid.Make().String() + `","type":"tally.Nope","subject":"t","aggregateversion":0,"data":{}}`)); !errors.Is(err, aggregates.ErrUnknownEventType) {
		t.Fatalf("unknown event: %v", err)
	}
	if _, err := d.DecodeEvent([]byte(`{"specversion":"1.0","id":"` + ulid.Make().String() + `","type":"tally.Added","subject":"t","aggregateversion":0,"data":{"N":"x"}}`)); !errors.Is(err, aggregates.ErrMalformed) {
		t.Fatalf("bad event data: %v", err)
	}
	if _, err := d.DecodeEvent([]byte(`{"specversion":"0.3"}`)); !errors.Is(err, aggregates.ErrMalformed) {
		t.Fatalf("bad envelope: %v", err)
	}
}

// Schema evolution: v1 {"N":1} → v2 {"Amount":1} → v3 {"Amount":1,"Unit":"pcs"}.
type addedV3 struct {
	Amount int
	Unit   string
}

func TestUpcastersBridgeOldPayloads(t *testing.T) {
	def := func(opts ...aggregates.EventOption) (*aggregates.Definition[tally], error) {
		return aggregates.Define("tally",
			aggregates.When("Added", func(s *tally, e addedV3) { s.Count += e.Amount }, opts...),
			aggregates.Handle("Open", func(s tally, _ open) ([]any, error) { return nil, nil }))
	}
	d, err := def(aggregates.SchemaVersion(3),
		aggregates.Upcast(1, func(old json.RawMessage) (json.RawMessage, error) {
			var v struct{ N int }
			if err := json.Unmarshal(old, &v); err != nil {
				return nil, err
			}
			return json.Marshal(map[string]int{"Amount": v.N})
		}),
		aggregates.Upcast(2, func(old json.RawMessage) (json.RawMessage, error) {
			var v map[string]any
			if err := json.Unmarshal(old, &v); err != nil {
				return nil, err
			}
			v["Unit"] = "pcs"
			return json.Marshal(v)
		}))
	if err != nil {
		t.Fatal(err)
	}
	doc := func(schema int, data string) []byte {
		return []byte(fmt.Sprintf(`{"specversion":"1.0","id":"%s","type":"tally.Added","subject":"t","aggregateversion":0,"schemaversion":%d,"data":%s}`, ulid.Make(), schema, data))
	}
	e, err := d.DecodeEvent(doc(1, `{"N":4}`))
	if err != nil || e.Data != (addedV3{Amount: 4, Unit: "pcs"}) || e.SchemaVersion != 3 {
		t.Fatalf("v1 read as %+v, %v", e.Data, err)
	}
	if _, err := d.DecodeEvent(doc(4, `{}`)); !errors.Is(err, aggregates.ErrSchemaVersion) {
		t.Fatalf("newer than the code: %v", err)
	}
	gappy, err := def(aggregates.SchemaVersion(3), aggregates.Upcast(2, func(m json.RawMessage) (json.RawMessage, error) { return m, nil }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gappy.DecodeEvent(doc(1, `{"N":1}`)); !errors.Is(err, aggregates.ErrSchemaVersion) || !strings.Contains(err.Error(), "no upcaster from version 1") {
		t.Fatalf("missing upcaster: %v", err)
	}
}

func TestDefineReportsEveryProblem(t *testing.T) {
	_, err := aggregates.Define("bad.name",
		aggregates.When("X", func(s *tally, _ opened) {}),
		aggregates.When("X", func(s *tally, _ added) {}),
		aggregates.When("Y", func(s *tally, _ opened) {}),
		aggregates.Handle("", func(s tally, _ open) ([]any, error) { return nil, nil }),
		aggregates.When("Z", func(s *tally, _ badApply) {}, aggregates.Upcast(1, func(m json.RawMessage) (json.RawMessage, error) { return m, nil })),
	)
	if !errors.Is(err, aggregates.ErrDefinition) {
		t.Fatalf("Define: %v", err)
	}
	for _, want := range []string{"must not contain dots", `"X" registered twice`, "already registered", "name is empty", "upcaster from version 1 but current version is 1", "no command types"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

func TestRegistryDecodesEventsOfEveryType(t *testing.T) {
	d := tallyDef(t)
	other := aggregates.MustDefine("other",
		aggregates.When("Opened", func(s *tally, _ opened) {}),
		aggregates.Handle("Open", func(s tally, _ open) ([]any, error) { return []any{opened{}}, nil }))
	reg, err := aggregates.NewRegistry(d, other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aggregates.NewRegistry(d, d); !errors.Is(err, aggregates.ErrDefinition) {
		t.Fatalf("duplicate kinds: %v", err)
	}
	for _, k := range []aggregates.Kind{d, other} {
		cmd, _ := k.NewCommand("a", open{}, aggregates.Metadata{Actor: "me"})
		evs, err := k.NewAggregate("a").Execute(&cmd, time.Now())
		if err != nil || len(evs) != 1 {
			t.Fatalf("%s: %v", k.Name(), err)
		}
		b, _ := evs[0].Encode()
		e, err := reg.DecodeEvent(b)
		if err != nil || e.Type != k.Name()+".Opened" || e.Actor != "me" || e.ID != evs[0].ID {
			t.Fatalf("%s: decoded %+v %v", k.Name(), e, err)
		}
	}
	if _, err := reg.DecodeEvent([]byte(`{"specversion":"1.0","id":"` + ulid.Make().String() + `","type":"ghost.Opened","subject":"a","aggregateversion":0,"data":{}}`)); !errors.Is(err, aggregates.ErrUnknownEventType) {
		t.Fatalf("unknown aggregate type: %v", err)
	}
}

func TestEventsSurviveTheWire(t *testing.T) {
	d := tallyDef(t)
	r := d.New("t-1")
	cmd, err := d.NewCommand("t-1", add{N: 2}, aggregates.Metadata{CorrelationID: "flow-1", Actor: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	evs, err := r.Execute(&cmd, at)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := d.DecodeEvent(b)
		if err != nil {
			t.Fatal(err)
		}
		if !back.Time.Equal(at) || back.Time.Location() != time.UTC {
			t.Errorf("time %v, want %v in UTC", back.Time, at)
		}
		back.Time, e.Time = time.Time{}, time.Time{}
		want := aggregates.Event{ID: e.ID, Type: "tally.Added", Source: "/chronicle/tally", Subject: "t-1",
			AggregateType: "tally", Version: e.Version, SchemaVersion: 1, CausationID: cmd.ID.String(),
			CorrelationID: "flow-1", Actor: "ann", Data: added{N: 1}}
		if !reflect.DeepEqual(back, want) || !reflect.DeepEqual(e, want) {
			t.Errorf("event %d:\n sent %+v\n read %+v\n want %+v", e.Version, e, back, want)
		}
	}
}

func TestEventTimesOutsideRFC3339AreRefused(t *testing.T) {
	e := aggregates.Event{ID: ulid.Make(), Type: "tally.Opened", Subject: "t", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Data: opened{}}
	if _, err := e.Encode(); err == nil {
		t.Fatal("encoded the year 10000")
	}
	// 9999-12-31T23:59-23:59 is the year 10000 in UTC, which RFC 3339
	// cannot write: reading it must fail rather than produce an event
	// that cannot be written back.
	doc := `{"specversion":"1.0","id":"` + ulid.Make().String() + `","type":"tally.Opened","subject":"t","time":"9999-12-31T23:59:59-23:59","aggregateversion":0,"data":{}}`
	if _, err := tallyDef(t).DecodeEvent([]byte(doc)); !errors.Is(err, aggregates.ErrMalformed) {
		t.Fatalf("decoding a time beyond 9999 in UTC: %v", err)
	}
}

func TestSnapshotsOfOtherAggregatesOrGarbageAreRefused(t *testing.T) {
	d := tallyDef(t)
	r := d.New("t-1")
	cmd, _ := d.NewCommand("t-1", add{N: 2}, aggregates.Metadata{})
	if _, err := r.Execute(&cmd, time.Now()); err != nil {
		t.Fatal(err)
	}
	snap, err := r.MarshalSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	other := d.New("t-2")
	if err := other.UnmarshalSnapshot(snap); !errors.Is(err, aggregates.ErrWrongAggregate) || other.Version() != -1 {
		t.Fatalf("foreign snapshot: %v, version %d", err, other.Version())
	}
	if err := other.UnmarshalSnapshot([]byte(`{"id":"t-2","version":`)); !errors.Is(err, aggregates.ErrMalformed) || other.Version() != -1 {
		t.Fatalf("garbage snapshot: %v, version %d", err, other.Version())
	}
	same := d.New("t-1")
	if err := same.UnmarshalSnapshot(snap); err != nil || same.Version() != 1 || same.State() != r.State() {
		t.Fatalf("snapshot restored v%d %+v, %v", same.Version(), same.State(), err)
	}
}

func TestPanickingInvariantChangesNothing(t *testing.T) {
	d, err := aggregates.Define("fragile",
		aggregates.When("Added", func(s *tally, e added) { s.Count += e.N }),
		aggregates.Handle("Add", func(s tally, c add) ([]any, error) { return []any{added{N: c.N}}, nil }),
		aggregates.Invariant(func(s *tally) error {
			if s.Count == 5 {
				panic("five")
			}
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	f := aggregatetest.New(t, d).GivenCommands(add{N: 2})
	f.When(add{N: 3}).ThenError(aggregates.ErrHandlerPanic)
	var pe *aggregates.PanicError
	if !errors.As(f.Err(), &pe) || pe.Value != "five" {
		t.Fatalf("error %v", f.Err())
	}
	f.When(add{N: 4}).Then(added{N: 4})
}

func TestResultForClassifiesEveryOutcome(t *testing.T) {
	d := tallyDef(t)
	cmd, _ := d.NewCommand("t", add{N: 1}, aggregates.Metadata{CorrelationID: "flow"})
	ev := aggregates.Event{ID: ulid.Make(), Version: 4}
	for _, tc := range []struct {
		name   string
		events []aggregates.Event
		err    error
		status aggregates.ResultStatus
		code   string
		want   int64 // version
	}{
		{"accepted with events", []aggregates.Event{ev}, nil, aggregates.StatusAccepted, "", 4},
		{"accepted without events", nil, nil, aggregates.StatusAccepted, "", 3},
		{"duplicate", nil, &aggregates.DuplicateError{}, aggregates.StatusDuplicate, "", 3},
		{"rejected by the handler", nil, aggregates.Reject("too_big", "no"), aggregates.StatusRejected, "too_big", 3},
		{"invariant", nil, &aggregates.InvariantError{Err: errors.New("x")}, aggregates.StatusRejected, aggregates.CodeInvariantViolated, 3},
		{"conflict", nil, &aggregates.ConcurrencyError{}, aggregates.StatusRejected, aggregates.CodeConcurrencyConflict, 3},
		{"panic", nil, &aggregates.PanicError{Where: "h", Value: 1}, aggregates.StatusRejected, aggregates.CodeHandlerPanic, 3},
		{"unknown command", nil, fmt.Errorf("x: %w", aggregates.ErrUnknownCommandType), aggregates.StatusInvalid, aggregates.CodeUnknownCommand, 3},
		{"wrong aggregate", nil, fmt.Errorf("x: %w", aggregates.ErrWrongAggregate), aggregates.StatusInvalid, aggregates.CodeKeyMismatch, 3},
		{"malformed data", nil, &aggregates.DecodeError{What: "command data", Err: errors.New("x")}, aggregates.StatusInvalid, aggregates.CodeMalformed, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := aggregates.ResultFor(&cmd, "tally", 3, tc.events, tc.err)
			if r.Status != tc.status || r.Code != tc.code || r.Version != tc.want || r.CommandID != cmd.ID.String() ||
				r.CorrelationID != "flow" || r.AggregateType != "tally" || (tc.code == "") != (r.Reason == "") {
				t.Fatalf("%+v", r)
			}
			if len(tc.events) > 0 && (len(r.EventIDs) != 1 || r.EventIDs[0] != ev.ID.String()) {
				t.Fatalf("event ids %v", r.EventIDs)
			}
		})
	}
}
