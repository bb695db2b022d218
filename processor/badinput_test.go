package processor

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// badInput is one case of TestBadInputsGetResultsAndDeadLetters.
type badInput struct {
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

func TestBadInputsGetResultsAndDeadLetters(t *testing.T) {
	c := startCluster(t)
	kind := counterKind()
	names := topics.For("counters")
	createTopics(t, c, "counters", 6)
	cfg := testConfig(t, c, "bad", Binding{Kind: kind, Prefix: "counters"})
	cfg.MaxCommandBytes = 4096
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	r := startProcessor(t, cfg)

	id := func() string { return ulid.Make().String() }
	created := id()
	cases := []badInput{
		{name: "not JSON at all", key: "b-1", value: "\x00\x01garbage", dlq: true},
		{name: "JSON but not an object", key: "b-1", value: `[1,2,3]`, dlq: true},
		{name: "no id", key: "b-1", value: `{"type":"counter.Create","aggregate_id":"b-1"}`, dlq: true},
		{name: "id is not a ULID", key: "b-1", value: `{"id":"nope","type":"counter.Create","aggregate_id":"b-1"}`, dlq: true},
	}
	withID := []badInput{
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
		{name: "invariant violated", key: "b-12", status: aggregates.StatusRejected, code: aggregates.CodeInvariantViolated, reason: "above 1000000",
			value:   `{"id":"%ID%","type":"counter.Add","aggregate_id":"b-12","data":{"n":2000000}}`,
			prepare: []string{`{"id":"` + id() + `","type":"counter.Create","aggregate_id":"b-12"}`}},
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

	wantResults := 1 // the last good one
	for _, tc := range cases {
		wantResults += len(tc.prepare)
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
	checkBadInputLogs(t, logs.String(), cases)
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

// checkBadInputLogs checks, in the processor's JSON log, that every command
// sent to the DLQ and every invariant violation was logged at WARN, or at
// ERROR for a handler's panic (a bug in the code), with its command id,
// aggregate type, aggregate, code and reason; that a record whose id cannot
// be read is logged with its offset; and that durations carry their unit.
func checkBadInputLogs(t *testing.T, logs string, cases []badInput) {
	t.Helper()
	var recs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		recs = append(recs, m)
	}
	byID := map[string]map[string]any{}
	withoutID, restored := 0, 0
	for _, m := range recs {
		if id, ok := m["command_id"].(string); ok {
			byID[id] = m
		}
		if strings.Contains(m["msg"].(string), "without a readable id") && m["level"] == "WARN" && m["offset"] != nil && m["reason"] != "" {
			withoutID++
		}
		if m["msg"] == "partition restored" {
			restored++
			if d, ok := m["took"].(string); !ok {
				t.Errorf("partition restored: took = %#v, want a duration with its unit", m["took"])
			} else if _, err := time.ParseDuration(d); err != nil {
				t.Errorf("partition restored: took = %q: %v", d, err)
			}
		}
	}
	if restored == 0 {
		t.Error("no partition restored in the log")
	}
	for _, tc := range cases {
		logged := tc.dlq || tc.code == aggregates.CodeInvariantViolated
		if tc.cmdID == "" || !logged {
			continue
		}
		m := byID[tc.cmdID]
		if m == nil {
			t.Errorf("%s: no log line with command_id %s", tc.name, tc.cmdID)
			continue
		}
		wantLevel := "WARN"
		if tc.code == aggregates.CodeHandlerPanic {
			wantLevel = "ERROR"
		}
		wantAgg := tc.key
		switch tc.name {
		case "key does not match aggregate id":
			wantAgg = "b-4" // the aggregate_id of the payload
		case "missing aggregate id":
			wantAgg = ""
		}
		if m["level"] != wantLevel || m["aggregate_type"] != "counter" || m["aggregate"] != wantAgg ||
			m["code"] != nil && m["code"] != tc.code || !strings.Contains(fmt.Sprint(m["reason"]), tc.reason) || m["reason"] == "" {
			t.Errorf("%s: logged %v, want level %s, aggregate_type counter, aggregate %s, code %s and a reason containing %q",
				tc.name, m, wantLevel, wantAgg, tc.code, tc.reason)
		}
		if tc.dlq && !strings.Contains(m["msg"].(string), "DLQ") {
			t.Errorf("%s: logged %q, want it to say the command went to the DLQ", tc.name, m["msg"])
		}
	}
	if want := 4; withoutID != want {
		t.Errorf("%d WARN lines for records without a readable id, want %d", withoutID, want)
	}
}
