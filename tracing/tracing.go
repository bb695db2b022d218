// Package tracing sets up OpenTelemetry tracing for Chronicle from the
// standard OTEL_* environment variables, so that a processor continues the
// W3C trace context of each command into a span, its events and its result
// (see processor.Config.Tracer).
package tracing

import (
	"context"
	"fmt"
	"os"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Enabled reports whether the environment asks for traces: OTEL_TRACES_EXPORTER
// is "otlp", or an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and OTEL_TRACES_EXPORTER is not "none";
// OTEL_SDK_DISABLED=true turns it off.
func Enabled() bool {
	if os.Getenv("OTEL_SDK_DISABLED") == "true" {
		return false
	}
	switch os.Getenv("OTEL_TRACES_EXPORTER") {
	case "otlp":
		return true
	case "none":
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// FromEnv returns a tracer exporting spans over OTLP/HTTP, configured by the
// OTEL_* environment (endpoint, headers, timeout, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES), and a function that flushes and stops it. When
// Enabled is false it returns a nil tracer: tracing is off, at no cost.
func FromEnv(ctx context.Context) (trace.Tracer, func(context.Context) error, error) {
	if !Enabled() {
		return nil, func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: creating the OTLP exporter from OTEL_* settings: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(serviceName())))
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: building the resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp.Tracer("github.com/chronicle-es/chronicle"), tp.Shutdown, nil
}

// serviceName is OTEL_SERVICE_NAME, or "chronicle".
func serviceName() string {
	if n := os.Getenv("OTEL_SERVICE_NAME"); n != "" {
		return n
	}
	return "chronicle"
}
