package aggregates_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

// replayFields is what DecodeEventForReplay fills: what Apply reads.
func replayFields(e aggregates.Event) aggregates.Event {
	return aggregates.Event{Type: e.Type, Subject: e.Subject, Version: e.Version, SchemaVersion: e.SchemaVersion, CausationID: e.CausationID, Data: e.Data}
}

// FuzzDecodeEventForReplay holds the replay decoder to the full one: it
// accepts exactly what DecodeEvent accepts, fills what it fills alike, and
// fails with the same error.
func FuzzDecodeEventForReplay(f *testing.F) {
	for _, s := range []string{
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","source":"/chronicle/order","subject":"o-42","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","aggregatetype":"order","aggregateversion":1,"schemaversion":1,"causationid":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TA","data":{"product_id":512,"quantity":1,"unit_price":1999}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","time":"2024-02-29T23:59:59.123456789Z","aggregateversion":0,"data":{"user_id":"u"}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","time":"2023-02-29T00:00:00Z","aggregateversion":0,"data":{}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","time":"0000-01-01T24:00:60.1234567890Z","aggregateversion":0,"data":{}}`,
		`{"specversion":"1.0","id":"81JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","aggregateversion":0,"schemaversion":9,"data":{}}`,
		`{"specversion":"1.0","id":"01jdq6w3z8v0q3x4m0s1y2k5tb","type":"order.LineRemoved","subject":"o","aggregateversion":3,"schemaversion":null,"causationid":null,"data":null}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","subject":"","aggregateversion":-1,"data":{"product_id":"x"}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","source":"/chronicle/order","subject":"o-42","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","aggregatetype":"order","aggregateversion":1,"schemaversion":1,"data":}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","source":"/chronicle/order","subject":"o-42","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","aggregatetype":"order","aggregateversion":1,"schemaversion":1,"data":{"product_id":1},"x":{}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","source":"/chronicle/order","subject":"o-42","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","aggregatetype":"order","aggregateversion":1,"schemaversion":1,"data":{"product_id":1}}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"tally.Added","source":"/chronicle/tally","subject":"t","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","aggregatetype":"tally","aggregateversion":0,"schemaversion":1,"data":{"N":1]}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"tally.Added","source":"/chronicle/tally","subject":"t","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","aggregatetype":"tally","aggregateversion":0,"schemaversion":2,"data":{"Amount":3}}`,
		`{"specversion":"1.0","type":"order.OrderCreated"}`,
		`{}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	// An upcaster that ignores its input: the replay decoder must not
	// hand it data DecodeEvent refuses.
	tally, err := aggregates.Define("tally",
		aggregates.When("Added", func(s *tally, e addedV3) { s.Count += e.Amount },
			aggregates.SchemaVersion(2),
			aggregates.Upcast(1, func(json.RawMessage) (json.RawMessage, error) { return json.RawMessage(`{"Amount":1}`), nil })),
		aggregates.Handle("Open", func(s tally, _ open) ([]any, error) { return nil, nil }))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sameReplay(t, order.Definition(), b)
		sameReplay(t, tally, b)
	})
}

func sameReplay(t *testing.T, def aggregates.Kind, b []byte) {
	{
		want, werr := def.DecodeEvent(b)
		got, gerr := def.DecodeEventForReplay(b, func(s []byte) string { return string(s) })
		switch {
		case (werr == nil) != (gerr == nil):
			t.Fatalf("DecodeEvent: %v; DecodeEventForReplay: %v\n%q", werr, gerr, b)
		case werr != nil:
			if werr.Error() != gerr.Error() {
				t.Fatalf("errors differ:\n DecodeEvent %v\n for replay  %v", werr, gerr)
			}
		case !reflect.DeepEqual(replayFields(got), replayFields(want)):
			t.Fatalf("DecodeEventForReplay read\n%+v\nDecodeEvent read\n%+v\nfrom %q", replayFields(got), replayFields(want), b)
		}
	}
}

// The events Chronicle writes take the replay decoder's own path: the
// subject comes from the lookup, and nothing replay does not use is
// filled (the fallback, DecodeEvent, fills the id and the time).
func TestReplayDecodesEncodedEvents(t *testing.T) {
	def := order.Definition()
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	cause := ulid.MustNew(ulid.Timestamp(now), nil).String()
	const known = "order-0000042"
	for i, e := range []aggregates.Event{
		{Type: "order.OrderCreated", Source: "/chronicle/order", Subject: known, Time: now, AggregateType: "order", Version: 0,
			CausationID: cause, CorrelationID: cause, Data: order.OrderCreated{UserID: "u-1"}},
		{Type: "order.LineAdded", Source: "/chronicle/order", Subject: known, Time: now.Add(1234567 * time.Nanosecond), AggregateType: "order", Version: 7,
			SchemaVersion: 1, CausationID: cause, Actor: "ünï", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
			Data: order.LineAdded{ProductID: 5, Quantity: 2, UnitPrice: 1999}},
		{Type: "order.LineRemoved", Source: "/chronicle/order", Subject: known, Time: time.Date(2024, 2, 29, 23, 59, 59, 999999999, time.UTC),
			AggregateType: "order", Version: 8, Data: order.LineRemoved{ProductID: 5}},
	} {
		e.ID = ulid.MustNew(ulid.Timestamp(now), nil)
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		looked := 0
		got, err := def.DecodeEventForReplay(b, func(s []byte) string {
			looked++
			if string(s) == known {
				return known
			}
			return string(s)
		})
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if looked != 1 || got.ID != (ulid.ULID{}) || !got.Time.IsZero() {
			t.Fatalf("event %d took DecodeEvent, not the replay path (lookups %d, id %v, time %v): %s", i, looked, got.ID, got.Time, b)
		}
		want := e
		want.SchemaVersion = 1
		if !reflect.DeepEqual(replayFields(got), replayFields(want)) {
			t.Fatalf("event %d: read %+v, want %+v", i, replayFields(got), replayFields(want))
		}
	}
}

// A document the replay decoder is unsure of goes to DecodeEvent: its
// error, with its sentinel, is the answer.
func TestReplayDecodeErrorsAreDecodeEvents(t *testing.T) {
	def := order.Definition()
	for _, doc := range []string{
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.Nope","subject":"o","aggregateversion":0,"data":{}}`,
		`{"specversion":"1.0","id":"not-a-ulid","type":"order.OrderCreated","subject":"o","aggregateversion":0,"data":{}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","aggregateversion":0,"schemaversion":2,"data":{}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","subject":"o","aggregateversion":0,"data":{"quantity":"two"}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","time":"2023-02-29T00:00:00Z","aggregateversion":0,"data":{}}`,
		`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","data":{}}`,
		`not json`,
	} {
		_, want := def.DecodeEvent([]byte(doc))
		_, got := def.DecodeEventForReplay([]byte(doc), nil)
		if want == nil || got == nil || got.Error() != want.Error() || !matchesOne(got, decodeErrors) {
			t.Fatalf("%s:\n DecodeEvent %v\n for replay  %v", doc, want, got)
		}
		if errors.Is(want, aggregates.ErrUnknownEventType) != errors.Is(got, aggregates.ErrUnknownEventType) {
			t.Fatalf("%s: sentinels differ", doc)
		}
	}
}
