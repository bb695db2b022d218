package aggregates

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// encodeReflect is the reference: json.Marshal of the wire struct.
func encodeReflect(t *testing.T, e *Event) []byte {
	t.Helper()
	data, err := json.Marshal(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	v, sv := e.Version, e.SchemaVersion
	if sv == 0 {
		sv = 1
	}
	b, err := json.Marshal(eventWire{
		SpecVersion: SpecVersion, ID: e.ID.String(), Type: e.Type, Source: e.Source,
		Subject: e.Subject, Time: e.Time.UTC(), DataContentType: "application/json",
		AggregateType: e.AggregateType, Version: &v, SchemaVersion: sv,
		CausationID: e.CausationID, CorrelationID: e.CorrelationID, Actor: e.Actor, Data: data,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEncodeWritesWhatJSONMarshalWould(t *testing.T) {
	id, _ := NewID(time.Unix(1700000000, 0))
	cases := []Event{
		{ID: id, Type: "order.LineAdded", Source: "/chronicle/order", Subject: "o-42", Time: time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC),
			AggregateType: "order", Version: 3, SchemaVersion: 2, CausationID: "01ABC", CorrelationID: "corr", Actor: "u-1", Data: map[string]int{"q": 1}},
		{ID: id, Type: "order.OrderCreated", Subject: `quote " back \ slash`, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)), Data: nil},
		{ID: id, Type: "t", Subject: "ünïcödé <html> & \u2028 \x01 \xff", Actor: "tab\there", Data: []string{"a"}},
	}
	for i := range cases {
		got, err := cases[i].Encode()
		if err != nil {
			t.Fatal(err)
		}
		if want := encodeReflect(t, &cases[i]); string(got) != string(want) {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want)
		}
		if !json.Valid(got) {
			t.Errorf("case %d: invalid JSON %s", i, got)
		}
	}
}

func TestTruncateCutsAtARuneBoundary(t *testing.T) {
	for _, s := range []string{strings.Repeat("a", 63) + "é" + strings.Repeat("b", 10), strings.Repeat("€", 40)} {
		got := truncate(s)
		if !utf8.ValidString(got) || len(got) > 64+len("…") || !strings.HasSuffix(got, "…") {
			t.Errorf("truncate(%q) = %q", s, got)
		}
	}
	if got := truncate("short"); got != "short" {
		t.Errorf("truncate(short) = %q", got)
	}
}

func FuzzResultAppendJSON(f *testing.F) {
	f.Add("01JDQ6W3Z8V0Q3X4M0S1Y2K5TB", "order.AddLine", "o-<42>", "accepted", int64(3), 2, "", "why \"not\"", int64(1700000000123456789), 3600)
	f.Add("", "", "", "", int64(-1), 0, "c", "", int64(0), 0)
	f.Add("\xff", "\u2028", "&", "x", int64(9), 1, "", "", int64(-9_000_000_000_000_000_000), -7200)
	f.Fuzz(func(t *testing.T, id, typ, agg, status string, version int64, events int, code, reason string, nanos int64, offset int) {
		r := Result{CommandID: id, CommandType: typ, AggregateType: typ, AggregateID: agg, Status: ResultStatus(status), Version: version,
			Code: code, Reason: reason, CorrelationID: agg, Time: time.Unix(0, nanos).In(time.FixedZone("z", offset%100000))}
		for i := range min(max(events, 0), 4) {
			r.EventIDs = append(r.EventIDs, id+string(rune('a'+i)))
		}
		want, werr := json.Marshal(&r)
		got, gerr := r.AppendJSON([]byte("prefix"))
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("json.Marshal: %v, AppendJSON: %v", werr, gerr)
		}
		if werr == nil && string(got) != "prefix"+string(want) {
			t.Fatalf("AppendJSON wrote\n%s\njson.Marshal wrote\n%s", got[6:], want)
		}
	})
}
