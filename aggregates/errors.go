package aggregates

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns matches one of them with
// errors.Is, so callers never need to compare error text.
var (
	// ErrUnknownEventType is returned when an event type name or Go type is
	// not registered with the aggregate's Definition.
	ErrUnknownEventType = errors.New("unknown event type")
	// ErrUnknownCommandType is returned when a command's type is not
	// registered with the aggregate's Definition.
	ErrUnknownCommandType = errors.New("unknown command type")
	// ErrMalformed is returned when a command or event document, or its data
	// payload, cannot be decoded or lacks a required field. The error is a
	// *DecodeError.
	ErrMalformed = errors.New("malformed input")
	// ErrSchemaVersion is returned when a stored event's schema version is
	// newer than the running code knows, or no upcaster bridges an older
	// version. The error is a *SchemaError.
	ErrSchemaVersion = errors.New("unsupported event schema version")
	// ErrVersionGap is returned when an event replayed into an aggregate does
	// not carry the next version. The error is a *VersionGapError.
	ErrVersionGap = errors.New("event version gap")
	// ErrConcurrencyConflict is returned when a command's expected_version
	// does not match the aggregate's version. The error is a
	// *ConcurrencyError.
	ErrConcurrencyConflict = errors.New("concurrency conflict")
	// ErrDuplicateCommand is returned when a command id was already processed
	// by the aggregate; the command produced no events. The error is a
	// *DuplicateError.
	ErrDuplicateCommand = errors.New("duplicate command")
	// ErrInvariantViolated is returned when applying a command's events would
	// leave the aggregate in an invalid state. The error is an
	// *InvariantError; none of the command's events were kept.
	ErrInvariantViolated = errors.New("invariant violated")
	// ErrRejected is returned when a command handler refuses a command for a
	// business reason. The error is a *Rejection.
	ErrRejected = errors.New("command rejected")
	// ErrHandlerPanic is returned when user code (a command handler, apply
	// function or invariant) panicked. The aggregate is left unchanged.
	ErrHandlerPanic = errors.New("aggregate code panicked")
	// ErrUnencodable is returned by ExecuteEncoded when an event the
	// command produced, or the state it leads to, cannot be encoded (a NaN
	// float, a value encoding/json refuses). The aggregate is left
	// unchanged. The error is an *EncodeError.
	ErrUnencodable = errors.New("command produced data that cannot be encoded")
	// ErrWrongAggregate is returned when a command or event addressed to one
	// aggregate is given to another.
	ErrWrongAggregate = errors.New("addressed to another aggregate")
	// ErrDefinition is returned by Define when the registrations are
	// inconsistent (duplicate names, empty names, missing upcasters).
	ErrDefinition = errors.New("invalid aggregate definition")
)

// Rejection is a command refused by its handler for a business reason. Code is
// a stable machine-readable word (e.g. "order_not_new"); Reason is for people.
type Rejection struct {
	Code   string
	Reason string
}

// Reject returns a *Rejection with the given code and a formatted reason.
// Command handlers return it to refuse a command.
func Reject(code, format string, args ...any) error {
	return &Rejection{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// Error describes the rejection for logs and result reasons.
func (r *Rejection) Error() string { return "command rejected: " + r.Code + ": " + r.Reason }

// Is reports whether target is ErrRejected.
func (r *Rejection) Is(target error) bool { return target == ErrRejected }

// InvariantError says which event broke which invariant.
type InvariantError struct {
	EventType string // wire name of the event after which the check failed
	Version   int64  // the version that event would have had
	Err       error  // what the invariant check returned
}

// Error describes the broken invariant for logs and result reasons.
func (e *InvariantError) Error() string {
	return fmt.Sprintf("invariant violated after %s (version %d): %v", e.EventType, e.Version, e.Err)
}

// Unwrap returns the invariant check's own error.
func (e *InvariantError) Unwrap() error { return e.Err }

// Is reports whether target is ErrInvariantViolated.
func (e *InvariantError) Is(target error) bool { return target == ErrInvariantViolated }

// ConcurrencyError is an expected_version that did not match.
type ConcurrencyError struct {
	AggregateID string
	Expected    int64
	Actual      int64
}

// Error describes the conflict for logs and result reasons.
func (e *ConcurrencyError) Error() string {
	return fmt.Sprintf("concurrency conflict on %q: command expected version %d, aggregate is at version %d; reload the aggregate and retry", e.AggregateID, e.Expected, e.Actual)
}

// Is reports whether target is ErrConcurrencyConflict.
func (e *ConcurrencyError) Is(target error) bool { return target == ErrConcurrencyConflict }

// DuplicateError is a command id the aggregate has already processed.
type DuplicateError struct {
	AggregateID string
	CommandID   string
	Version     int64 // the aggregate's current version
}

// Error describes the duplicate for logs and result reasons.
func (e *DuplicateError) Error() string {
	return fmt.Sprintf("command %s was already processed by %q (now at version %d); it produced no new events", e.CommandID, e.AggregateID, e.Version)
}

// Is reports whether target is ErrDuplicateCommand.
func (e *DuplicateError) Is(target error) bool { return target == ErrDuplicateCommand }

// DecodeError is input that could not be decoded.
type DecodeError struct {
	What string // "command", "event", "command data", "event data", "snapshot"
	Type string // the type name, when it could be read
	Err  error
}

// Error describes the decoding failure for logs and result reasons.
func (e *DecodeError) Error() string {
	if e.Type != "" {
		return fmt.Sprintf("decoding %s %s: %v", e.What, e.Type, e.Err)
	}
	return fmt.Sprintf("decoding %s: %v", e.What, e.Err)
}

// Unwrap returns the underlying cause.
func (e *DecodeError) Unwrap() error { return e.Err }

// Is reports whether target is ErrMalformed.
func (e *DecodeError) Is(target error) bool { return target == ErrMalformed }

// SchemaError is an event payload whose schema version cannot be read.
type SchemaError struct {
	Type    string
	Have    int // the stored payload's schema version
	Current int // the version the running code reads
	Reason  string
}

// Error describes the unreadable schema version for logs and result reasons.
func (e *SchemaError) Error() string {
	return fmt.Sprintf("event %s has schema version %d, code reads version %d: %s", e.Type, e.Have, e.Current, e.Reason)
}

// Is reports whether target is ErrSchemaVersion.
func (e *SchemaError) Is(target error) bool { return target == ErrSchemaVersion }

// VersionGapError is an event that does not follow the aggregate's version.
type VersionGapError struct {
	AggregateID string
	Want        int64
	Got         int64
}

// Error describes the gap for logs and result reasons.
func (e *VersionGapError) Error() string {
	return fmt.Sprintf("aggregate %q expected event version %d, got %d: history has a gap or a duplicate", e.AggregateID, e.Want, e.Got)
}

// Is reports whether target is ErrVersionGap.
func (e *VersionGapError) Is(target error) bool { return target == ErrVersionGap }

// EncodeError is an event or state a command produced that cannot be
// encoded.
type EncodeError struct {
	What string // "event" or "state"
	Type string // the event type, for events
	Err  error
}

// Error describes the failure for logs and result reasons.
func (e *EncodeError) Error() string {
	if e.Type != "" {
		return fmt.Sprintf("the command produced a %s %s that cannot be encoded: %v; fix the handler or the event's data", e.What, e.Type, e.Err)
	}
	return fmt.Sprintf("the command produced a %s that cannot be encoded: %v; fix the handler or the apply functions", e.What, e.Err)
}

// Unwrap returns the encoding error.
func (e *EncodeError) Unwrap() error { return e.Err }

// Is reports whether target is ErrUnencodable.
func (e *EncodeError) Is(target error) bool { return target == ErrUnencodable }

// PanicError is user code that panicked while deciding or applying.
type PanicError struct {
	Where string // "command handler", "apply", "invariant"
	Value any
}

// Error describes the panic for logs and result reasons.
func (e *PanicError) Error() string { return fmt.Sprintf("%s panicked: %v", e.Where, e.Value) }

// Is reports whether target is ErrHandlerPanic.
func (e *PanicError) Is(target error) bool { return target == ErrHandlerPanic }
