package aggregates

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/oklog/ulid/v2"
)

// Limits applied when decoding outside input.
const (
	// MaxIDLength is the longest aggregate id accepted, in bytes.
	MaxIDLength = 256
	// MaxTypeLength is the longest command or event type name accepted.
	MaxTypeLength = 128
)

// Metadata travels with a command and is copied onto every event it produces.
type Metadata struct {
	// CorrelationID ties together every command and event of one business
	// flow. When a command has none, its own id is used.
	CorrelationID string `json:"correlation_id,omitempty"`
	// Actor is the user or service on whose behalf the command was sent.
	Actor string `json:"actor,omitempty"`
	// Timestamp is when the sender created the command.
	Timestamp time.Time `json:"timestamp,omitzero"`
	// TraceParent is a W3C trace context ("00-<trace id>-<span id>-<flags>")
	// the command continues; a traceparent Kafka header takes its place. Its
	// events carry the processor's span for the command in their traceparent
	// attribute (the CloudEvents distributed tracing extension).
	TraceParent string `json:"traceparent,omitempty"`
}

// Command is the envelope of a command on the wire (JSON, one per Kafka
// record, keyed by AggregateID).
type Command struct {
	// ID is a ULID chosen by the sender. Resending the same id is safe: the
	// aggregate reports a duplicate instead of acting twice.
	ID ulid.ULID `json:"id"`
	// Type names the command: "order.AddLine" (the short form "AddLine" is
	// accepted too).
	Type string `json:"type"`
	// AggregateID is the aggregate the command is addressed to.
	AggregateID string `json:"aggregate_id"`
	// ExpectedVersion, when set, must equal the aggregate's version or the
	// command fails with ErrConcurrencyConflict. -1 means "must not exist".
	ExpectedVersion *int64 `json:"expected_version,omitempty"`
	// Data is the command's payload, decoded into its registered Go type.
	Data json.RawMessage `json:"data,omitempty"`
	// Metadata is copied onto the events the command produces.
	Metadata Metadata `json:"metadata,omitzero"`
}

// commandWire is the JSON shape DecodeCommand reads.
type commandWire struct {
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	AggregateID     string          `json:"aggregate_id"`
	ExpectedVersion *int64          `json:"expected_version"`
	Data            json.RawMessage `json:"data"`
	Metadata        Metadata        `json:"metadata"`
}

// DecodeCommand decodes and validates a command envelope. On error it still
// returns whatever fields it could read (the id above all), so a caller can
// answer the sender. Every error matches ErrMalformed. The command's Data
// may share memory with b.
func DecodeCommand(b []byte) (Command, error) {
	var w commandWire
	var c Command
	idText, fast := readCommand(b, &w)
	if !fast {
		var slow commandWire // a variable of its own, so that w stays on the stack
		err := json.Unmarshal(b, &slow)
		w = slow
		if err != nil {
			// Try to read at least the id, so the sender can get an answer.
			var idOnly struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(b, &idOnly) == nil {
				c.ID, _ = ulid.ParseStrict(idOnly.ID)
			}
			return c, &DecodeError{What: "command", Err: err}
		}
		idText = []byte(w.ID)
	}
	id, idErr := parseULID(idText)
	if idErr == nil {
		c.ID = id
	}
	c.Type, c.AggregateID, c.ExpectedVersion, c.Data, c.Metadata = w.Type, w.AggregateID, w.ExpectedVersion, w.Data, w.Metadata
	var problems []error
	switch {
	case len(idText) == 0:
		problems = append(problems, errors.New(`"id" is missing: set it to a new ULID`))
	case idErr != nil:
		problems = append(problems, fmt.Errorf(`"id" %q is not a ULID: %w`, truncate(string(idText)), idErr))
	case id == (ulid.ULID{}):
		problems = append(problems, errors.New(`"id" is the zero ULID: set it to a new ULID`))
	}
	switch {
	case w.Type == "":
		problems = append(problems, errors.New(`"type" is missing`))
	case len(w.Type) > MaxTypeLength:
		problems = append(problems, fmt.Errorf(`"type" is longer than %d bytes`, MaxTypeLength))
	}
	switch {
	case w.AggregateID == "":
		problems = append(problems, errors.New(`"aggregate_id" is missing`))
	case len(w.AggregateID) > MaxIDLength:
		problems = append(problems, fmt.Errorf(`"aggregate_id" is longer than %d bytes`, MaxIDLength))
	}
	if w.ExpectedVersion != nil && *w.ExpectedVersion < -1 {
		problems = append(problems, fmt.Errorf(`"expected_version" %d is below -1`, *w.ExpectedVersion))
	}
	if len(w.Data) > 0 && !bytes.HasPrefix(bytes.TrimSpace(w.Data), []byte("{")) && !bytes.Equal(bytes.TrimSpace(w.Data), []byte("null")) {
		problems = append(problems, errors.New(`"data" must be a JSON object`))
	}
	if len(problems) > 0 {
		return c, &DecodeError{What: "command", Type: truncate(w.Type), Err: errors.Join(problems...)}
	}
	return c, nil
}

// Encode returns the command's JSON document.
func (c *Command) Encode() ([]byte, error) {
	if c.ID == (ulid.ULID{}) {
		return nil, fmt.Errorf("encoding command %s: id is the zero ULID", c.Type)
	}
	return json.Marshal(c)
}

// Correlation returns the command's correlation id, or its own id when it has
// none.
func (c *Command) Correlation() string {
	if c.Metadata.CorrelationID != "" {
		return c.Metadata.CorrelationID
	}
	return c.ID.String()
}

// SpecVersion is the CloudEvents version of every event document.
const SpecVersion = "1.0"

// Event is a recorded event: the CloudEvents 1.0 envelope plus the decoded
// payload. On the wire it is a structured-mode CloudEvents JSON document
// whose extension attributes carry the aggregate version, schema version,
// causation id (the command's id), correlation id and actor.
type Event struct {
	// ID is the event's own ULID.
	ID ulid.ULID
	// Type is the wire name, "order.LineAdded".
	Type string
	// Source is "/chronicle/<aggregate type>".
	Source string
	// Subject is the aggregate id.
	Subject string
	// Time is when the event was recorded.
	Time time.Time
	// AggregateType is the aggregate's type name, "order".
	AggregateType string
	// Version is the aggregate version this event produced (0 for the first).
	Version int64
	// SchemaVersion is the payload's schema version as written.
	SchemaVersion int
	// CausationID is the id of the command that produced the event.
	CausationID string
	// CorrelationID is copied from the command.
	CorrelationID string
	// Actor is copied from the command.
	Actor string
	// TraceParent is the W3C trace context of the span that decided the
	// command (CloudEvents distributed tracing extension), when traced.
	TraceParent string
	// Data is the decoded payload, a value of the event's registered Go type.
	Data any
}

// eventWire is the JSON shape of an Event.
type eventWire struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Type            string          `json:"type"`
	Source          string          `json:"source"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	AggregateType   string          `json:"aggregatetype"`
	Version         *int64          `json:"aggregateversion"`
	SchemaVersion   int             `json:"schemaversion,omitempty"`
	CausationID     string          `json:"causationid,omitempty"`
	CorrelationID   string          `json:"correlationid,omitempty"`
	Actor           string          `json:"actor,omitempty"`
	TraceParent     string          `json:"traceparent,omitempty"`
	Data            json.RawMessage `json:"data"`
	// idText is the id as the fast reader found it, aliasing the document,
	// instead of ID.
	idText []byte
	// version and hasVersion are the aggregate version as decodeWire
	// returns it, in place of Version.
	version    int64
	hasVersion bool
}

// Encode returns the event's CloudEvents JSON document. The envelope is
// written by hand (it is on the hot path of every command); only the payload
// goes through encoding/json. The output is what json.Marshal of the wire
// struct would produce. The time is written in UTC, so it must fall in the
// years 0000 to 9999 there (RFC 3339 has no other years).
func (e *Event) Encode() ([]byte, error) { return e.appendTo(nil, nil) }

// appendTo appends the event's document to b. encodeData, when set, appends
// the payload as json.Marshal writes it, or reports that it cannot; the
// payload then goes through json.Marshal.
func (e *Event) appendTo(b []byte, encodeData func([]byte, any) ([]byte, bool)) ([]byte, error) {
	if !inRFC3339Range(e.Time) {
		return nil, fmt.Errorf("encoding event %s: time %v is outside the years 0000-9999 in UTC: stamp events with a real clock", e.Type, e.Time)
	}
	var data []byte
	if encodeData == nil {
		var err error
		if data, err = json.Marshal(e.Data); err != nil {
			return nil, fmt.Errorf("encoding data of event %s: %w", e.Type, err)
		}
	}
	sv := e.SchemaVersion
	if sv == 0 {
		sv = 1
	}
	if b == nil {
		// The attribute names, the ULID, the time and the versions take
		// at most 360 bytes; the strings may need escaping and the
		// payload may be longer, which then grows b once.
		b = make([]byte, 0, 360+128+len(data)+len(e.Type)+len(e.Source)+len(e.Subject)+len(e.AggregateType)+
			len(e.CausationID)+len(e.CorrelationID)+len(e.Actor)+len(e.TraceParent))
	}
	b = append(b, `{"specversion":"1.0","id":"`...)
	var id [ulid.EncodedSize]byte
	_ = e.ID.MarshalTextTo(id[:]) // cannot fail: the buffer has the right size
	b = append(b, id[:]...)
	b = append(b, `","type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"source":`...)
	b = appendJSONString(b, e.Source)
	b = append(b, `,"subject":`...)
	b = appendJSONString(b, e.Subject)
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","datacontenttype":"application/json","aggregatetype":`...)
	b = appendJSONString(b, e.AggregateType)
	b = append(b, `,"aggregateversion":`...)
	b = strconv.AppendInt(b, e.Version, 10)
	b = append(b, `,"schemaversion":`...)
	b = strconv.AppendInt(b, int64(sv), 10)
	for _, f := range [...]struct{ name, v string }{{"causationid", e.CausationID}, {"correlationid", e.CorrelationID}, {"actor", e.Actor}, {"traceparent", e.TraceParent}} {
		if f.v != "" {
			b = append(b, `,"`...)
			b = append(b, f.name...)
			b = append(b, `":`...)
			b = appendJSONString(b, f.v)
		}
	}
	b = append(b, `,"data":`...)
	if encodeData != nil {
		var ok bool
		if b, ok = encodeData(b, e.Data); !ok {
			d, err := json.Marshal(e.Data)
			if err != nil {
				return nil, fmt.Errorf("encoding data of event %s: %w", e.Type, err)
			}
			b = append(b, d...)
		}
	} else {
		b = append(b, data...)
	}
	return append(b, '}'), nil
}

// appendJSONString appends s as a JSON string. Plain printable ASCII is
// copied; anything else takes encoding/json's path, so escaping (control
// characters, invalid UTF-8, HTML characters) is exactly json.Marshal's.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// inRFC3339Range reports whether t, in UTC, has a four-digit year.
func inRFC3339Range(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// decodeEventEnvelope reads the envelope and leaves the payload raw (it may
// alias b).
// intern, when set, returns the one string of a common value (the
// aggregate type, its source, its event types), sparing an allocation.
func decodeEventEnvelope(b []byte, intern map[string]string) (Event, json.RawMessage, error) {
	var w eventWire
	if err := decodeWire(b, &w, intern); err != nil {
		return Event{}, nil, &DecodeError{What: "event", Err: err}
	}
	e := Event{Type: w.Type, Source: w.Source, Subject: w.Subject, Time: w.Time,
		AggregateType: w.AggregateType, SchemaVersion: w.SchemaVersion,
		CausationID: w.CausationID, CorrelationID: w.CorrelationID, Actor: w.Actor, TraceParent: w.TraceParent}
	var problems []error
	if w.SpecVersion != SpecVersion {
		problems = append(problems, fmt.Errorf(`"specversion" is %q, want %q`, truncate(w.SpecVersion), SpecVersion))
	}
	idText := w.idText
	if idText == nil {
		idText = []byte(w.ID)
	}
	id, err := parseULID(idText)
	if err != nil {
		problems = append(problems, fmt.Errorf(`"id" %q is not a ULID: %w`, truncate(string(idText)), err))
	}
	e.ID = id
	if !inRFC3339Range(w.Time) {
		problems = append(problems, fmt.Errorf(`"time" %s is outside the years 0000-9999 once converted to UTC`, w.Time.Format(time.RFC3339)))
	}
	if w.Type == "" {
		problems = append(problems, errors.New(`"type" is missing`))
	}
	if w.Subject == "" {
		problems = append(problems, errors.New(`"subject" (the aggregate id) is missing`))
	}
	if !w.hasVersion {
		problems = append(problems, errors.New(`"aggregateversion" is missing`))
	} else if w.version < 0 {
		problems = append(problems, fmt.Errorf(`"aggregateversion" %d is negative`, w.version))
	} else {
		e.Version = w.version
	}
	if e.SchemaVersion == 0 {
		e.SchemaVersion = 1
	}
	if e.SchemaVersion < 0 {
		problems = append(problems, fmt.Errorf(`"schemaversion" %d is negative`, e.SchemaVersion))
	}
	if len(problems) > 0 {
		return e, nil, &DecodeError{What: "event", Type: truncate(w.Type), Err: errors.Join(problems...)}
	}
	return e, w.Data, nil
}

// ResultStatus is the outcome of one command.
type ResultStatus string

// The four outcomes of a command.
const (
	// StatusAccepted: the command was decided and its events appended (zero
	// or more).
	StatusAccepted ResultStatus = "accepted"
	// StatusRejected: the aggregate refused it (business rule, invariant,
	// concurrency conflict). Code says which.
	StatusRejected ResultStatus = "rejected"
	// StatusDuplicate: the command id was processed before; nothing happened.
	StatusDuplicate ResultStatus = "duplicate"
	// StatusInvalid: the command could not be understood (malformed, unknown
	// type, wrong key, too large); it was also sent to the dead-letter topic.
	StatusInvalid ResultStatus = "invalid"
)

// Result is the answer to one command, keyed by command id on the results
// topic.
type Result struct {
	CommandID     string       `json:"command_id"`
	CommandType   string       `json:"command_type,omitempty"`
	AggregateType string       `json:"aggregate_type,omitempty"`
	AggregateID   string       `json:"aggregate_id,omitempty"`
	Status        ResultStatus `json:"status"`
	// Version is the aggregate's version after the command (-1: no events
	// yet). For a rejected command it is the unchanged current version.
	Version  int64    `json:"version"`
	EventIDs []string `json:"event_ids,omitempty"`
	// Code is a stable machine-readable reason for rejected and invalid
	// results: a handler's rejection code, or one of the Code* constants.
	Code          string    `json:"code,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	Time          time.Time `json:"time"`
}

// AppendJSON appends the result's JSON document to b: what json.Marshal
// writes, without reflection.
func (r *Result) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"command_id":`...)
	b = appendJSONString(b, r.CommandID)
	for _, f := range [...]struct{ prefix, v string }{{`,"command_type":`, r.CommandType}, {`,"aggregate_type":`, r.AggregateType}, {`,"aggregate_id":`, r.AggregateID}} {
		if f.v != "" {
			b = append(b, f.prefix...)
			b = appendJSONString(b, f.v)
		}
	}
	b = append(b, `,"status":`...)
	b = appendJSONString(b, string(r.Status))
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, r.Version, 10)
	if len(r.EventIDs) > 0 {
		b = append(b, `,"event_ids":[`...)
		for i, id := range r.EventIDs {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, id)
		}
		b = append(b, ']')
	}
	for _, f := range [...]struct{ prefix, v string }{{`,"code":`, r.Code}, {`,"reason":`, r.Reason}, {`,"correlation_id":`, r.CorrelationID}} {
		if f.v != "" {
			b = append(b, f.prefix...)
			b = appendJSONString(b, f.v)
		}
	}
	b = append(b, `,"time":"`...)
	b, err := r.Time.AppendText(b)
	if err != nil {
		return nil, fmt.Errorf("json: error calling MarshalJSON for type time.Time: Time.MarshalJSON: %w", err)
	}
	return append(b, `"}`...), nil
}

// Result codes set by the framework (handlers choose their own codes).
const (
	CodeConcurrencyConflict = "concurrency_conflict"
	CodeInvariantViolated   = "invariant_violated"
	CodeHandlerPanic        = "handler_panic"
	CodeUnencodable         = "unencodable"
	CodeMalformed           = "malformed"
	CodeUnknownCommand      = "unknown_command"
	CodeKeyMismatch         = "key_mismatch"
	CodeTooLarge            = "too_large"
)

// ResultFor classifies the outcome of Root.Execute into a Result: the
// accepted events, or the error's status, code and reason.
func ResultFor(cmd *Command, aggregateType string, version int64, events []Event, err error) Result {
	var id string
	if len(events) > 0 && sameULID(events[0].CausationID, cmd.ID) {
		id = events[0].CausationID // rendered once, by Execute
	} else {
		id = cmd.ID.String()
	}
	r := Result{CommandID: id, CommandType: cmd.Type, AggregateType: aggregateType,
		AggregateID: cmd.AggregateID, Version: version, CorrelationID: cmd.Metadata.CorrelationID}
	if r.CorrelationID == "" {
		r.CorrelationID = id // Correlation(), without a second String
	}
	if err == nil {
		r.Status = StatusAccepted
		switch len(events) {
		case 0:
		case 1:
			r.EventIDs = oneEventID(events[0].ID)
		default:
			r.EventIDs = make([]string, len(events))
			for i := range events {
				r.EventIDs[i] = events[i].ID.String()
			}
		}
		if len(events) > 0 {
			r.Version = events[len(events)-1].Version
		}
		return r
	}
	classify(&r, err)
	return r
}

// oneEventID returns []string{id.String()} from one allocation.
func oneEventID(id ulid.ULID) []string {
	one := &struct {
		ids  [1]string
		text [ulid.EncodedSize]byte
	}{}
	_ = id.MarshalTextTo(one.text[:])                       // cannot fail: the buffer has the right size
	one.ids[0] = unsafe.String(&one.text[0], len(one.text)) // never written again
	return one.ids[:]
}

// sameULID reports whether s is id's string, without rendering one.
func sameULID(s string, id ulid.ULID) bool {
	if len(s) != ulid.EncodedSize {
		return false
	}
	var text [ulid.EncodedSize]byte
	_ = id.MarshalTextTo(text[:]) // cannot fail: the buffer has the right size
	return string(text[:]) == s
}

// classify sets the status, code and reason of a failed command's result.
func classify(r *Result, err error) {
	var rej *Rejection
	var inv *InvariantError
	switch {
	case errors.Is(err, ErrDuplicateCommand):
		r.Status = StatusDuplicate
	case errors.As(err, &rej):
		r.Status, r.Code, r.Reason = StatusRejected, rej.Code, rej.Reason
	case errors.As(err, &inv):
		r.Status, r.Code, r.Reason = StatusRejected, CodeInvariantViolated, inv.Error()
	case errors.Is(err, ErrConcurrencyConflict):
		r.Status, r.Code, r.Reason = StatusRejected, CodeConcurrencyConflict, err.Error()
	case errors.Is(err, ErrHandlerPanic):
		r.Status, r.Code, r.Reason = StatusRejected, CodeHandlerPanic, err.Error()
	case errors.Is(err, ErrUnencodable):
		r.Status, r.Code, r.Reason = StatusRejected, CodeUnencodable, err.Error()
	case errors.Is(err, ErrUnknownCommandType):
		r.Status, r.Code, r.Reason = StatusInvalid, CodeUnknownCommand, err.Error()
	case errors.Is(err, ErrWrongAggregate):
		r.Status, r.Code, r.Reason = StatusInvalid, CodeKeyMismatch, err.Error()
	default:
		r.Status, r.Code, r.Reason = StatusInvalid, CodeMalformed, err.Error()
	}
}

// truncate shortens s for an error message, cutting at a rune boundary.
func truncate(s string) string {
	if len(s) <= 64 {
		return s
	}
	n := 64
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
