package aggregates_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

// Every decoding error must be one of these, whatever the input.
var decodeErrors = []error{aggregates.ErrMalformed, aggregates.ErrUnknownEventType, aggregates.ErrSchemaVersion}

func typed(err error) bool {
	for _, target := range decodeErrors {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.AddLine","aggregate_id":"o-42","expected_version":3,"data":{"product_id":512,"quantity":1,"unit_price":1999},"metadata":{"correlation_id":"c-1","actor":"u-1","timestamp":"2026-11-23T10:00:00Z"}}`))
	f.Add([]byte(`{"id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"CreateOrder","aggregate_id":"o-1","data":{"user_id":"u-1"}}`))
	f.Add([]byte(`{"id":"nope"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	def := order.Definition()
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := aggregates.DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, aggregates.ErrMalformed) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		// A decodable command round-trips and can be handed to an aggregate
		// without a panic or an untyped error.
		out, err := cmd.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := aggregates.DecodeCommand(out)
		if err != nil || back.ID != cmd.ID || back.Type != cmd.Type || back.AggregateID != cmd.AggregateID {
			t.Fatalf("round trip: %+v, %v", back, err)
		}
		_, err = def.New(cmd.AggregateID).Execute(&cmd, time.Unix(0, 0))
		if err != nil && !typed(err) && !errors.Is(err, aggregates.ErrUnknownCommandType) && !errors.Is(err, aggregates.ErrRejected) &&
			!errors.Is(err, aggregates.ErrConcurrencyConflict) && !errors.Is(err, aggregates.ErrInvariantViolated) {
			t.Fatalf("Execute: untyped error %v", err)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","source":"/chronicle/order","subject":"o-42","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","aggregatetype":"order","aggregateversion":1,"schemaversion":1,"causationid":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TA","data":{"product_id":512,"quantity":1,"unit_price":1999}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","aggregateversion":0,"schemaversion":9,"data":{}}`))
	f.Add([]byte(`{"specversion":"1.0","type":"ballot.BallotCast"}`))
	f.Add([]byte(`null`))
	def := order.Definition()
	reg, err := aggregates.NewRegistry(def)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := def.DecodeEvent(b)
		_, rerr := reg.DecodeEvent(b)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("definition and registry disagree: %v vs %v", err, rerr)
		}
		if err != nil {
			if !typed(err) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		out, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		back, err := def.DecodeEvent(out)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if back.ID != e.ID || back.Version != e.Version || back.Subject != e.Subject || !reflect.DeepEqual(back.Data, e.Data) {
			t.Fatalf("round trip changed the event: %+v vs %+v", back, e)
		}
	})
}
