package aggregates_test

import (
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

func TestTraceParentTravelsFromCommandToEvents(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	def := order.Definition()
	cmd, err := def.NewCommand("o-1", order.CreateOrder{UserID: "u"}, aggregates.Metadata{TraceParent: tp})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cmd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := aggregates.DecodeCommand(b)
	if err != nil || back.Metadata.TraceParent != tp {
		t.Fatalf("command round trip: %q, %v", back.Metadata.TraceParent, err)
	}
	evs, err := def.New("o-1").Execute(&back, time.Unix(1_700_000_000, 0))
	if err != nil || evs[0].TraceParent != tp {
		t.Fatalf("event traceparent %q, %v", evs[0].TraceParent, err)
	}
	raw, err := evs[0].Encode()
	if err != nil {
		t.Fatal(err)
	}
	e, err := def.DecodeEvent(raw)
	if err != nil || e.TraceParent != tp {
		t.Fatalf("event round trip: %q, %v\n%s", e.TraceParent, err, raw)
	}
}
