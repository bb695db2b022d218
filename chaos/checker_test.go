package chaos

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// A hand-made history of two orders over two partitions, written out the
// way a correct processor writes it. Order A ("o-a") is owned by partition
// 0, order B ("o-e") by partition 1.
const (
	aggA, aggB = "o-a", "o-e"
	topic      = "orders.commands"
)

// Command ids of the baseline history.
const (
	c1 = "01KAPQ0S2A3R579XDB4SD4Q001" // A CreateOrder
	c2 = "01KAPQ0S2A3R579XDB4SD4Q002" // A AddLine, later resent
	c3 = "01KAPQ0S2A3R579XDB4SD4Q003" // A ChangeStatus shipped: invalid_transition
	c4 = "01KAPQ0S2A3R579XDB4SD4Q004" // B CreateOrder, sent to partition 0, forwarded
	c5 = "01KAPQ0S2A3R579XDB4SD4Q005" // malformed (data not an object), id readable
	c6 = "01KAPQ0S2A3R579XDB4SD4Q006" // key mismatch
	c7 = "01KAPQ0S2A3R579XDB4SD4Q007" // B order.Teleport: unknown_command
	c8 = "01KAPQ0S2A3R579XDB4SD4Q008" // A AddLine expecting version 0: concurrency_conflict
)

var t0 = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

type builder struct {
	h    History
	next map[string]map[int32]int64 // topic → partition → next offset
}

func newBuilder(t *testing.T) *builder {
	t.Helper()
	if owner([]byte(aggA), 2) != 0 || owner([]byte(aggB), 2) != 1 {
		t.Fatalf("owners moved: %s → %d, %s → %d", aggA, owner([]byte(aggA), 2), aggB, owner([]byte(aggB), 2))
	}
	return &builder{h: History{CommandsTopic: topic, Partitions: 2}, next: map[string]map[int32]int64{}}
}

func (b *builder) put(list *[]Record, name string, part int32, key, value string, headers map[string]string, ts time.Time) *Record {
	if b.next[name] == nil {
		b.next[name] = map[int32]int64{}
	}
	off := b.next[name][part]
	b.next[name][part] = off + 1
	*list = append(*list, Record{Partition: part, Offset: off, Key: []byte(key), Value: []byte(value), Headers: headers, Timestamp: ts})
	return &(*list)[len(*list)-1]
}

func cmdJSON(id, typ, agg, data string, expected ...int64) string {
	ev := ""
	if len(expected) > 0 {
		ev = fmt.Sprintf(`,"expected_version":%d`, expected[0])
	}
	return fmt.Sprintf(`{"id":%q,"type":%q,"aggregate_id":%q%s,"data":%s}`, id, typ, agg, ev, data)
}

// command appends a command record and returns its position.
func (b *builder) command(part int32, key, value string) pos {
	n := len(b.h.Commands)
	r := b.put(&b.h.Commands, "commands", part, key, value, nil, t0.Add(time.Duration(n)*10*time.Millisecond))
	return posOf(r)
}

func (b *builder) find(p pos) Record {
	for _, r := range b.h.Commands {
		if posOf(&r) == p {
			return r
		}
	}
	panic("no command at " + p.String())
}

func (b *builder) forward(p pos) pos {
	orig := b.find(p)
	r := b.put(&b.h.Commands, "commands", owner(orig.Key, 2), string(orig.Key), string(orig.Value),
		map[string]string{HeaderForwardedFrom: fmt.Sprintf("%s/%d/%d", topic, p.p, p.o)}, orig.Timestamp.Add(50*time.Millisecond))
	return posOf(r)
}

func (b *builder) result(id, status string, version int64, code string) {
	v := fmt.Sprintf(`{"command_id":%q,"aggregate_type":"order","status":%q,"version":%d,"code":%q,"time":"2026-11-23T10:00:01Z"}`, id, status, version, code)
	b.put(&b.h.Results, "results", 0, id, v, nil, t0.Add(time.Second))
}

// event appends an event; each call is a decision of its own, with its own
// time.
func (b *builder) event(agg string, version int64, typ, data, causation string) {
	at := t0.Add(time.Second + time.Duration(len(b.h.Events))*time.Millisecond).Format(time.RFC3339Nano)
	v := fmt.Sprintf(`{"specversion":"1.0","id":"01KAPQ0SJ978TJB2ZDJ0M1ZR%02d","type":%q,"source":"/chronicle/order","subject":%q,"time":%q,"aggregatetype":"order","aggregateversion":%d,"schemaversion":1,"causationid":%q,"data":%s}`,
		version, typ, agg, at, version, causation, data)
	b.put(&b.h.Events, "events", owner([]byte(agg), 2), fmt.Sprintf("%s@%020d", agg, version), v, nil, t0.Add(time.Second))
}

func (b *builder) state(agg string, version int64, state string) {
	v := fmt.Sprintf(`{"aggregate_type":"order","aggregate_id":%q,"version":%d,"state":%s}`, agg, version, state)
	b.put(&b.h.State, "state", owner([]byte(agg), 2), agg, v, nil, t0.Add(time.Second))
}

func (b *builder) dlq(p pos) {
	orig := b.find(p)
	h := map[string]string{HeaderSourceTopic: topic, HeaderSourcePart: fmt.Sprint(p.p), HeaderSourceOffset: fmt.Sprint(p.o)}
	b.put(&b.h.DLQ, "dlq", 0, string(orig.Key), string(orig.Value), h, t0.Add(time.Second))
}

// baseline writes the hand-made history; every part of it is correct.
func baseline(t *testing.T) (*builder, map[string]pos) {
	b := newBuilder(t)
	at := map[string]pos{}
	at["c1"] = b.command(0, aggA, cmdJSON(c1, "order.CreateOrder", aggA, `{"user_id":"u-1"}`))
	at["c2"] = b.command(0, aggA, cmdJSON(c2, "order.AddLine", aggA, `{"product_id":1,"quantity":2,"unit_price":100}`))
	at["c3"] = b.command(0, aggA, cmdJSON(c3, "order.ChangeStatus", aggA, `{"status":"shipped"}`))
	at["c2again"] = b.command(0, aggA, cmdJSON(c2, "order.AddLine", aggA, `{"product_id":1,"quantity":2,"unit_price":100}`))
	at["c4"] = b.command(0, aggB, cmdJSON(c4, "CreateOrder", aggB, `{"user_id":"u-2"}`)) // wrong partition
	at["junk"] = b.command(0, aggA, `not json`)
	at["c5"] = b.command(1, aggB, cmdJSON(c5, "order.AddLine", aggB, `[1]`))
	at["c6"] = b.command(0, aggA, cmdJSON(c6, "order.ChangeStatus", aggB, `{"status":"paid"}`))
	at["c4copy"] = b.forward(at["c4"])
	at["c7"] = b.command(1, aggB, cmdJSON(c7, "order.Teleport", aggB, `{}`))
	at["c8"] = b.command(0, aggA, cmdJSON(c8, "order.AddLine", aggA, `{"product_id":2,"quantity":1,"unit_price":5}`, 0))

	b.result(c1, "accepted", 0, "")
	b.result(c2, "accepted", 1, "")
	b.result(c3, "rejected", 1, "invalid_transition")
	b.result(c2, "duplicate", 1, "")
	b.result(c5, "invalid", -1, "malformed")
	b.result(c6, "invalid", -1, "key_mismatch")
	b.result(c4, "accepted", 0, "")
	b.result(c7, "invalid", 0, "unknown_command")
	b.result(c8, "rejected", 1, "concurrency_conflict")

	b.event(aggA, 0, "order.OrderCreated", `{"user_id":"u-1"}`, c1)
	b.event(aggA, 1, "order.LineAdded", `{"product_id":1,"quantity":2,"unit_price":100}`, c2)
	b.event(aggB, 0, "order.OrderCreated", `{"user_id":"u-2"}`, c4)

	b.state(aggA, 0, `{"user_id":"u-1","status":"new","total":0}`)
	b.state(aggA, 1, `{"user_id":"u-1","status":"new","lines":[{"product_id":1,"quantity":2,"unit_price":100}],"total":200}`)
	b.state(aggB, 0, `{"user_id":"u-2","status":"new","total":0}`)

	b.dlq(at["junk"])
	b.dlq(at["c5"])
	b.dlq(at["c6"])
	b.dlq(at["c7"])
	return b, at
}

func check(t *testing.T, h History, opts Options) Report {
	t.Helper()
	rep := Check(h, opts)
	t.Logf("report:\n%s", rep.String())
	return rep
}

// expectOnly fails unless the report counts exactly want of kind k and
// nothing of any kind outside also (the kinds the same fault may show as).
func expectOnly(t *testing.T, rep Report, k Kind, want int, also ...Kind) {
	t.Helper()
	if rep.Counts[k] != want {
		t.Errorf("%s: got %d, want %d", k, rep.Counts[k], want)
	}
	for _, other := range Kinds {
		if other != k && !slices.Contains(also, other) && rep.Counts[other] != 0 {
			t.Errorf("%s: got %d, want 0 (examples: %v)", other, rep.Counts[other], rep.Examples[other])
		}
	}
}

func TestCheckPassesACorrectHistory(t *testing.T) {
	b, _ := baseline(t)
	rep := check(t, b.h, Options{StallBound: 30 * time.Second})
	if rep.Total() != 0 {
		t.Fatalf("a correct history has %d violations", rep.Total())
	}
	s := rep.Stats
	if s.Decided != 7 || s.Forwarded != 1 || s.Bad != 3 || s.Predicted[statusDuplicate] != 1 || s.Codes["invalid_transition"] != 1 {
		t.Errorf("stats: %+v", s)
	}
	if n := Pending(b.h); n != 0 {
		t.Errorf("Pending of a drained history = %d, want 0", n)
	}
}

func TestCheckFindsAMissingResult(t *testing.T) {
	b, _ := baseline(t)
	b.h.Results = slices.DeleteFunc(b.h.Results, func(r Record) bool { return strings.Contains(string(r.Value), "invalid_transition") })
	expectOnly(t, check(t, b.h, Options{}), MissingResult, 1)
	if n := Pending(b.h); n != 1 {
		t.Errorf("Pending = %d, want 1", n)
	}
}

func TestCheckFindsExtraResults(t *testing.T) {
	b, _ := baseline(t)
	b.result(c1, "accepted", 0, "")                           // a second answer
	b.result("01KAPQ0S2A3R579XDB4SD4Q0ZZ", "accepted", 3, "") // nobody sent it
	expectOnly(t, check(t, b.h, Options{}), ExtraResult, 2)
}

func TestCheckFindsAWrongOutcome(t *testing.T) {
	b, _ := baseline(t)
	for i, r := range b.h.Results {
		if string(r.Key) == c8 {
			// Accepted at version 2 with no event: what a processor
			// deciding on a stale version would answer.
			b.h.Results[i].Value = []byte(`{"command_id":"` + c8 + `","status":"accepted","version":2}`)
		}
	}
	expectOnly(t, check(t, b.h, Options{}), WrongOutcome, 1)
}

func TestCheckFindsUnreadableRecords(t *testing.T) {
	b, _ := baseline(t)
	b.put(&b.h.Results, "results", 1, "x", "{", nil, t0)
	b.put(&b.h.State, "state", 0, aggA, `{"aggregate_id":"someone-else"}`, nil, t0)
	expectOnly(t, check(t, b.h, Options{}), UnreadableRecord, 2)
}

func TestCheckFindsAMisplacedEvent(t *testing.T) {
	b, _ := baseline(t)
	for i, r := range b.h.Events {
		if string(r.Key) == aggB+"@00000000000000000000" {
			b.h.Events[i].Partition, b.h.Events[i].Offset = 0, 99 // not B's owner
		}
	}
	expectOnly(t, check(t, b.h, Options{}), MisplacedEvent, 1)
}

// A fork: version 1 of A written twice with different events. Compaction
// would later keep only one of them.
func TestCheckFindsAnEventKeyWrittenTwice(t *testing.T) {
	b, _ := baseline(t)
	b.event(aggA, 1, "order.LineAdded", `{"product_id":2,"quantity":1,"unit_price":5}`, c8)
	rep := check(t, b.h, Options{})
	expectOnly(t, rep, DuplicateEventKey, 1, VersionSequence, HistoryMismatch, StateMismatch)
	if rep.Counts[VersionSequence] != 1 || rep.Counts[HistoryMismatch] != 1 {
		t.Errorf("a fork of A must break A's version sequence and history once each")
	}
}

func TestCheckFindsAGapInVersions(t *testing.T) {
	b, _ := baseline(t)
	b.h.Events = slices.DeleteFunc(b.h.Events, func(r Record) bool { return string(r.Key) == aggA+"@00000000000000000000" })
	expectOnly(t, check(t, b.h, Options{}), VersionSequence, 1, HistoryMismatch, StateMismatch)
}

func TestCheckFindsACommandAppliedTwice(t *testing.T) {
	b, _ := baseline(t)
	b.event(aggA, 2, "order.LineAdded", `{"product_id":1,"quantity":2,"unit_price":100}`, c2)
	expectOnly(t, check(t, b.h, Options{}), CommandAppliedTwice, 1, HistoryMismatch, StateMismatch)
}

// An event the commands do not imply, consistent otherwise: versions,
// keys and state all agree with it.
func TestCheckFindsAHistoryTheCommandsDoNotImply(t *testing.T) {
	b, _ := baseline(t)
	for i, r := range b.h.Events {
		if string(r.Key) == aggA+"@00000000000000000001" {
			b.h.Events[i].Value = []byte(strings.Replace(string(r.Value), `"quantity":2`, `"quantity":3`, 1))
		}
	}
	for i, r := range b.h.State {
		if string(r.Key) == aggA && strings.Contains(string(r.Value), `"version":1`) {
			b.h.State[i].Value = []byte(strings.NewReplacer(`"quantity":2`, `"quantity":3`, `"total":200`, `"total":300`).Replace(string(r.Value)))
		}
	}
	expectOnly(t, check(t, b.h, Options{}), HistoryMismatch, 1)
}

func TestCheckFindsStateThatIsNotTheReplayOfTheEvents(t *testing.T) {
	b, _ := baseline(t)
	b.state(aggA, 1, `{"user_id":"u-1","status":"new","total":0}`) // lost its line
	b.state("o-ghost", 0, `{"user_id":"u-9","status":"new","total":0}`)
	b.h.State = slices.DeleteFunc(b.h.State, func(r Record) bool { return string(r.Key) == aggB })
	expectOnly(t, check(t, b.h, Options{}), StateMismatch, 3)
}

func TestCheckFindsAMissingDeadLetter(t *testing.T) {
	b, at := baseline(t)
	b.h.DLQ = slices.DeleteFunc(b.h.DLQ, func(r Record) bool {
		return r.Headers[HeaderSourceOffset] == fmt.Sprint(at["junk"].o) && r.Headers[HeaderSourcePart] == "0"
	})
	expectOnly(t, check(t, b.h, Options{}), DLQMissing, 1)
}

func TestCheckFindsExtraDeadLetters(t *testing.T) {
	b, at := baseline(t)
	b.dlq(at["c1"]) // a good command
	b.dlq(at["c5"]) // a second copy
	b.put(&b.h.DLQ, "dlq", 0, aggA, "other bytes", map[string]string{HeaderSourceTopic: topic, HeaderSourcePart: "0", HeaderSourceOffset: fmt.Sprint(at["c6"].o)}, t0)
	expectOnly(t, check(t, b.h, Options{}), DLQExtra, 3)
}

func TestCheckFindsAMissingForward(t *testing.T) {
	b, at := baseline(t)
	b.h.Commands = slices.DeleteFunc(b.h.Commands, func(r Record) bool { return posOf(&r) == at["c4copy"] })
	// Without the copy B was never created: its events, state and results
	// are extra, and the Teleport finds it at version -1.
	rep := check(t, b.h, Options{})
	expectOnly(t, rep, ForwardMissing, 1, ExtraResult, WrongOutcome, HistoryMismatch, StateMismatch)
	if n := Pending(b.h); n != 1 {
		t.Errorf("Pending = %d, want 1 (the forward)", n)
	}
}

func TestCheckFindsAForwardedTwice(t *testing.T) {
	b, at := baseline(t)
	b.forward(at["c4"])
	b.result(c4, "duplicate", 0, "")
	b.forward(at["c1"]) // a record on its owner partition
	b.result(c1, "duplicate", 0, "")
	expectOnly(t, check(t, b.h, Options{}), ForwardExtra, 2, WrongOutcome)
}

func TestCheckFindsAStallAfterAFault(t *testing.T) {
	b, _ := baseline(t)
	faults := []Fault{
		{Name: "redis-down", Start: t0.Add(-5 * time.Second), End: t0.Add(500 * time.Millisecond)},
		{Name: "broker-down", Start: t0.Add(20 * time.Second), End: t0.Add(40 * time.Second)},
	}
	bound := Options{Faults: faults, StallBound: 30 * time.Second}
	answer := func(at time.Duration) {
		for i, r := range b.h.Results {
			if strings.Contains(string(r.Value), c3) {
				b.h.Results[i].Timestamp = t0.Add(at)
			}
		}
	}
	rep := check(t, b.h, bound)
	expectOnly(t, rep, Stall, 0)
	if rep.Recovery[0].Results != len(b.h.Results) || rep.Recovery[1].Results != 0 || rep.Recovery[0].MaxDelay != 500*time.Millisecond {
		t.Errorf("recovery: %+v", rep.Recovery)
	}
	// c3 answered 45 s after it was produced: 20 s of it during the
	// second fault, 0.48 s during the first, 24.5 s outside: in time.
	answer(45 * time.Second)
	expectOnly(t, check(t, b.h, bound), Stall, 0)
	// Answered at 62 s: 41.5 s outside faults, late since 50.5 s, after
	// the second fault.
	answer(62 * time.Second)
	rep = check(t, b.h, bound)
	expectOnly(t, rep, Stall, 1)
	if !strings.Contains(rep.Examples[Stall][0], "after broker-down, partition 0: 1 result(s)") {
		t.Errorf("stall blamed on the wrong fault or partition: %v", rep.Examples[Stall])
	}
	if got := lateAt(mergeWindows(faults), t0.Add(20*time.Millisecond), 30*time.Second); !got.Equal(t0.Add(50500 * time.Millisecond)) {
		t.Errorf("late at %v, want t0+50.5s", got.Sub(t0))
	}
}

// A resend that comes once IdempotencyWindow other commands have produced
// events on its aggregate is a new command by contract (the model predicts
// it accepted); one that comes sooner is a command applied twice.
func TestAppliedOnceAllowsAResendBeyondTheIdempotencyWindow(t *testing.T) {
	for _, between := range []int{IdempotencyWindow - 1, IdempotencyWindow} {
		var evs []modelEvent
		add := func(cause, at string) {
			evs = append(evs, modelEvent{version: int64(len(evs)), causation: cause, time: at})
		}
		add("resent", "t0")
		for i := range between {
			add(fmt.Sprintf("other-%d", i), fmt.Sprintf("t%d", i+1))
		}
		add("resent", "later")
		first, again := decision{"o-1", "t0"}, decision{"o-1", "later"}
		by := map[decision][]int64{first: {0}, again: {int64(between + 1)}}
		got := appliedOnce([]decision{first, again}, by, map[string][]modelEvent{"o-1": evs})
		if want := between >= IdempotencyWindow; got != want {
			t.Errorf("%d other commands between: appliedOnce = %v, want %v", between, got, want)
		}
	}
	// One decision whose versions are not consecutive is never one application.
	d := decision{"o-1", "t0"}
	if appliedOnce([]decision{d}, map[decision][]int64{d: {0, 2}}, nil) {
		t.Error("versions 0 and 2 of one decision passed")
	}
}
