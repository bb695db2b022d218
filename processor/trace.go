package processor

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/chronicle-es/chronicle/aggregates"
)

// HeaderTraceParent is the W3C trace context header a command record may
// carry, and that its result record carries back.
const HeaderTraceParent = "traceparent"

// traceCommand starts the span of one command when Config.Tracer is set,
// continuing the trace context of the record's traceparent header, else of
// the command's metadata. The span's own context goes into the command's
// metadata, so the events carry it (CloudEvents' traceparent attribute).
// It returns the span (nil when not tracing) and its traceparent.
func (p *Processor) traceCommand(ctx context.Context, r *kgo.Record, cmd *aggregates.Command, aggType string) (trace.Span, string) {
	if p.cfg.Tracer == nil {
		return nil, ""
	}
	carrier := propagation.MapCarrier{}
	if cmd.Metadata.TraceParent != "" {
		carrier[HeaderTraceParent] = cmd.Metadata.TraceParent
	}
	for _, h := range r.Headers {
		if h.Key == HeaderTraceParent || h.Key == "tracestate" {
			carrier[h.Key] = string(h.Value)
		}
	}
	tc := propagation.TraceContext{}
	ctx, span := p.cfg.Tracer.Start(tc.Extract(ctx, carrier), "chronicle.command "+cmd.Type,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String("messaging.destination.name", r.Topic),
			attribute.Int64("messaging.kafka.offset", r.Offset),
			attribute.Int("messaging.destination.partition.id", int(r.Partition)),
			attribute.String("chronicle.aggregate_type", aggType),
			attribute.String("chronicle.aggregate_id", cmd.AggregateID),
			attribute.String("chronicle.command_id", cmd.ID.String()),
		))
	out := propagation.MapCarrier{}
	tc.Inject(ctx, out)
	cmd.Metadata.TraceParent = out[HeaderTraceParent]
	return span, cmd.Metadata.TraceParent
}
