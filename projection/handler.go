package projection

import (
	"context"
	"fmt"
	"reflect"

	"github.com/chronicle-es/chronicle/aggregates"
)

// Handler applies one event type to the read model; On makes one.
type Handler[Tx any] struct {
	typ reflect.Type
	fn  func(ctx context.Context, tx Tx, e aggregates.Event) error
}

// On returns the handler of events whose payload is an E (a Go type
// registered with aggregates.When, e.g. order.LineAdded). fn gets the
// database transaction of the batch, the event's envelope (aggregate id,
// version, time, ...) and its payload, decoded and upcast to the current
// schema version. fn must do all its writes through tx and must not commit
// or roll it back; an error stops the projection and rolls the batch back.
//
//	projection.On(func(ctx context.Context, tx pgx.Tx, e aggregates.Event, d order.LineAdded) error {
//		_, err := tx.Exec(ctx, `UPDATE order_summaries SET total = total + $2 WHERE order_id = $1`, e.Subject, d.Quantity*d.UnitPrice)
//		return err
//	})
func On[Tx, E any](fn func(ctx context.Context, tx Tx, e aggregates.Event, data E) error) Handler[Tx] {
	return Handler[Tx]{typ: reflect.TypeFor[E](), fn: func(ctx context.Context, tx Tx, e aggregates.Event) error {
		data, ok := e.Data.(E)
		if !ok {
			return fmt.Errorf("event %s carries a %T, not a %v", e.Type, e.Data, reflect.TypeFor[E]())
		}
		return fn(ctx, tx, e, data)
	}}
}

// eventTyper is what *aggregates.Definition offers to check a handler's
// payload type.
type eventTyper interface {
	EventType(payload any) (string, bool)
}

// knownEvent reports whether some aggregate type of dec registers t as an
// event payload, and whether dec can tell at all.
func knownEvent(dec any, t reflect.Type) (known, checkable bool) {
	zero := reflect.Zero(t).Interface()
	var kinds []any
	switch d := dec.(type) {
	case *aggregates.Registry:
		for _, n := range d.Names() {
			k, _ := d.Kind(n)
			kinds = append(kinds, k)
		}
	default:
		kinds = []any{dec}
	}
	for _, k := range kinds {
		et, ok := k.(eventTyper)
		if !ok {
			return false, false
		}
		if _, ok := et.EventType(zero); ok {
			return true, true
		}
	}
	return false, true
}
