package aggregates

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// Kind is the type-erased view of a Definition that infrastructure (the
// processor, the client, the command-line tools) works with, whatever the
// aggregate's state type. *Definition[S] implements it.
type Kind interface {
	// Name returns the aggregate type name, e.g. "order".
	Name() string
	// StateStamp identifies the state's shape for snapshots.
	StateStamp() string
	// NewAggregate returns a new aggregate (version -1).
	NewAggregate(id string) Aggregate
	// DecodeEvent decodes and upcasts one event document.
	DecodeEvent(b []byte) (Event, error)
	// DecodeEventForReplay decodes one stored event for Apply, filling
	// only what Apply reads; see Definition.DecodeEventForReplay.
	DecodeEventForReplay(b []byte, subject func([]byte) string) (Event, error)
	// DecodeCommandData decodes a command's payload into its Go type.
	DecodeCommandData(cmd *Command) (any, error)
	// NewCommand builds a command envelope for a registered payload.
	NewCommand(aggregateID string, payload any, md Metadata) (Command, error)
	// EventTypes and CommandTypes list the registered wire names.
	EventTypes() []string
	CommandTypes() []string
}

// Aggregate is the type-erased view of a *Root[S]. Not safe for concurrent
// use.
type Aggregate interface {
	ID() string
	Type() string
	Version() int64
	// Execute decides a command; see Root.Execute.
	Execute(cmd *Command, now time.Time) ([]Event, error)
	// ExecuteEncoded decides a command and encodes its events and the new
	// state before changing anything; see Root.ExecuteEncoded.
	ExecuteEncoded(cmd *Command, now time.Time) (Decision, error)
	// ExecuteAppend is ExecuteEncoded appending the encodings to buf; see
	// Root.ExecuteAppend.
	ExecuteAppend(cmd *Command, now time.Time, buf []byte) (Decision, []byte, error)
	// Apply replays one stored event; see Root.Apply.
	Apply(e *Event) error
	Changes() []Event
	ClearChanges()
	StateAny() any
	MarshalState() ([]byte, error)
	MarshalSnapshot() ([]byte, error)
	UnmarshalSnapshot(b []byte) error
}

// NewAggregate returns New(id) as an Aggregate.
func (d *Definition[S]) NewAggregate(id string) Aggregate { return d.New(id) }

var (
	_ Kind      = (*Definition[struct{}])(nil)
	_ Aggregate = (*Root[struct{}])(nil)
)

// Until selects the prefix of a history to replay: it returns false for the
// first event that must not be applied.
type Until func(e *Event) bool

// UpToVersion keeps the events of versions 0..v.
func UpToVersion(v int64) Until { return func(e *Event) bool { return e.Version <= v } }

// UpToTime keeps the events recorded at or before t.
func UpToTime(t time.Time) Until { return func(e *Event) bool { return !e.Time.After(t) } }

// Rebuild replays history into a into the state it had at the point until
// selects (time travel). It stops at the first event until rejects.
func Rebuild(a Aggregate, history []Event, until Until) error {
	for i := range history {
		if until != nil && !until(&history[i]) {
			return nil
		}
		if err := a.Apply(&history[i]); err != nil {
			return fmt.Errorf("rebuilding %q at event %d: %w", a.ID(), history[i].Version, err)
		}
	}
	return nil
}

// Registry maps aggregate type names to their Kinds, for code that reads
// events of several types (downstream consumers, tools).
type Registry struct {
	kinds map[string]Kind
}

// NewRegistry returns a registry of kinds; two kinds with one name are an
// error.
func NewRegistry(kinds ...Kind) (*Registry, error) {
	r := &Registry{kinds: make(map[string]Kind, len(kinds))}
	for _, k := range kinds {
		if _, dup := r.kinds[k.Name()]; dup {
			return nil, fmt.Errorf("%w: aggregate type %q registered twice", ErrDefinition, k.Name())
		}
		r.kinds[k.Name()] = k
	}
	return r, nil
}

// Kind returns the kind named name.
func (r *Registry) Kind(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	return k, ok
}

// Names returns the registered aggregate type names.
func (r *Registry) Names() []string { return keys(r.kinds) }

// DecodeEvent decodes an event of any registered aggregate type, chosen by
// the prefix of its type name.
func (r *Registry) DecodeEvent(b []byte) (Event, error) {
	e, _, err := decodeEventEnvelope(b, nil)
	if err != nil {
		return e, err
	}
	name, _, _ := strings.Cut(e.Type, ".")
	k, ok := r.kinds[name]
	if !ok {
		return e, fmt.Errorf("%w: %q belongs to no registered aggregate type", ErrUnknownEventType, truncate(e.Type))
	}
	return k.DecodeEvent(b)
}

// newULID returns a ULID of t's millisecond and 80 random bits from
// math/rand/v2's per-thread generator: unlike ulid.DefaultEntropy it takes
// no lock shared by every partition worker, and the id does not escape
// through an io.Reader. ULIDs of one millisecond are not ordered among
// themselves; nothing relies on that.
func newULID(t time.Time) (ulid.ULID, error) {
	var id ulid.ULID
	if err := id.SetTime(ulid.Timestamp(t)); err != nil {
		return id, fmt.Errorf("generating ULID: %w", err)
	}
	binary.BigEndian.PutUint16(id[6:8], uint16(rand.Uint32()))
	binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	return id, nil
}

// NewID returns a new ULID for a command or event stamped with t.
func NewID(t time.Time) (ulid.ULID, error) { return newULID(t) }

func reflectType(v any) reflect.Type { return reflect.TypeOf(v) }
