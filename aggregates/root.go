package aggregates

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"github.com/oklog/ulid/v2"
)

// Root is one aggregate instance: its id, version, state, the events it
// recorded but nobody committed yet, and the window of recent command ids.
// A Root is not safe for concurrent use; the processor gives each aggregate
// to one goroutine at a time.
type Root[S any] struct {
	def     *Definition[S]
	id      string
	version int64
	state   S
	changes []Event
	recent  window
	// next is where decideEvents builds the state the events lead to: a
	// field, so that it costs no allocation per command.
	next S
}

// New returns the aggregate id of this type before any event: version -1 and
// the zero state.
func (d *Definition[S]) New(id string) *Root[S] {
	return &Root[S]{def: d, id: id, version: -1, recent: window{max: d.window}}
}

// ID returns the aggregate id.
func (r *Root[S]) ID() string { return r.id }

// Version returns the version of the last applied event, -1 for none.
func (r *Root[S]) Version() int64 { return r.version }

// State returns the current state. It shares maps and slices with the
// aggregate: treat it as read-only.
func (r *Root[S]) State() S { return r.state }

// StateAny returns the current state as an any (for generic tooling).
func (r *Root[S]) StateAny() any { return r.state }

// Changes returns the events recorded since the last ClearChanges, oldest
// first: the seeds' uncommitted "changes".
func (r *Root[S]) Changes() []Event { return r.changes }

// ClearChanges forgets the uncommitted events, once they are stored. It
// releases their memory too: a cached aggregate holds none.
func (r *Root[S]) ClearChanges() { r.changes = nil }

// Type returns the aggregate type name.
func (r *Root[S]) Type() string { return r.def.name }

// Execute decides cmd against the current state. On success the events are
// applied, checked, appended to Changes and returned. On any error the
// aggregate is unchanged. now stamps the events.
func (r *Root[S]) Execute(cmd *Command, now time.Time) ([]Event, error) {
	d, err := r.execute(cmd, now, nil)
	return d.Events, err
}

// Decision is what ExecuteEncoded decided: the events, each encoded, and
// the state they lead to, encoded (nil when there are no events).
type Decision struct {
	Events  []Event
	Encoded [][]byte // Encoded[i] is Events[i].Encode()
	State   []byte   // MarshalState after the events
}

// ExecuteEncoded is Execute that also encodes the events and the new state
// before it changes anything: when one cannot be encoded it returns an
// *EncodeError (ErrUnencodable) and the aggregate is unchanged, so one bad
// command cannot poison what is written after it.
func (r *Root[S]) ExecuteEncoded(cmd *Command, now time.Time) (Decision, error) {
	d, _, err := r.ExecuteAppend(cmd, now, nil)
	return d, err
}

// ExecuteAppend is ExecuteEncoded that appends the encoded events and state
// to buf and returns it extended; Decision.Encoded and Decision.State are
// parts of it. On error buf is returned as it was.
func (r *Root[S]) ExecuteAppend(cmd *Command, now time.Time, buf []byte) (Decision, []byte, error) {
	if buf == nil {
		buf = make([]byte, 0, 1024)
	}
	d, err := r.execute(cmd, now, &buf)
	return d, buf, err
}

func (r *Root[S]) execute(cmd *Command, now time.Time, buf *[]byte) (Decision, error) {
	events, encoded, err := r.decideEvents(cmd, now, buf != nil)
	if err != nil || len(events) == 0 {
		r.dropNext()
		return Decision{}, err
	}
	next := &r.next
	d := Decision{Events: events}
	if buf != nil {
		b := *buf
		d.Encoded = encoded
		for i := range events {
			start := len(b)
			if b, err = events[i].appendTo(b, r.def.events[events[i].Type].encode); err != nil {
				r.dropNext()
				return Decision{}, &EncodeError{What: "event", Type: events[i].Type, Err: err}
			}
			d.Encoded[i] = b[start:len(b):len(b)]
		}
		start := len(b)
		if b, err = r.appendState(b, r.version+int64(len(events)), next); err != nil {
			r.dropNext()
			return Decision{}, &EncodeError{What: "state", Err: err}
		}
		d.State = b[start:len(b):len(b)]
		*buf = b
	}
	r.state = *next
	r.version += int64(len(events))
	r.recent.add(cmd.ID)
	if len(r.changes) == 0 {
		r.changes = events[:len(events):len(events)] // no copy: the events are the aggregate's
	} else {
		r.changes = append(r.changes, events...)
	}
	return d, nil
}

// dropNext forgets the state of a decision that is not taken, so that the
// aggregate holds nothing of it.
func (r *Root[S]) dropNext() {
	var zero S
	r.next = zero
}

// oneEvent holds the events of a decision with one event, their
// encodings' slice and the text of the command id (their causation): one
// allocation for all three.
type oneEvent struct {
	events    [1]Event
	encoded   [1][]byte
	causation [ulid.EncodedSize]byte
}

// decideEvents decides cmd and applies its events to a copy of the state
// in r.next; the aggregate is not changed otherwise. withEncoded asks for
// a slice to hold the events' encodings as well, as long as the events.
func (r *Root[S]) decideEvents(cmd *Command, now time.Time, withEncoded bool) (events []Event, encoded [][]byte, err error) {
	if cmd.AggregateID != r.id {
		return nil, nil, fmt.Errorf("%w: command for %q given to %q", ErrWrongAggregate, truncate(cmd.AggregateID), r.id)
	}
	if r.recent.contains(cmd.ID) {
		return nil, nil, &DuplicateError{AggregateID: r.id, CommandID: cmd.ID.String(), Version: r.version}
	}
	if cmd.ExpectedVersion != nil && *cmd.ExpectedVersion != r.version {
		return nil, nil, &ConcurrencyError{AggregateID: r.id, Expected: *cmd.ExpectedVersion, Actual: r.version}
	}
	cd, ok := r.def.lookupCommand(cmd.Type)
	if !ok {
		_, err := r.def.DecodeCommandData(cmd)
		return nil, nil, err
	}
	payloads, decodeErr, err := cd.run(r.state, cmd.Data)
	if decodeErr != nil {
		return nil, nil, &DecodeError{What: "command data", Type: cd.name, Err: decodeErr}
	}
	if err != nil || len(payloads) == 0 {
		return nil, nil, err
	}
	if r.next, err = r.def.clone(&r.state); err != nil {
		return nil, nil, err
	}
	var causation string
	switch {
	case len(payloads) == 1 && withEncoded:
		one := &oneEvent{}
		events, encoded = one.events[:], one.encoded[:]
		_ = cmd.ID.MarshalTextTo(one.causation[:])                       // cannot fail: the buffer has the right size
		causation = unsafe.String(&one.causation[0], len(one.causation)) // never written again
	case withEncoded:
		events, encoded = make([]Event, len(payloads)), make([][]byte, len(payloads))
	default:
		events = make([]Event, len(payloads))
	}
	if causation == "" {
		causation = cmd.ID.String()
	}
	correlation := cmd.Metadata.CorrelationID
	if correlation == "" {
		correlation = causation // Correlation(), without a second String
	}
	for i, p := range payloads {
		ed, ok := r.def.eventsByGo[reflectType(p)]
		if !ok {
			return nil, nil, fmt.Errorf("%w: handler of %s returned %T, which is not a registered event of %q", ErrUnknownEventType, cd.name, p, r.def.name)
		}
		v := r.version + int64(i) + 1
		if err := r.applyChecked(&r.next, ed, p, v); err != nil {
			return nil, nil, err
		}
		id, err := newULID(now)
		if err != nil {
			return nil, nil, err
		}
		events[i] = Event{
			ID: id, Type: ed.name, Source: r.def.source, Subject: r.id, Time: now,
			AggregateType: r.def.name, Version: v, SchemaVersion: ed.schema,
			CausationID: causation, CorrelationID: correlation, Actor: cmd.Metadata.Actor, TraceParent: cmd.Metadata.TraceParent,
			Data: p,
		}
	}
	return events, encoded, nil
}

// applyChecked applies one event to s and runs the invariant, turning panics
// into errors.
func (r *Root[S]) applyChecked(s *S, ed *eventDef[S], payload any, version int64) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &PanicError{Where: "applying " + ed.name, Value: p}
		}
	}()
	ed.apply(s, payload)
	if r.def.invariant != nil {
		if ierr := r.def.invariant(s); ierr != nil {
			return &InvariantError{EventType: ed.name, Version: version, Err: ierr}
		}
	}
	return nil
}

// Apply replays one stored event: it must carry the next version and belong
// to this aggregate. The invariant is checked after it; if the check fails,
// the event is still applied (it is a fact) and the *InvariantError is
// returned so the caller can report the inconsistent history.
func (r *Root[S]) Apply(e *Event) error {
	if e.Subject != r.id {
		return fmt.Errorf("%w: event of %q given to %q", ErrWrongAggregate, truncate(e.Subject), r.id)
	}
	if e.Version != r.version+1 {
		return &VersionGapError{AggregateID: r.id, Want: r.version + 1, Got: e.Version}
	}
	ed, ok := r.def.events[e.Type]
	if !ok {
		return fmt.Errorf("%w: %q is not an event of %q", ErrUnknownEventType, truncate(e.Type), r.def.name)
	}
	if reflectType(e.Data) != ed.goType {
		return &DecodeError{What: "event data", Type: e.Type, Err: fmt.Errorf("payload is %T, want %v", e.Data, ed.goType)}
	}
	err := r.applyChecked(&r.state, ed, e.Data, e.Version)
	if _, panicked := err.(*PanicError); panicked { // applyChecked never wraps
		return err
	}
	r.version = e.Version
	if id, perr := parseULIDString(e.CausationID); perr == nil {
		r.recent.add(id)
	}
	return err
}

// Load replays history (the seeds' load): events of this aggregate in
// version order, starting at the aggregate's next version.
func (r *Root[S]) Load(history []Event) error {
	for i := range history {
		if err := r.Apply(&history[i]); err != nil {
			return fmt.Errorf("loading %q: %w", r.id, err)
		}
	}
	return nil
}

// snapshotWire is the JSON shape of a Root snapshot.
type snapshotWire[S any] struct {
	ID      string      `json:"id"`
	Version int64       `json:"version"`
	State   S           `json:"state"`
	Recent  []ulid.ULID `json:"recent,omitempty"`
}

// MarshalSnapshot encodes the aggregate's id, version, state and recent
// command ids: everything needed to resume it without its events.
func (r *Root[S]) MarshalSnapshot() ([]byte, error) {
	p := r.def.statePlan
	if p == nil {
		b, err := json.Marshal(snapshotWire[S]{ID: r.id, Version: r.version, State: r.state, Recent: r.recent.ordered()})
		if err != nil {
			return nil, fmt.Errorf("encoding snapshot of %q: %w", r.id, err)
		}
		return b, nil
	}
	// What json.Marshal of the snapshotWire writes, by hand and by plan.
	// The state's size is a guess; the ids' is exact.
	ids := r.recent.ids
	b := make([]byte, 0, 256+len(r.id)+len(ids)*(ulid.EncodedSize+3))
	b = append(b, `{"id":`...)
	b = appendJSONString(b, r.id)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, r.version, 10)
	b = append(b, `,"state":`...)
	b = p.encode(b, unsafe.Pointer(&r.state))
	if len(ids) > 0 {
		b = append(b, `,"recent":`...)
		b = slices.Grow(b, len(ids)*(ulid.EncodedSize+3)+1)
		// Oldest first, as ordered() gives them, without its copy: next
		// is 0 until the ring is full.
		for k, part := range [2][]ulid.ULID{ids[r.recent.next:], ids[:r.recent.next]} {
			for i := range part {
				sep := byte(',')
				if k == 0 && i == 0 {
					sep = '['
				}
				n := len(b)
				b = b[:n+ulid.EncodedSize+3]
				b[n], b[n+1], b[n+ulid.EncodedSize+2] = sep, '"', '"'
				encodeULID((*[ulid.EncodedSize]byte)(b[n+2:]), &part[i])
			}
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// UnmarshalSnapshot restores the aggregate from MarshalSnapshot's output. The
// snapshot must be of this aggregate. On error the aggregate is unchanged.
func (r *Root[S]) UnmarshalSnapshot(b []byte) error {
	// The state is read into r.next, which costs no allocation, unlike a
	// variable whose address the plan is given.
	r.dropNext()
	var fast snapshotRead
	ok := readSnapshot(b, r.def.statePlan, unsafe.Pointer(&r.next), r.def.window, &fast)
	state := r.next
	r.dropNext()
	if ok {
		if string(fast.id) != r.id {
			return wrongSnapshot(string(fast.id), r.id)
		}
		if fast.version < -1 {
			return badSnapshotVersion(r.def.name, fast.version)
		}
		r.version, r.state, r.recent = fast.version, state, fast.recent
		r.changes = nil
		return nil
	}
	var w snapshotWire[S]
	if err := json.Unmarshal(b, &w); err != nil {
		return &DecodeError{What: "snapshot", Type: r.def.name, Err: err}
	}
	if w.ID != r.id {
		return wrongSnapshot(w.ID, r.id)
	}
	if w.Version < -1 {
		return badSnapshotVersion(r.def.name, w.Version)
	}
	r.version, r.state = w.Version, w.State
	r.recent = window{max: r.def.window}
	for _, id := range w.Recent {
		r.recent.add(id)
	}
	r.changes = nil
	return nil
}

func wrongSnapshot(got, want string) error {
	return fmt.Errorf("%w: snapshot of %q given to %q", ErrWrongAggregate, truncate(got), want)
}

func badSnapshotVersion(typ string, v int64) error {
	return &DecodeError{What: "snapshot", Type: typ, Err: fmt.Errorf("version %d", v)}
}

// stateWire is the JSON shape of MarshalState.
type stateWire[S any] struct {
	AggregateType string `json:"aggregate_type"`
	AggregateID   string `json:"aggregate_id"`
	Version       int64  `json:"version"`
	State         S      `json:"state"`
}

// MarshalState encodes the aggregate's current state and version for
// downstream readers (the state topic).
func (r *Root[S]) MarshalState() ([]byte, error) {
	b, err := r.appendState(nil, r.version, &r.state)
	if err != nil {
		return nil, fmt.Errorf("encoding state of %q: %w", r.id, err)
	}
	return b, nil
}

// appendState appends the state record of s at version: what json.Marshal
// of a stateWire writes, the envelope by hand and s by its plan when it has
// one.
func (r *Root[S]) appendState(b []byte, version int64, s *S) ([]byte, error) {
	b = append(b, `{"aggregate_type":`...)
	b = appendJSONString(b, r.def.name)
	b = append(b, `,"aggregate_id":`...)
	b = appendJSONString(b, r.id)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, version, 10)
	b = append(b, `,"state":`...)
	if p := r.def.statePlan; p != nil {
		b = p.encode(b, unsafe.Pointer(s))
	} else {
		data, err := json.Marshal(*s) // a copy escapes, not s
		if err != nil {
			return nil, err
		}
		b = append(b, data...)
	}
	return append(b, '}'), nil
}
