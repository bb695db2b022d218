package processor

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A command arriving with a W3C traceparent header is decided in a span of
// the same trace, and its events and result carry that span's context on.
func TestCommandSpansContinueTheIncomingTrace(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	c := startCluster(t)
	kind := counterKind()
	createTopics(t, c, "traced", 1)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(t.Context()) })
	cfg := testConfig(t, c, "traced-1", Binding{Kind: kind, Prefix: "traced"})
	cfg.Tracer = tp.Tracer("test")
	startProcessor(t, cfg)
	rec := command(t, kind, "traced.commands", "c-1", createCounter{}, nil)
	rec.Headers = []kgo.RecordHeader{{Key: HeaderTraceParent, Value: []byte("00-" + traceID + "-00f067aa0ba902b7-01")}}
	produceAll(t, newProducer(t, c), []*kgo.Record{rec})
	waitResults(t, c, "traced.results", 1, 30*time.Second)

	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].SpanContext.TraceID().String() != traceID || spans[0].Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("spans %+v, want one child of the incoming span in trace %s", spans, traceID)
	}
	span := spans[0].SpanContext.SpanID().String()
	want := "00-" + traceID + "-" + span + "-01"
	evs := eventsByAggregate(t, c, kind, "traced.events", 1)["c-1"]
	if len(evs) != 1 || evs[0].TraceParent != want {
		t.Fatalf("event traceparent %q, want %q (the command's span)", evs[0].TraceParent, want)
	}
	res := readAll(t, c, "traced.results")
	var got string
	for _, h := range res[0].Headers {
		if h.Key == HeaderTraceParent {
			got = string(h.Value)
		}
	}
	if got != want {
		t.Fatalf("result traceparent %q, want %q", got, want)
	}
	if !strings.HasPrefix(spans[0].Name, "chronicle.command") {
		t.Errorf("span name %q", spans[0].Name)
	}
}
