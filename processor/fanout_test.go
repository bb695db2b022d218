package processor

import (
	"fmt"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"maps"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
	"github.com/chronicle-es/chronicle/topics"
)

// TestFanOutDecidesLikeOneByOne works off a backlog in one partition, so
// that polls hand over hundreds of its commands at once and several
// workers decide them, with malformed and mis-keyed commands among them:
// every result, event and state must be what deciding the commands one by
// one gives, and the bad ones get their invalid results in their turn.
func TestFanOutDecidesLikeOneByOne(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("fanOut needs GOMAXPROCS >= 2")
	}
	const orders, perOrder = 60, 30
	c := startCluster(t)
	def := order.Definition()
	names := topics.For("fan")
	createTopics(t, c, "fan", 1)

	rng := rand.New(rand.NewPCG(3, 4))
	oracle := map[string]*aggregates.Root[order.State]{}
	want := map[string]aggregates.Result{}
	perAgg := make([][]*kgo.Record, orders)
	for i := range orders {
		id := fmt.Sprintf("o-%d", i)
		root := def.New(id)
		oracle[id] = root
		for _, payload := range orderCommands(rng, perOrder) {
			cmd, err := def.NewCommand(id, payload, aggregates.Metadata{Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			events, err := root.Execute(&cmd, time.Now())
			want[cmd.ID.String()] = aggregates.ResultFor(&cmd, "order", root.Version(), events, err)
			v, _ := cmd.Encode()
			perAgg[i] = append(perAgg[i], &kgo.Record{Topic: names.Commands, Key: []byte(id), Value: v})
		}
	}
	var recs []*kgo.Record
	for j := range perOrder {
		for i := range orders {
			recs = append(recs, perAgg[i][j])
		}
		// A malformed command (no result, a DLQ record) and a mis-keyed one
		// (an invalid result) in every round.
		recs = append(recs, &kgo.Record{Topic: names.Commands, Key: []byte("o-0"), Value: []byte(`{"id":`)})
		cmd, err := def.NewCommand("o-1", order.CreateOrder{UserID: "u"}, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := cmd.Encode()
		recs = append(recs, &kgo.Record{Topic: names.Commands, Key: []byte("o-2"), Value: v})
		want[cmd.ID.String()] = aggregates.Result{Status: aggregates.StatusInvalid, Code: aggregates.CodeKeyMismatch, Version: -1}
	}
	produceAll(t, newProducer(t, c, kgo.RecordPartitioner(topics.Partitioner())), recs)

	cfg := testConfig(t, c, "fan-1", Binding{Kind: def, Prefix: "fan"})
	cfg.Partitions, cfg.CommitEvery = 1, 1000
	rn := startProcessor(t, cfg)

	results := waitResults(t, c, names.Results, len(want), 120*time.Second)
	if rn.p.Stats().FannedOut == 0 {
		t.Error("no batch was decided by several workers")
	}
	for id, w := range want {
		got, ok := results[id]
		if !ok {
			t.Errorf("command %s: no result", id)
			continue
		}
		if got.Status != w.Status || got.Code != w.Code || got.Version != w.Version {
			t.Errorf("command %s: %s/%s version %d, want %s/%s version %d (%s)", id, got.Status, got.Code, got.Version, w.Status, w.Code, w.Version, got.Reason)
		}
	}
	if n := len(readAll(t, c, names.DLQ)); n != 2*perOrder {
		t.Errorf("%d DLQ records, want %d", n, 2*perOrder)
	}
	events := eventsByAggregate(t, c, def, names.Events, 1)
	for id, w := range oracle {
		got := def.New(id)
		if err := got.Load(events[id]); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if got.Version() != w.Version() || !reflect.DeepEqual(got.State(), w.State()) {
			t.Errorf("%s: events give version %d state %+v, commands imply version %d state %+v", id, got.Version(), got.State(), w.Version(), w.State())
		}
	}
}

// TestFanOutTracesEachCommand works off a backlog in one partition with a
// Tracer, commands carrying traceparent headers: batches must still be
// split among workers, and every command gets its span in the incoming
// trace, whose context its events and its result carry.
func TestFanOutTracesEachCommand(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("fanOut needs GOMAXPROCS >= 2")
	}
	const orders, perOrder = 40, 10
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	c := startCluster(t)
	def := order.Definition()
	names := topics.For("fantr")
	createTopics(t, c, "fantr", 1)
	var recs []*kgo.Record
	for j := range perOrder {
		for i := range orders {
			id := fmt.Sprintf("o-%d", i)
			var payload any = order.CreateOrder{UserID: "u"}
			if j > 0 {
				payload = order.AddLine{ProductID: int64(j), Quantity: 1, UnitPrice: 10}
			}
			rec := command(t, def, names.Commands, id, payload, nil)
			rec.Headers = []kgo.RecordHeader{{Key: HeaderTraceParent, Value: []byte(fmt.Sprintf("00-%s-%016x-01", traceID, j*orders+i+1))}}
			recs = append(recs, rec)
		}
	}
	produceAll(t, newProducer(t, c, kgo.RecordPartitioner(topics.Partitioner())), recs)

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(t.Context()) })
	cfg := testConfig(t, c, "fantr-1", Binding{Kind: def, Prefix: "fantr"})
	cfg.Partitions, cfg.CommitEvery, cfg.Tracer = 1, 1000, tp.Tracer("test")
	rn := startProcessor(t, cfg)
	waitResults(t, c, names.Results, len(recs), 60*time.Second)
	if rn.p.stats.fannedOut.Load() == 0 {
		t.Fatal("no batch was decided by several workers")
	}

	spans := map[string]string{} // command id -> traceparent of its span
	for _, sp := range exp.GetSpans() {
		if sp.SpanContext.TraceID().String() != traceID || !sp.Parent.IsValid() {
			t.Fatalf("span %q not in the incoming trace: %+v", sp.Name, sp)
		}
		for _, a := range sp.Attributes {
			if a.Key == "chronicle.command_id" {
				spans[a.Value.AsString()] = "00-" + traceID + "-" + sp.SpanContext.SpanID().String() + "-01"
			}
		}
	}
	if len(spans) != len(recs) {
		t.Fatalf("%d command spans, want %d", len(spans), len(recs))
	}
	for _, r := range readAll(t, c, names.Results) {
		var got string
		for _, h := range r.Headers {
			if h.Key == HeaderTraceParent {
				got = string(h.Value)
			}
		}
		if want := spans[string(r.Key)]; got != want {
			t.Errorf("result of %s: traceparent %q, want its span's %q", r.Key, got, want)
		}
	}
	n := 0
	for _, evs := range eventsByAggregate(t, c, def, names.Events, 1) {
		for _, e := range evs {
			n++
			if !strings.HasPrefix(e.TraceParent, "00-"+traceID+"-") || !slices.Contains(slices.Collect(maps.Values(spans)), e.TraceParent) {
				t.Errorf("event %s@%d: traceparent %q is no command span's", e.Subject, e.Version, e.TraceParent)
			}
		}
	}
	if n != len(recs) {
		t.Errorf("%d events, want %d", n, len(recs))
	}
}
