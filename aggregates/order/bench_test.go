package order_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

// history returns n events over aggs orders: each order is created, then
// gets lines added and removed in turn (all valid), as decoded events.
func history(b *testing.B, aggs, n int) []aggregates.Event {
	b.Helper()
	def := order.Definition()
	roots := make([]*aggregates.Root[order.State], aggs)
	out := make([]aggregates.Event, 0, n)
	now := time.Now()
	for i := 0; len(out) < n; i++ {
		k := i % aggs
		if roots[k] == nil {
			roots[k] = def.New(fmt.Sprintf("o-%d", k))
		}
		r := roots[k]
		var payload any = order.CreateOrder{UserID: "u-1"}
		if r.Version() >= 0 {
			p := int64(r.Version()%4 + 1)
			if r.Version()%8 >= 4 {
				payload = order.RemoveLine{ProductID: p}
			} else {
				payload = order.AddLine{ProductID: p, Quantity: 2, UnitPrice: 1999}
			}
		}
		cmd, err := def.NewCommand(r.ID(), payload, aggregates.Metadata{Actor: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		evs, err := r.Execute(&cmd, now)
		if err != nil {
			b.Fatalf("%T: %v", payload, err)
		}
		r.ClearChanges()
		out = append(out, evs...)
	}
	return out
}

// BenchmarkReplay1MEvents applies 1M decoded Order events to 10k orders.
func BenchmarkReplay1MEvents(b *testing.B) {
	const n = 1_000_000
	events := history(b, 10_000, n)
	def := order.Definition()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roots := make(map[string]*aggregates.Root[order.State], 10_000)
		for i := range events {
			e := &events[i]
			r := roots[e.Subject]
			if r == nil {
				r = def.New(e.Subject)
				roots[e.Subject] = r
			}
			if err := r.Apply(e); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkReplayFromJSON decodes and applies each stored event: the cost
// of a restore per event, without Kafka.
func BenchmarkReplayFromJSON(b *testing.B) {
	const n = 100_000
	events := history(b, 1_000, n)
	docs := make([][]byte, n)
	for i := range events {
		d, err := events[i].Encode()
		if err != nil {
			b.Fatal(err)
		}
		docs[i] = d
	}
	def := order.Definition()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roots := make(map[string]*aggregates.Root[order.State], 1_000)
		for _, d := range docs {
			e, err := def.DecodeEvent(d)
			if err != nil {
				b.Fatal(err)
			}
			r := roots[e.Subject]
			if r == nil {
				r = def.New(e.Subject)
				roots[e.Subject] = r
			}
			if err := r.Apply(&e); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkEncodeEvent(b *testing.B) {
	e := history(b, 1, 2)[1]
	b.ReportAllocs()
	for range b.N {
		if _, err := e.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	e := history(b, 1, 2)[1]
	doc, _ := e.Encode()
	def := order.Definition()
	b.ReportAllocs()
	for range b.N {
		if _, err := def.DecodeEvent(doc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExecuteAddLine(b *testing.B) {
	def := order.Definition()
	r := def.New("o-1")
	c, _ := def.NewCommand("o-1", order.CreateOrder{UserID: "u"}, aggregates.Metadata{})
	if _, err := r.Execute(&c, time.Now()); err != nil {
		b.Fatal(err)
	}
	cmds := make([]aggregates.Command, 1024)
	for i := range cmds {
		cmds[i], _ = def.NewCommand("o-1", order.AddLine{ProductID: int64(i%3 + 1), Quantity: 1, UnitPrice: 10}, aggregates.Metadata{})
	}
	now := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%1000 == 999 { // keep the order small
			b.StopTimer()
			r = def.New("o-1")
			_, _ = r.Execute(&c, now)
			b.StartTimer()
		}
		cmd := cmds[i%len(cmds)]
		cmd.ID, _ = aggregates.NewID(now)
		if _, err := r.Execute(&cmd, now); err != nil {
			b.Fatal(err)
		}
		r.ClearChanges()
	}
}
