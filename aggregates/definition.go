package aggregates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
	"unsafe"
)

// DefaultWindow is how many recent command ids an aggregate remembers for
// duplicate detection unless Window says otherwise.
const DefaultWindow = 32

// Definition describes one aggregate type: its name, its state type S, the
// event types with their apply functions, the command types with their
// handlers, and its invariant. Build it once with Define; it is immutable and
// safe for concurrent use afterwards.
type Definition[S any] struct {
	name        string
	source      string
	events      map[string]*eventDef[S] // by wire name
	eventsByGo  map[reflect.Type]*eventDef[S]
	commands    map[string]*commandDef[S] // by wire name
	commandByGo map[reflect.Type]*commandDef[S]
	invariant   func(*S) error
	window      int
	stateSchema int
	clone       func(*S) (S, error)
	statePlan   *plan // nil: the state goes through encoding/json
	// interned are the strings of every event of the type: its name,
	// source and event types, each kept once.
	interned map[string]string
}

type eventDef[S any] struct {
	name      string // wire name
	schema    int
	goType    reflect.Type
	decode    func(json.RawMessage) (any, error)
	apply     func(*S, any)
	upcasters map[int]func(json.RawMessage) (json.RawMessage, error)
	// encode appends the payload's JSON as json.Marshal writes it; ok is
	// false when the payload is not of the type's plan (or it has none).
	encode func(b []byte, payload any) (out []byte, ok bool)
}

type commandDef[S any] struct {
	name   string
	goType reflect.Type
	decode func(json.RawMessage) (any, error)
	// run decodes the data and hands it to the handler, without boxing it
	// in an any: decodeErr when it does not decode, else the handler's
	// events and error (a panic in the handler as a *PanicError).
	run func(s S, raw json.RawMessage) (events []any, decodeErr, err error)
}

// Option configures a Definition.
type Option[S any] func(*Definition[S]) error

// EventOption configures one event type.
type EventOption func(*eventConfig) error

type eventConfig struct {
	schema    int
	upcasters map[int]func(json.RawMessage) (json.RawMessage, error)
}

// SchemaVersion sets the current schema version of an event type's payload
// (default 1). Payloads stored with an older version are upcast on read.
func SchemaVersion(v int) EventOption {
	return func(c *eventConfig) error {
		if v < 1 {
			return fmt.Errorf("schema version %d: must be 1 or more", v)
		}
		c.schema = v
		return nil
	}
}

// Upcast registers fn to turn a payload of schema version from into the shape
// of version from+1. Every version between the oldest stored one and the
// current one needs an upcaster; a missing step is reported when an event of
// that version is read.
func Upcast(from int, fn func(old json.RawMessage) (json.RawMessage, error)) EventOption {
	return func(c *eventConfig) error {
		if from < 1 || fn == nil {
			return fmt.Errorf("upcaster from version %d: version must be 1 or more and fn non-nil", from)
		}
		if c.upcasters == nil {
			c.upcasters = map[int]func(json.RawMessage) (json.RawMessage, error){}
		}
		if _, dup := c.upcasters[from]; dup {
			return fmt.Errorf("two upcasters from version %d", from)
		}
		c.upcasters[from] = fn
		return nil
	}
}

// When registers an event type E under name (wire name "<aggregate>.<name>")
// with the function that applies it to the state. Apply functions must not
// fail: an event the aggregate produced is a fact.
func When[S, E any](name string, apply func(*S, E), opts ...EventOption) Option[S] {
	return func(d *Definition[S]) error {
		if err := checkName(name); err != nil {
			return fmt.Errorf("event %q: %w", name, err)
		}
		if apply == nil {
			return fmt.Errorf("event %q: apply function is nil", name)
		}
		cfg := eventConfig{schema: 1}
		for _, o := range opts {
			if err := o(&cfg); err != nil {
				return fmt.Errorf("event %q: %w", name, err)
			}
		}
		for from := range cfg.upcasters {
			if from >= cfg.schema {
				return fmt.Errorf("event %q: upcaster from version %d but current version is %d", name, from, cfg.schema)
			}
		}
		wire := d.name + "." + name
		t := reflect.TypeFor[E]()
		if _, dup := d.events[wire]; dup {
			return fmt.Errorf("event %q registered twice", name)
		}
		if _, dup := d.eventsByGo[t]; dup {
			return fmt.Errorf("event %q: Go type %v already registered under another name", name, t)
		}
		fast := planFor(t)
		ed := &eventDef[S]{
			name: wire, schema: cfg.schema, goType: t, upcasters: cfg.upcasters,
			decode: func(raw json.RawMessage) (any, error) {
				var e E
				if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
					return e, nil
				}
				// The plan refuses unknown fields, which json.Unmarshal
				// ignores: such a payload takes json.Unmarshal.
				if fast != nil && fast.decode(raw, unsafe.Pointer(&e)) {
					return e, nil
				}
				var slow E // a variable of its own, so that e stays on the stack
				if err := json.Unmarshal(raw, &slow); err != nil {
					return nil, err
				}
				return slow, nil
			},
			apply: func(s *S, e any) { apply(s, e.(E)) },
		}
		if p := fast; p != nil {
			ed.encode = func(b []byte, payload any) ([]byte, bool) {
				e, ok := payload.(E)
				if !ok {
					return b, false
				}
				return p.encode(b, unsafe.Pointer(&e)), true
			}
		}
		d.events[wire] = ed
		d.eventsByGo[t] = ed
		return nil
	}
}

// Handle registers a command type C under name with the handler that
// decides it. The handler sees a copy of the current state, must not change
// it, and returns the events to record (values of registered event types) or
// an error: a *Rejection from Reject for business refusals.
func Handle[S, C any](name string, handle func(S, C) ([]any, error)) Option[S] {
	return func(d *Definition[S]) error {
		if err := checkName(name); err != nil {
			return fmt.Errorf("command %q: %w", name, err)
		}
		if handle == nil {
			return fmt.Errorf("command %q: handler is nil", name)
		}
		wire := d.name + "." + name
		t := reflect.TypeFor[C]()
		if _, dup := d.commands[wire]; dup {
			return fmt.Errorf("command %q registered twice", name)
		}
		if _, dup := d.commandByGo[t]; dup {
			return fmt.Errorf("command %q: Go type %v already registered under another name", name, t)
		}
		fast := planFor(t)
		cd := &commandDef[S]{
			name: wire, goType: t,
			decode: func(raw json.RawMessage) (any, error) {
				c, err := decodeData[C](fast, raw)
				if err != nil {
					return nil, err
				}
				return c, nil
			},
			run: func(s S, raw json.RawMessage) (events []any, decodeErr, err error) {
				c, err := decodeData[C](fast, raw)
				if err != nil {
					return nil, err, nil
				}
				defer func() {
					if p := recover(); p != nil {
						events, err = nil, &PanicError{Where: "command handler " + wire, Value: p}
					}
				}()
				events, err = handle(s, c)
				return events, nil, err
			},
		}
		d.commands[wire] = cd
		d.commandByGo[t] = cd
		return nil
	}
}

// decodeData decodes a command's data as a C: by its plan when it has one
// and the data fits it, else by encoding/json with unknown fields refused.
// Empty data and null give the zero C.
func decodeData[C any](fast *plan, raw json.RawMessage) (C, error) {
	var c C
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return c, nil
	}
	if fast != nil && fast.decode(raw, unsafe.Pointer(&c)) {
		return c, nil
	}
	// A variable of its own: the plan may have written part of c.
	var slow C
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&slow); err != nil {
		return slow, err
	}
	if dec.More() {
		return slow, errors.New("trailing data after the JSON object")
	}
	return slow, nil
}

// Invariant sets the check run after every applied event (the seeds'
// ensure_valid_state). A non-nil error means the state is invalid; a command
// whose events lead there is rejected with ErrInvariantViolated.
func Invariant[S any](check func(*S) error) Option[S] {
	return func(d *Definition[S]) error {
		if d.invariant != nil {
			return errors.New("two invariant checks: combine them into one function")
		}
		d.invariant = check
		return nil
	}
}

// Window sets how many recent command ids each aggregate remembers for
// duplicate detection (default DefaultWindow). 0 turns detection off.
func Window[S any](n int) Option[S] {
	return func(d *Definition[S]) error {
		if n < 0 {
			return fmt.Errorf("window %d: must not be negative", n)
		}
		d.window = n
		return nil
	}
}

// StateSchema sets the version of the state's shape (default 1). Bump it
// whenever S or an apply function changes meaning: snapshots stamped with an
// older version are then ignored and state is rebuilt from events.
func StateSchema[S any](v int) Option[S] {
	return func(d *Definition[S]) error {
		if v < 1 {
			return fmt.Errorf("state schema %d: must be 1 or more", v)
		}
		d.stateSchema = v
		return nil
	}
}

// Clone sets how the state is copied before a command's events are applied
// to it, so that a rejected command leaves no trace. Without it, a state whose
// pointer has a method Clone() S uses that; otherwise it is copied through
// JSON, which is always correct but slower.
func Clone[S any](fn func(S) S) Option[S] {
	return func(d *Definition[S]) error {
		d.clone = func(s *S) (S, error) { return fn(*s), nil }
		return nil
	}
}

// Define builds an aggregate Definition named name (lower case, e.g.
// "order") from its registrations. It reports every inconsistency at once,
// each matching ErrDefinition.
func Define[S any](name string, opts ...Option[S]) (*Definition[S], error) {
	d := &Definition[S]{
		name: name, source: "/chronicle/" + name,
		events: map[string]*eventDef[S]{}, eventsByGo: map[reflect.Type]*eventDef[S]{},
		commands: map[string]*commandDef[S]{}, commandByGo: map[reflect.Type]*commandDef[S]{},
		window: DefaultWindow, stateSchema: 1,
	}
	var problems []error
	if err := checkName(name); err != nil {
		problems = append(problems, fmt.Errorf("aggregate type %q: %w", name, err))
	}
	for _, o := range opts {
		if err := o(d); err != nil {
			problems = append(problems, err)
		}
	}
	if len(d.events) == 0 {
		problems = append(problems, errors.New("no event types registered"))
	}
	if len(d.commands) == 0 {
		problems = append(problems, errors.New("no command types registered"))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w %q: %w", ErrDefinition, name, errors.Join(problems...))
	}
	d.statePlan = planFor(reflect.TypeFor[S]())
	d.interned = map[string]string{d.name: d.name, d.source: d.source}
	for name := range d.events {
		d.interned[name] = name
	}
	if d.clone == nil {
		var zero S
		if _, ok := any(&zero).(interface{ Clone() S }); ok {
			// Called on the aggregate's own state: boxing the pointer
			// allocates nothing.
			d.clone = func(s *S) (S, error) { return any(s).(interface{ Clone() S }).Clone(), nil }
		} else {
			d.clone = jsonClone[S]
		}
	}
	return d, nil
}

// MustDefine is Define for package-level setup code whose registrations are
// fixed at compile time; it panics on a definition error.
func MustDefine[S any](name string, opts ...Option[S]) *Definition[S] {
	d, err := Define(name, opts...)
	if err != nil {
		panic(err)
	}
	return d
}

func jsonClone[S any](s *S) (S, error) {
	var out S
	b, err := json.Marshal(*s)
	if err != nil {
		return out, fmt.Errorf("copying state through JSON: %w", err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, fmt.Errorf("copying state through JSON: %w", err)
	}
	return out, nil
}

func checkName(n string) error {
	if n == "" {
		return errors.New("name is empty")
	}
	if strings.ContainsAny(n, ". \t\n/") {
		return errors.New("name must not contain dots, slashes or spaces")
	}
	return nil
}

// Name returns the aggregate type name, e.g. "order".
func (d *Definition[S]) Name() string { return d.name }

// StateStamp identifies the state's shape: "<name>/v<state schema>".
// Snapshots carry it, and one with another stamp is not trusted.
func (d *Definition[S]) StateStamp() string { return fmt.Sprintf("%s/v%d", d.name, d.stateSchema) }

// EventTypes returns the wire names of the registered event types.
func (d *Definition[S]) EventTypes() []string { return keys(d.events) }

// CommandTypes returns the wire names of the registered command types.
func (d *Definition[S]) CommandTypes() []string { return keys(d.commands) }

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// EventType returns the wire name registered for an event payload's Go type.
func (d *Definition[S]) EventType(payload any) (string, bool) {
	ed, ok := d.eventsByGo[reflect.TypeOf(payload)]
	if !ok {
		return "", false
	}
	return ed.name, true
}

// CommandType returns the wire name registered for a command payload's Go
// type.
func (d *Definition[S]) CommandType(payload any) (string, bool) {
	cd, ok := d.commandByGo[reflect.TypeOf(payload)]
	if !ok {
		return "", false
	}
	return cd.name, true
}

// NewCommand builds a command envelope for payload, a value of a registered
// command type, with a fresh ULID.
func (d *Definition[S]) NewCommand(aggregateID string, payload any, md Metadata) (Command, error) {
	t := reflect.TypeOf(payload)
	cd, ok := d.commandByGo[t]
	if !ok {
		if t != nil && t.Kind() == reflect.Pointer && d.commandByGo[t.Elem()] != nil {
			return Command{}, fmt.Errorf("%w: Go type %T is a pointer to a command of %q: pass the value (%s{…}, not &%s{…})",
				ErrUnknownCommandType, payload, d.name, t.Elem(), t.Elem())
		}
		return Command{}, fmt.Errorf("%w: Go type %T is not a command of %q", ErrUnknownCommandType, payload, d.name)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return Command{}, fmt.Errorf("encoding %s: %w", cd.name, err)
	}
	id, err := newULID(time.Now())
	if err != nil {
		return Command{}, err
	}
	return Command{ID: id, Type: cd.name, AggregateID: aggregateID, Data: data, Metadata: md}, nil
}

func (d *Definition[S]) lookupCommand(t string) (*commandDef[S], bool) {
	if cd, ok := d.commands[t]; ok {
		return cd, true
	}
	if !strings.Contains(t, ".") {
		cd, ok := d.commands[d.name+"."+t]
		return cd, ok
	}
	return nil, false
}

// DecodeCommandData decodes cmd.Data into the command's registered Go type.
// Unknown fields are an error: a typo in a field name never passes silently.
func (d *Definition[S]) DecodeCommandData(cmd *Command) (any, error) {
	cd, ok := d.lookupCommand(cmd.Type)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a command of %q (known: %s)", ErrUnknownCommandType, truncate(cmd.Type), d.name, strings.Join(d.CommandTypes(), ", "))
	}
	v, err := cd.decode(cmd.Data)
	if err != nil {
		return nil, &DecodeError{What: "command data", Type: cd.name, Err: err}
	}
	return v, nil
}

// DecodeEvent decodes a CloudEvents document of this aggregate type, upcasting
// its payload to the current schema version. Errors match ErrMalformed,
// ErrUnknownEventType or ErrSchemaVersion.
func (d *Definition[S]) DecodeEvent(b []byte) (Event, error) {
	e, raw, err := decodeEventEnvelope(b, d.interned)
	if err != nil {
		return e, err
	}
	ed, ok := d.events[e.Type]
	if !ok {
		return e, fmt.Errorf("%w: %q is not an event of %q", ErrUnknownEventType, truncate(e.Type), d.name)
	}
	raw, err = ed.upcast(raw, e.SchemaVersion)
	if err != nil {
		return e, err
	}
	e.Data, err = ed.decode(raw)
	if err != nil {
		return e, &DecodeError{What: "event data", Type: e.Type, Err: err}
	}
	e.SchemaVersion = ed.schema
	return e, nil
}

// DecodeEventForReplay decodes a stored event for Apply, as a restore
// does: it fills only what Apply reads (Type, Subject, Version,
// SchemaVersion, CausationID and Data) and leaves the other attributes
// zero, unparsed. It accepts exactly the events DecodeEvent accepts, with
// the same errors, and what it fills equals what DecodeEvent would.
//
// subject, when set, returns the string for the aggregate id in the
// subject bytes it is given (an id already in memory, sparing an
// allocation); it must not keep those bytes. CausationID shares b's
// memory: b must not change while the event is in use.
func (d *Definition[S]) DecodeEventForReplay(b []byte, subject func([]byte) string) (Event, error) {
	var w replayWire
	if readReplay(b, &w) {
		if ed, ok := d.events[string(w.typ)]; ok {
			sv := int(w.schema)
			if sv == 0 {
				sv = 1
			}
			var (
				raw  json.RawMessage
				data any
				err  error
			)
			if w.unchecked && sv != ed.schema && !json.Valid(w.data) {
				err = ErrMalformed // an upcaster is given valid JSON only
			} else {
				raw, err = ed.upcast(w.data, sv)
			}
			if err == nil {
				// A successful decoding read the data as one JSON value.
				data, err = ed.decode(raw)
			}
			if err == nil {
				e := Event{Type: ed.name, Version: w.version, SchemaVersion: ed.schema, Data: data}
				if len(w.causation) > 0 {
					e.CausationID = unsafe.String(&w.causation[0], len(w.causation))
				}
				if subject != nil {
					e.Subject = subject(w.subject)
				} else {
					e.Subject = string(w.subject)
				}
				return e, nil
			}
		}
	}
	return d.DecodeEvent(b) // its verdict and its error
}

func (ed *eventDef[S]) upcast(raw json.RawMessage, have int) (json.RawMessage, error) {
	if have > ed.schema {
		return nil, &SchemaError{Type: ed.name, Have: have, Current: ed.schema, Reason: "written by newer code; deploy the newer version to read it"}
	}
	for v := have; v < ed.schema; v++ {
		up, ok := ed.upcasters[v]
		if !ok {
			return nil, &SchemaError{Type: ed.name, Have: have, Current: ed.schema, Reason: fmt.Sprintf("no upcaster from version %d to %d is registered", v, v+1)}
		}
		next, err := up(raw)
		if err != nil {
			return nil, &SchemaError{Type: ed.name, Have: have, Current: ed.schema, Reason: fmt.Sprintf("upcasting from version %d: %v", v, err)}
		}
		raw = next
	}
	return raw, nil
}
