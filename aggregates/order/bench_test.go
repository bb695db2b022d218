package order_test

import (
	"encoding/binary"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

// The replay benchmarks restore orders the way a processor restores a
// partition: the events of many orders interleaved, each applied to its
// order's Root in version order. Every order has eventsPerOrder events:
// created, three lines, lines removed and added again, then confirmed and
// paid, so it ends with three lines as a typical cached order does.
const eventsPerOrder = 100

// payloads returns the event payloads of one order's history.
func payloads(user string) []any {
	out := make([]any, 0, eventsPerOrder)
	out = append(out, order.OrderCreated{UserID: user})
	for p := range int64(3) {
		out = append(out, order.LineAdded{ProductID: 100 + p, Quantity: p + 1, UnitPrice: 1999})
	}
	for i := 0; len(out) < eventsPerOrder-2; i++ {
		p := 100 + int64(i%3)
		out = append(out, order.LineRemoved{ProductID: p}, order.LineAdded{ProductID: p, Quantity: 2, UnitPrice: 1999})
	}
	return append(out,
		order.StatusChanged{From: order.StatusNew, To: order.StatusConfirmed},
		order.StatusChanged{From: order.StatusConfirmed, To: order.StatusPaid})
}

// event returns version v of order id's history, caused by a command of its
// own and stamped as Root.Execute would have done.
func event(def *aggregates.Definition[order.State], id string, v int, p any, start time.Time) aggregates.Event {
	name, _ := def.EventType(p)
	at := start.Add(time.Duration(v) * time.Second)
	return aggregates.Event{
		ID: ulid.MustNew(ulid.Timestamp(at), ulid.DefaultEntropy()), Type: name, Source: "/chronicle/order",
		Subject: id, Time: at, AggregateType: "order", Version: int64(v), SchemaVersion: 1,
		CausationID: ulid.MustNew(ulid.Timestamp(at), ulid.DefaultEntropy()).String(), CorrelationID: "checkout-" + id,
		Actor: "u-" + id, Data: p,
	}
}

// interleaved returns the histories of n orders as a partition of the events
// topic holds them, interleaved (the first event of every order, then the
// second…), with the index of each event's order. Events are built in that
// order, so their strings lie in memory as a decoder reading the partition
// would leave them.
func interleaved(n int) (ids []string, events []aggregates.Event, owner []int32) {
	def := order.Definition()
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	ids = make([]string, n)
	histories := make([][]any, n)
	for i := range n {
		ids[i] = "o-" + strconv.Itoa(i)
		histories[i] = payloads("u-" + ids[i])
	}
	events = make([]aggregates.Event, 0, n*eventsPerOrder)
	owner = make([]int32, 0, n*eventsPerOrder)
	for v := range eventsPerOrder {
		for i := range n {
			events = append(events, event(def, ids[i], v, histories[i][v], start))
			owner = append(owner, int32(i))
		}
	}
	return ids, events, owner
}

// reportPerEvent reports events/s, ns/event and allocs/event for a benchmark
// whose every iteration handled events events.
func reportPerEvent(b *testing.B, events int, elapsed time.Duration, mallocs uint64) {
	total := float64(events) * float64(b.N)
	b.ReportMetric(total/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/total, "ns/event")
	b.ReportMetric(float64(mallocs)/total, "allocs/event")
}

func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

// BenchmarkReplay1MEvents replays 1,000,000 decoded events of 10,000 orders
// into fresh Roots: the apply path of a restore, without decoding.
func BenchmarkReplay1MEvents(b *testing.B) {
	const orders = 10_000
	ids, events, owner := interleaved(orders)
	def := order.Definition()
	roots := make([]*aggregates.Root[order.State], orders)
	b.ReportAllocs()
	runtime.GC()
	before, start := mallocs(), time.Now()
	for b.Loop() {
		for i := range roots {
			roots[i] = def.New(ids[i])
		}
		for i := range events {
			if err := roots[owner[i]].Apply(&events[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportPerEvent(b, len(events), time.Since(start), mallocs()-before)
	if s := roots[0].State(); len(s.Lines) != 3 || s.Status != order.StatusPaid || roots[0].Version() != eventsPerOrder-1 {
		b.Fatalf("replayed order %+v at version %d", s, roots[0].Version())
	}
}

// BenchmarkReplayFromJSON decodes each event's CloudEvents document and
// applies it: the full per-event cost of a restore from Kafka (100,000
// events of 1,000 orders per iteration).
func BenchmarkReplayFromJSON(b *testing.B) {
	const orders = 1_000
	ids, events, owner := interleaved(orders)
	docs := make([][]byte, len(events))
	var size int
	for i := range events {
		var err error
		if docs[i], err = events[i].Encode(); err != nil {
			b.Fatal(err)
		}
		size += len(docs[i])
	}
	def := order.Definition()
	roots := make([]*aggregates.Root[order.State], orders)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	runtime.GC()
	before, start := mallocs(), time.Now()
	for b.Loop() {
		for i := range roots {
			roots[i] = def.New(ids[i])
		}
		for i := range docs {
			e, err := def.DecodeEvent(docs[i])
			if err != nil {
				b.Fatal(err)
			}
			if err := roots[owner[i]].Apply(&e); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportPerEvent(b, len(docs), time.Since(start), mallocs()-before)
}

func lineAddedEvent() aggregates.Event {
	at := time.Date(2026, 11, 23, 10, 0, 1, 500_000_000, time.UTC)
	return aggregates.Event{
		ID: ulid.MustNew(ulid.Timestamp(at), ulid.DefaultEntropy()), Type: "order.LineAdded", Source: "/chronicle/order",
		Subject: "o-42", Time: at, AggregateType: "order", Version: 1, SchemaVersion: 1,
		CausationID: ulid.MustNew(ulid.Timestamp(at), ulid.DefaultEntropy()).String(), CorrelationID: "checkout-7", Actor: "u-1",
		Data: order.LineAdded{ProductID: 512, Quantity: 1, UnitPrice: 1999},
	}
}

// BenchmarkEncodeEvent encodes one LineAdded event to its CloudEvents
// document.
func BenchmarkEncodeEvent(b *testing.B) {
	e := lineAddedEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEvent decodes one LineAdded CloudEvents document.
func BenchmarkDecodeEvent(b *testing.B) {
	e := lineAddedEvent()
	doc, err := e.Encode()
	if err != nil {
		b.Fatal(err)
	}
	def := order.Definition()
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := def.DecodeEvent(doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEventForReplay decodes the same document as a restore
// does: only what Apply needs, the subject looked up.
func BenchmarkDecodeEventForReplay(b *testing.B) {
	e := lineAddedEvent()
	doc, err := e.Encode()
	if err != nil {
		b.Fatal(err)
	}
	def := order.Definition()
	subject := func([]byte) string { return e.Subject }
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := def.DecodeEventForReplay(doc, subject); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExecute decides an AddLine command (merging into one of three
// lines) on a new order: decode the payload, run the handler, apply the
// event to a copy of the state, check the invariant, stamp the event. Each
// iteration sends a new command id, as real senders do.
func BenchmarkExecute(b *testing.B) {
	def := order.Definition()
	root := def.New("o-42")
	for v, p := range payloads("u-1")[:4] {
		e := event(def, "o-42", v, p, time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
		if err := root.Apply(&e); err != nil {
			b.Fatal(err)
		}
	}
	cmd, err := def.NewCommand("o-42", order.AddLine{ProductID: 101, Quantity: 1, UnitPrice: 1999}, aggregates.Metadata{Actor: "u-1"})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 10, 5, 0, 0, time.UTC)
	var seq uint64
	b.ReportAllocs()
	for b.Loop() {
		seq++
		binary.BigEndian.PutUint64(cmd.ID[8:], seq) // a new command id
		if _, err := root.Execute(&cmd, now); err != nil {
			b.Fatal(err)
		}
		root.ClearChanges()
	}
}
