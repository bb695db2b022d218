package processor

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/snapshots"
)

// An acknowledgement of a save made under an earlier restore attempt's
// epoch arrives after the retry started: it must not mark anything stored,
// or the aggregate is evicted while the store, claimed again (perhaps on a
// replica without that save), does not hold it.
func TestAckOfAnEarlierEpochIsIgnored(t *testing.T) {
	kind := counterKind()
	store := snapshots.NewMemory()
	w := newWriter(store, slog.New(slog.DiscardHandler), &counters{})
	st := newAggState(kind, 0, store, w, 1, slog.New(slog.DiscardHandler), &counters{}, "t")
	log := &memLog{}
	if _, err := st.restore(context.Background(), log, 0, false); err != nil {
		t.Fatal(err)
	}
	e, err := st.get(context.Background(), "c-0")
	if err != nil {
		t.Fatal(err)
	}
	cmd, _ := kind.NewCommand("c-0", createCounter{}, aggregates.Metadata{})
	d, err := e.agg.ExecuteEncoded(&cmd, time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	log.recs = append(log.recs, rawEvent{offset: 0, value: d.Encoded[0]}, rawEvent{offset: 1})
	st.changed("c-0", &kgo.Record{Offset: 0}, d.State)
	if err := st.committed(); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	old := snapshots.Lease{Epoch: st.epoch, Seq: 1}
	st.mu.Unlock()
	snap, err := st.snapshotOf(st.cache.entries["c-0"])
	if err != nil {
		t.Fatal(err)
	}
	// The retry: a new epoch, the state rebuilt from the log.
	if _, err := st.restore(context.Background(), log, log.end(), false); err != nil {
		t.Fatal(err)
	}
	st.ack(old, []snapshots.Snapshot{snap})
	st.applyAcks()
	if got := st.cache.entries["c-0"].stored; got >= 0 {
		t.Fatalf("an ack of the earlier epoch marked c-0 stored at version %d", got)
	}
}
