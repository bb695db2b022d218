package aggregates_test

import (
	"testing"
	"time"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/aggregates/order"
)

// orderSnapshot is the snapshot of an order after 40 commands: 3 lines
// and a full window of 32 recent command ids, about 1.2 KB.
func orderSnapshot(tb testing.TB) (*aggregates.Definition[order.State], []byte) {
	tb.Helper()
	def := order.Definition()
	root := def.New("o-12345")
	for i := range 40 {
		var p any = order.AddLine{ProductID: int64(1 + i%3), Quantity: 1, UnitPrice: 100}
		if i == 0 {
			p = order.CreateOrder{UserID: "u-1"}
		}
		cmd, err := def.NewCommand("o-12345", p, aggregates.Metadata{})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := root.ExecuteEncoded(&cmd, time.Now()); err != nil {
			tb.Fatal(err)
		}
	}
	snap, err := root.MarshalSnapshot()
	if err != nil {
		tb.Fatal(err)
	}
	return def, snap
}

func BenchmarkUnmarshalSnapshot(b *testing.B) {
	def, snap := orderSnapshot(b)
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	for b.Loop() {
		a := def.NewAggregate("o-12345")
		if err := a.UnmarshalSnapshot(snap); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalSnapshot(b *testing.B) {
	def, snap := orderSnapshot(b)
	a := def.NewAggregate("o-12345")
	if err := a.UnmarshalSnapshot(snap); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.MarshalSnapshot(); err != nil {
			b.Fatal(err)
		}
	}
}
