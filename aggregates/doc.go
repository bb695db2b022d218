// Package aggregates is Chronicle's event-sourcing core: the model every
// domain is written in.
//
// # Aggregates
//
// An aggregate is a consistency boundary rebuilt only from its events. Its
// state is a plain Go struct S. A Definition[S] names the aggregate type
// ("order") and registers, per event type, one small apply function (the
// "when" of the seeds), per command type one handler that decides, and an
// invariant check ("ensure valid state") that runs after every applied event:
//
//	def, err := aggregates.Define("order",
//		aggregates.When("OrderCreated", func(s *State, e OrderCreated) { s.UserID = e.UserID }),
//		aggregates.Handle("CreateOrder", func(s State, c CreateOrder) ([]any, error) {
//			return []any{OrderCreated{UserID: c.UserID}}, nil
//		}),
//		aggregates.Invariant(func(s *State) error { return nil }),
//	)
//
// A new aggregate has version -1; each applied event adds one, so the first
// event is version 0. Handlers never mutate state: they return events, which
// the Root applies to a copy, checks, and only then keeps as uncommitted
// changes. A command whose events would break an invariant is rejected and
// none of its events are kept.
//
// # Wire formats
//
// Commands travel as the Command envelope (JSON), events as CloudEvents 1.0
// structured JSON documents (Event), and every command gets one Result. The
// formats are documented with examples in docs/formats.md.
//
// # Idempotency and concurrency
//
// A Root remembers the ids of the commands that produced its most recent
// events (a bounded window rebuilt from the events' causation ids on replay),
// so a repeated command is reported as ErrDuplicateCommand and produces no
// events. A command whose expected_version does not match the aggregate's
// version fails with ErrConcurrencyConflict.
//
// # Schema evolution
//
// Each event type has a schema version. Upcasters registered with Upcast turn
// stored payloads of older versions into the current shape when they are read.
package aggregates
