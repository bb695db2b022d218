package aggregates_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/ballot"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

// Commands and events come from Kafka topics, so from anyone who can write to
// them. The decoders must never panic, must classify every failure with a
// sentinel error, and whatever they accept must survive the wire unchanged.
// Seed inputs beyond the f.Add ones live in testdata/fuzz/<FuzzName>/.

// decodeErrors are the sentinels a decoding failure may match.
var decodeErrors = []error{aggregates.ErrMalformed, aggregates.ErrUnknownEventType, aggregates.ErrSchemaVersion}

// executeErrors are the sentinels Execute may fail with on decodable input.
var executeErrors = []error{
	aggregates.ErrMalformed, aggregates.ErrUnknownCommandType, aggregates.ErrRejected,
	aggregates.ErrConcurrencyConflict, aggregates.ErrInvariantViolated,
}

func matchesOne(err error, targets []error) bool {
	for _, target := range targets {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.AddLine","aggregate_id":"o-42","expected_version":3,"data":{"product_id":512,"quantity":1,"unit_price":1999},"metadata":{"correlation_id":"c-1","actor":"u-1","timestamp":"2026-11-23T10:00:00Z"}}`))
	f.Add([]byte(`{"id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"CreateOrder","aggregate_id":"o-1","data":{"user_id":"u-1"}}`))
	f.Add([]byte(`{"id":"01jdq6w3z8v0q3x4m0s1y2k5tb","type":"ChangeStatus","aggregate_id":"o-1","expected_version":-1,"data":{"status":"lost"}}`))
	f.Add([]byte(`{"id":"nope"}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))
	def := order.Definition()
	f.Fuzz(func(t *testing.T, b []byte) {
		cmd, err := aggregates.DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, aggregates.ErrMalformed) {
				t.Fatalf("error matches no sentinel: %v", err)
			}
			return
		}
		// What was accepted re-encodes and decodes to the same command, and
		// re-encoding that gives the same bytes.
		out, err := cmd.Encode()
		if err != nil {
			t.Fatalf("encoding an accepted command: %v", err)
		}
		back, err := aggregates.DecodeCommand(out)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if !sameCommand(back, cmd) {
			t.Fatalf("round trip changed the command:\n got %+v\nwant %+v", back, cmd)
		}
		again, err := back.Encode()
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("re-encoding is not stable: %s vs %s (%v)", again, out, err)
		}
		// It can be handed to an aggregate without a panic or an error
		// that matches no sentinel.
		_, err = def.New(cmd.AggregateID).Execute(&cmd, time.Unix(0, 0))
		if err != nil && !matchesOne(err, executeErrors) {
			t.Fatalf("Execute: error matches no sentinel: %v", err)
		}
	})
}

func sameCommand(a, b aggregates.Command) bool {
	if a.ID != b.ID || a.Type != b.Type || a.AggregateID != b.AggregateID ||
		(a.ExpectedVersion == nil) != (b.ExpectedVersion == nil) ||
		a.ExpectedVersion != nil && *a.ExpectedVersion != *b.ExpectedVersion ||
		a.Metadata.Actor != b.Metadata.Actor || a.Metadata.CorrelationID != b.Metadata.CorrelationID ||
		!a.Metadata.Timestamp.Equal(b.Metadata.Timestamp) {
		return false
	}
	if len(a.Data) == 0 || len(b.Data) == 0 {
		return len(a.Data) == len(b.Data)
	}
	// Data is compared as JSON values: re-encoding may escape characters
	// (e.g. & as \u0026) differently.
	va, erra := jsonValue(a.Data)
	vb, errb := jsonValue(b.Data)
	return erra == nil && errb == nil && reflect.DeepEqual(va, vb)
}

func jsonValue(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","source":"/chronicle/order","subject":"o-42","time":"2026-11-23T10:00:00Z","datacontenttype":"application/json","aggregatetype":"order","aggregateversion":1,"schemaversion":1,"causationid":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TA","data":{"product_id":512,"quantity":1,"unit_price":1999}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.OrderCreated","subject":"o","aggregateversion":0,"schemaversion":9,"data":{}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"ballot.BallotCandidateRated","subject":"b","time":"2026-11-23T10:00:00+01:00","aggregateversion":1,"data":{"competition_id":"c","candidate_id":"x","rating":4}}`))
	f.Add([]byte(`{"specversion":"1.0","type":"ballot.BallotCast"}`))
	f.Add([]byte(`null`))
	def := order.Definition()
	reg, err := aggregates.NewRegistry(def, ballot.Definition())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := def.DecodeEvent(b)
		checkDecoded(t, "order.Definition", e, err, def.DecodeEvent)
		re, rerr := reg.DecodeEvent(b)
		checkDecoded(t, "Registry", re, rerr, reg.DecodeEvent)
		// The registry reads an order event exactly as the order's own
		// definition does.
		if err == nil && (rerr != nil || !sameEvent(re, e)) {
			t.Fatalf("registry read %+v, %v; definition read %+v", re, rerr, e)
		}
		if err == nil {
			// Replaying an accepted event never panics; a history that does
			// not make sense is an invariant violation.
			e.Version = 0
			if aerr := def.New(e.Subject).Apply(&e); aerr != nil && !errors.Is(aerr, aggregates.ErrInvariantViolated) {
				t.Fatalf("Apply: %v", aerr)
			}
		}
	})
}

// checkDecoded asserts the fuzz properties of one decoding: a failure matches
// a sentinel; a success re-encodes, decodes to the same event, and re-encodes
// to the same bytes.
func checkDecoded(t *testing.T, who string, e aggregates.Event, err error, decode func([]byte) (aggregates.Event, error)) {
	t.Helper()
	if err != nil {
		if !matchesOne(err, decodeErrors) {
			t.Fatalf("%s: error matches no sentinel: %v", who, err)
		}
		return
	}
	out, err := e.Encode()
	if err != nil {
		t.Fatalf("%s: encoding an accepted event: %v", who, err)
	}
	back, err := decode(out)
	if err != nil {
		t.Fatalf("%s: re-decoding %s: %v", who, out, err)
	}
	if !sameEvent(back, e) {
		t.Fatalf("%s: round trip changed the event:\n got %+v\nwant %+v", who, back, e)
	}
	again, err := back.Encode()
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("%s: re-encoding is not stable: %s vs %s (%v)", who, again, out, err)
	}
}

// sameEvent compares events field by field; times are compared as instants
// (an offset is written back as UTC).
func sameEvent(a, b aggregates.Event) bool {
	if !a.Time.Equal(b.Time) {
		return false
	}
	a.Time, b.Time = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}
