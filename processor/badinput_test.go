package processor

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

func TestBadInputsGetResultsAndDeadLetters(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	cfg := testConfig(t, c, "bad", Binding{Kind: kind, Prefix: "counters"})
	cfg.MaxCommandBytes = 4096
	r := startProcessor(t, cfg)

	id := func() string { return ulid.Make().String() }
	type tc struct {
		name    string
		key     string
		value   string
		cmdID   string // "" when no id can be read: no result, DLQ only
		status  aggregates.ResultStatus
		code    string
		dlq     bool
		reason  string // substring of the reason
		prepare []string
	}
	created := id()
	cases := []tc{
		{name: "not JSON at all", key: "b-1", value: "\x00\x01garbage", dlq: true},
		{name: "JSON but not an object", key: "b-1", value: `[1,2,3]`, dlq: true},
		{name: "no id", key: "b-1", value: `{"type":"counter.Create","aggregate_id":"b-1"}`, dlq: true},
		{name: "id is not a ULID", key: "b-1", value: `{"id":"nope","type":"counter.Create","aggregate_id":"b-1"}`, dlq: true},
	}
	withID := []tc{
		{name: "missing type", key: "b-2", status: aggregates.StatusInvalid, code: aggregates.CodeMalformed, dlq: true, reason: `"type" is missing`,
			value: `{"id":"%ID%","aggregate_id":"b-2"}`},
		{name: "missing aggregate id", key: "b-2", status: aggregates.StatusInvalid, code: aggregates.CodeMalformed, dlq: true, reason: `"aggregate_id" is missing`,
			value: `{"id":"%ID%","type":"counter.Create"}`},
		{name: "unknown command type", key: "b-3", status: aggregates.StatusInvalid, code: aggregates.CodeUnknownCommand, dlq: true, reason: "counter.Explode",
			value: `{"id":"%ID%","type":"counter.Explode","aggregate_id":"b-3"}`},
		{name: "key does not match aggregate id", key: "someone-else", status: aggregates.StatusInvalid, code: aggregates.CodeKeyMismatch, dlq: true, reason: "does not match",
			value: `{"id":"%ID%","type":"counter.Create","aggregate_id":"b-4"}`},
		{name: "payload field of the wrong type", key: "b-5", status: aggregates.StatusInvalid, code: aggregates.CodeMalformed, dlq: true, reason: "counter.Add",
			value: `{"id":"%ID%","type":"counter.Add","aggregate_id":"b-5","data":{"n":"seven"}}`},
		{name: "unknown payload field", key: "b-5", status: aggregates.StatusInvalid, code: aggregates.CodeMalformed, dlq: true, reason: "unknown field",
			value: `{"id":"%ID%","type":"counter.Add","aggregate_id":"b-5","data":{"nn":7}}`},
		{name: "too large", key: "b-6", status: aggregates.StatusInvalid, code: aggregates.CodeTooLarge, dlq: true, reason: "limit is 4096",
			value: `{"id":"%ID%","type":"counter.Create","aggregate_id":"b-6","metadata":{"actor":"` + strings.Repeat("x", 5000) + `"}}`},
		{name: "handler panics", key: "b-7", status: aggregates.StatusRejected, code: aggregates.CodeHandlerPanic, dlq: true, reason: "boom",
			value: `{"id":"%ID%","type":"counter.Boom","aggregate_id":"b-7"}`},
		{name: "business rejection is not a dead letter", key: "b-8", status: aggregates.StatusRejected, code: "not_found",
			value: `{"id":"%ID%","type":"counter.Add","aggregate_id":"b-8","data":{"n":1}}`},
		{name: "expected version conflict", key: "b-9", status: aggregates.StatusRejected, code: aggregates.CodeConcurrencyConflict, reason: "expected version 5",
			value: `{"id":"%ID%","type":"counter.Create","aggregate_id":"b-9","expected_version":5}`},
		{name: "duplicate command id", key: "b-10", status: aggregates.StatusDuplicate, cmdID: created,
			value:   `{"id":"` + created + `","type":"counter.Create","aggregate_id":"b-10"}`,
			prepare: []string{`{"id":"` + created + `","type":"counter.Create","aggregate_id":"b-10"}`}},
		{name: "short type names are accepted", key: "b-11", status: aggregates.StatusAccepted,
			value: `{"id":"%ID%","type":"Create","aggregate_id":"b-11"}`},
	}
	for _, w := range withID {
		if w.cmdID == "" {
			w.cmdID = id()
		}
		w.value = strings.ReplaceAll(w.value, "%ID%", w.cmdID)
		cases = append(cases, w)
	}
	var recs []*kgo.Record
	for _, tc := range cases {
		for _, v := range tc.prepare {
			recs = append(recs, &kgo.Record{Topic: names.Commands, Key: []byte(tc.key), Value: []byte(v)})
		}
		recs = append(recs, &kgo.Record{Topic: names.Commands, Key: []byte(tc.key), Value: []byte(tc.value)})
	}
	// A good command after all the bad ones proves no partition is stuck.
	last := command(t, kind, names.Commands, "b-1", createCounter{}, nil)
	recs = append(recs, last)
	produceAll(t, newProducer(t, c), recs)

	wantResults := 2 // the prepared command and the last good one
	for _, tc := range cases {
		if tc.cmdID != "" {
			wantResults++
		}
	}
	results := waitResultsLatest(t, c, names.Results, wantResults, 30*time.Second, false)
	dlq := map[string]*kgo.Record{}
	for _, rec := range readAll(t, c, names.DLQ) {
		dlq[string(rec.Value)] = rec
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, inDLQ := dlq[tc.value]
			if inDLQ != tc.dlq {
				t.Fatalf("in DLQ: %v, want %v", inDLQ, tc.dlq)
			}
			if inDLQ {
				h := map[string]string{}
				for _, kv := range d.Headers {
					h[kv.Key] = string(kv.Value)
				}
				if h[HeaderError] == "" || h[HeaderSourceTopic] != names.Commands || h[HeaderSourceOffset] == "" || string(d.Key) != tc.key {
					t.Errorf("DLQ record lacks its provenance: key %q headers %v", d.Key, h)
				}
				if tc.code != "" && h[HeaderCode] != tc.code {
					t.Errorf("DLQ code %q, want %q", h[HeaderCode], tc.code)
				}
			}
			if tc.cmdID == "" {
				return
			}
			res, ok := results[tc.cmdID]
			if !ok {
				t.Fatalf("no result for %s", tc.cmdID)
			}
			if res.Status != tc.status || res.Code != tc.code || !strings.Contains(res.Reason, tc.reason) {
				b, _ := json.Marshal(res)
				t.Errorf("result %s, want status %s code %q reason containing %q", b, tc.status, tc.code, tc.reason)
			}
		})
	}
	if res := results[mustDecode(t, last.Value).ID.String()]; res.Status != aggregates.StatusAccepted {
		t.Errorf("the good command after the bad ones: %+v", res)
	}
	if st := r.p.Stats(); st.Invalid < 10 {
		t.Errorf("stats count %d invalid commands, want at least 10", st.Invalid)
	}
}

func mustDecode(t testing.TB, b []byte) aggregates.Command {
	cmd, err := aggregates.DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}
