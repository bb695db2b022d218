package aggregates

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The fast envelope reader must read exactly what encoding/json reads, or
// give up. This fuzzer checks the first half on any input; the test below
// checks it does not give up on the documents Encode writes.
func FuzzEnvelopeReader(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.LineAdded","source":"/chronicle/order","subject":"o-42","time":"2026-11-23T10:00:00.5+01:00","datacontenttype":"application/json","aggregatetype":"order","aggregateversion":1,"schemaversion":1,"causationid":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TA","correlationid":"c","actor":"ü","data":{"product_id":512,"quantity":1,"unit_price":1999}}`))
	f.Add([]byte(` { "id" : null , "aggregateversion" : -0 , "data" : [ 1 , "a\"b" , { } ] } `))
	f.Add([]byte(`{"aggregateversion":01,"data":{}}`))
	f.Add([]byte(`{"aggregateversion":1e2}`))
	f.Add([]byte(`{"ID":"x","Data":1}`))
	f.Add([]byte(`{"type":"a","type":"b"}`))
	f.Add([]byte(`{"data":{"a":1}}x`))
	f.Add([]byte(`{"time":"2026-11-23T10:00:00Z","schemaversion":null,"data":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast eventWire
		if !readEnvelope(b, &fast, map[string]string{"order.LineAdded": "order.LineAdded"}) {
			return
		}
		var slow eventWire
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("fast reader accepted what encoding/json refuses (%v):\n%q", err, b)
		}
		if !sameWire(fast, slow) {
			t.Fatalf("fast reader read\n%+v\nencoding/json read\n%+v\nfrom %q", fast, slow, b)
		}
	})
}

func sameWire(a, b eventWire) bool {
	// The fast reader leaves the id as text and the version in a field
	// of its own.
	if a.idText != nil {
		a.ID, a.idText = string(a.idText), nil
	}
	if a.hasVersion {
		v := a.version
		a.Version = &v
	}
	a.version, a.hasVersion = 0, false
	if !a.Time.Equal(b.Time) || a.Time.Location().String() != b.Time.Location().String() {
		return false
	}
	_, ao := a.Time.Zone()
	_, bo := b.Time.Zone()
	if ao != bo || (a.Version == nil) != (b.Version == nil) || a.Version != nil && *a.Version != *b.Version {
		return false
	}
	a.Time, b.Time, a.Version, b.Version = time.Time{}, time.Time{}, nil, nil
	return reflect.DeepEqual(a, b)
}

func TestEncodedEventsTakeTheFastReader(t *testing.T) {
	id, _ := NewID(time.Unix(1700000000, 0))
	for _, e := range []Event{
		{ID: id, Type: "order.LineAdded", Source: "/chronicle/order", Subject: "o-42", Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC),
			AggregateType: "order", Version: 3, SchemaVersion: 2, CausationID: id.String(), CorrelationID: "corr", Actor: "ünïcödé", Data: map[string]any{"q": 1, "s": "a\"<b>"}},
		{ID: id, Type: "order.OrderCreated", Subject: "o", Data: nil},
	} {
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var w, slow eventWire
		if !readEnvelope(b, &w, nil) {
			t.Fatalf("fast reader gave up on %s", b)
		}
		if err := json.Unmarshal(b, &slow); err != nil || !sameWire(w, slow) {
			t.Fatalf("fast %+v\nslow %+v (%v)", w, slow, err)
		}
	}
}

// The fast command reader must read exactly what encoding/json reads, or
// give up; and it must not give up on what Command.Encode writes.
func FuzzCommandReader(f *testing.F) {
	f.Add([]byte(`{"id":"01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","type":"order.AddLine","aggregate_id":"o-42","expected_version":3,"data":{"product_id":512,"quantity":1,"unit_price":1999},"metadata":{"correlation_id":"c-1","actor":"u-1","timestamp":"2026-11-23T10:00:00Z","traceparent":"00-x"}}`))
	f.Add([]byte(` { "id" : null , "expected_version" : null , "data" : null , "metadata" : null } `))
	f.Add([]byte(`{"id":"01jdq6w3z8v0q3x4m0s1y2k5tb","data":[1,"a\"b",{}],"metadata":{}}`))
	f.Add([]byte(`{"ID":"x","Type":"t"}`))
	f.Add([]byte(`{"type":"a","type":"b"}`))
	f.Add([]byte(`{"expected_version":1e2}`))
	f.Add([]byte(`{"metadata":{"timestamp":""}}`))
	f.Add([]byte(`{"metadata":{"actor":"a","Actor":"b"}}`))
	f.Add([]byte(`{"data":{"a":1}}x`))
	f.Add([]byte(`{"extra":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast commandWire
		id, ok := readCommand(b, &fast)
		if !ok {
			return
		}
		fast.ID = string(id)
		var slow commandWire
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("fast reader accepted what encoding/json refuses (%v):\n%q", err, b)
		}
		ft, st := fast.Metadata.Timestamp, slow.Metadata.Timestamp
		_, fo := ft.Zone()
		_, so := st.Zone()
		fast.Metadata.Timestamp, slow.Metadata.Timestamp = time.Time{}, time.Time{}
		if !ft.Equal(st) || fo != so || !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast reader read\n%+v\nencoding/json read\n%+v\nfrom %q", fast, slow, b)
		}
	})
}

func TestEncodedCommandsTakeTheFastReader(t *testing.T) {
	id, _ := NewID(time.Unix(1700000000, 0))
	v := int64(-1)
	for _, c := range []Command{
		{ID: id, Type: "order.AddLine", AggregateID: "o-42", ExpectedVersion: &v, Data: json.RawMessage(`{"product_id":1}`),
			Metadata: Metadata{CorrelationID: "c", Actor: "ü", Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600)), TraceParent: "00-a-b-01"}},
		{ID: id, Type: "CreateOrder", AggregateID: "o"},
	} {
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var w commandWire
		if _, ok := readCommand(b, &w); !ok {
			t.Errorf("fast reader gave up on %s", b)
		}
	}
}

// The readers skip payloads with reader.valid, which must judge a value
// exactly as json.Valid does.
func FuzzValid(f *testing.F) {
	for _, s := range []string{`{"a":[1,-0.5e+3,"x\u00e9\n",true,false,null,{}]}`, `01`, `1.`, `-`, `1e`, `"\x01"`, `"\ud800"`, `"\q"`, "\"\xff\"",
		`{"a" 1}`, `{1:2}`, `[1,]`, ` [ ] `, `{"a":1,}`, `"\u12g4"`, `tru`, `nulll`, `[[[[]]]]`, `{"a":{"b":[{"c":"d"}]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := reader{b: b}
		r.space()
		got := r.valid(0) && r.end()
		if want := json.Valid(b); got != want {
			t.Fatalf("valid says %v, json.Valid %v, for %q", got, want, b)
		}
	})
}

func TestValidBoundsNestingAsEncodingJSON(t *testing.T) {
	for _, n := range []int{maxDepth, maxDepth + 1} {
		b := []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
		r := reader{b: b}
		if got, want := r.valid(0) && r.end(), json.Valid(b); got != want {
			t.Errorf("depth %d: valid %v, json.Valid %v", n, got, want)
		}
	}
}

// canonicalTime accepts only times time.Time.UnmarshalJSON reads (with a
// year in 0000-9999), and every time Encode writes.
func TestCanonicalTimeIsUnmarshalJSONs(t *testing.T) {
	accepted := 0
	for _, year := range []string{"0000", "1900", "2000", "2023", "2024", "9999"} {
		for month := 0; month <= 13; month++ {
			for day := 0; day <= 32; day++ {
				for _, clock := range []string{"00:00:00", "23:59:59", "24:00:00", "12:60:00", "12:00:60", "1a:00:00"} {
					for _, frac := range []string{"", ".", ".5", ".123456789", ".1234567890", ".x"} {
						for _, zone := range []string{"Z", "z", "+00:00"} {
							s := fmt.Sprintf("%s-%02d-%02dT%s%s%s", year, month, day, clock, frac, zone)
							if !canonicalTime([]byte(s)) {
								continue
							}
							accepted++
							var tm time.Time
							if err := tm.UnmarshalJSON([]byte(`"` + s + `"`)); err != nil || !inRFC3339Range(tm) {
								t.Fatalf("canonicalTime accepts %s; UnmarshalJSON: %v, year %d", s, err, tm.Year())
							}
						}
					}
				}
			}
		}
	}
	if accepted == 0 {
		t.Fatal("canonicalTime accepted nothing")
	}
	for _, tm := range []time.Time{time.Date(2024, 2, 29, 23, 59, 59, 1, time.UTC), time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(1_700_000_000, 120_000_000).In(time.FixedZone("x", 3600))} {
		b := tm.UTC().AppendFormat(nil, time.RFC3339Nano)
		if !canonicalTime(b) {
			t.Fatalf("canonicalTime refuses %s, as Encode writes it", b)
		}
	}
}

// plain8 finds any special byte at any position of the word.
func TestPlain8(t *testing.T) {
	for c := range 256 {
		for pos := range 8 {
			w := []byte("aZ09 ~!}")
			w[pos] = byte(c)
			got := plain8(binary.LittleEndian.Uint64(w))
			if want := strClass[c] == 0; got != want {
				t.Fatalf("plain8(%q) = %v, want %v", w, got, want)
			}
		}
	}
}

// The documents Encode writes take readReplayLayout, and it reads them as
// the general loop does.
func TestEncodedEventsTakeTheReplayLayout(t *testing.T) {
	id, _ := NewID(time.Unix(1700000000, 0))
	for _, e := range []Event{
		{ID: id, Type: "order.LineAdded", Source: "/chronicle/order", Subject: "o-42", Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC),
			AggregateType: "order", Version: 3, SchemaVersion: 2, CausationID: id.String(), CorrelationID: "corr", Actor: "ünïcödé",
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", Data: map[string]any{"q": 1, "s": "a\"<b>"}},
		{ID: id, Type: "order.OrderCreated", Subject: "o", Data: nil},
		{ID: id, Type: "order.OrderCreated", Subject: "o", Version: 123456789012345678, CorrelationID: "c", Data: []int{1}},
	} {
		b, err := e.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var fast, general replayWire
		if !readReplayLayout(b, &fast) {
			t.Fatalf("readReplayLayout gave up on %s", b)
		}
		if !readReplay(append([]byte(" "), b...), &general) { // a space: the general loop
			t.Fatalf("readReplay gave up on %s", b)
		}
		if !fast.unchecked {
			t.Fatalf("readReplayLayout read the data of %s", b)
		}
		fast.unchecked = false
		if !reflect.DeepEqual(fast, general) {
			t.Fatalf("layout read %+v, general loop %+v", fast, general)
		}
	}
}

// word matches exactly as literal does, at any offset and on any length.
func TestWordIsLiteral(t *testing.T) {
	const lit = `,"datacontenttype":"application/json","aggregatetype":`
	for n := 0; n <= len(lit); n++ {
		s := lit[:n]
		for _, doc := range []string{lit, lit[:len(lit)-1], "x" + lit, lit[:n/2] + "?" + lit[n/2+1:], ""} {
			for at := range min(len(doc), 3) + 1 {
				a, b := reader{b: []byte(doc), i: at}, reader{b: []byte(doc), i: at}
				if got, want := a.word(s), b.literal(s); got != want || a.i != b.i {
					t.Fatalf("word(%q) at %d of %q = %v, %d; literal %v, %d", s, at, doc, got, a.i, want, b.i)
				}
			}
		}
	}
}
