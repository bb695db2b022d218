package processor

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/snapshots"
	"github.com/chronicle-es/chronicle/topics"
)

// An event record whose key names another aggregate than the event's
// subject (written by a foreign producer, a tool with a bug) is its
// subject's history: a full replay, which reads no keys, applies it to
// its subject. A restore from a checkpoint must not hand the subject out
// without it (invariants 1 and 7), or the next command on it decides on
// stale state and reuses the event's version.

// miskeyedTail is an aggState restored from a checkpoint at offset 2 of a
// log where c-0 and c-1 were created (offsets 0 and 1, in the checkpoint's
// snapshots); after it, c-1's Add of 5 (version 1) at offset 2 carries the
// record key of c-0's version 1.
func miskeyedTail(t *testing.T) (*aggState, *memLog) {
	t.Helper()
	ctx := context.Background()
	kind := counterKind()
	log := &memLog{}
	var snaps []snapshots.Snapshot
	encode := func(root *aggregates.Root[counterState], payload any) []byte {
		cmd, err := kind.NewCommand(root.ID(), payload, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := root.ExecuteEncoded(&cmd, time.Unix(1_700_000_000, 0))
		if err != nil {
			t.Fatal(err)
		}
		root.ClearChanges()
		return d.Encoded[0]
	}
	roots := map[string]*aggregates.Root[counterState]{"c-0": kind.New("c-0"), "c-1": kind.New("c-1")}
	for i, id := range []string{"c-0", "c-1"} {
		root := roots[id]
		log.recs = append(log.recs, rawEvent{offset: int64(i), key: topics.EventKey(id, 0), value: encode(root, createCounter{})})
		data, err := root.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, snapshots.Snapshot{AggregateID: id, Version: 0, Offset: int64(i), Stamp: kind.StateStamp(), Data: data})
	}
	log.recs = append(log.recs, rawEvent{offset: 2, key: topics.EventKey("c-0", 1), value: encode(roots["c-1"], addCounter{N: 5})})
	store := snapshots.NewMemory()
	cp := &snapshots.Checkpoint{Offset: 2, Stamp: kind.StateStamp() + " topic t", Time: time.Now()}
	if err := store.Save(ctx, kind.Name(), 0, cp, snaps); err != nil {
		t.Fatal(err)
	}
	w := newWriter(store, slog.New(slog.DiscardHandler), &counters{})
	st := newAggState(kind, 0, store, w, 10, slog.New(slog.DiscardHandler), &counters{}, "t")
	st.retries = nil
	rep, err := st.restore(ctx, log, log.end(), false)
	if err != nil || rep.from != 2 {
		t.Fatalf("restore %+v: %v, want one from the checkpoint at 2", rep, err)
	}
	return st, log
}

func TestAMiskeyedTailEventIsNotLostToItsSubject(t *testing.T) {
	st, log := miskeyedTail(t)
	// What a full replay makes of the same log.
	full := newAggState(counterKind(), 0, nil, nil, 10, slog.New(slog.DiscardHandler), &counters{}, "t")
	if _, err := full.restore(context.Background(), log, log.end(), true); err != nil {
		t.Fatal(err)
	}
	want, err := full.get(context.Background(), "c-1")
	if err != nil || want.agg.Version() != 1 || want.agg.StateAny().(counterState).Value != 5 {
		t.Fatalf("c-1 after a full replay: %+v (%v), want version 1 with value 5", want, err)
	}
	// A command on c-1 first: it must get c-1 with its event, or an error
	// that restores the partition, never c-1 without it.
	e, err := st.get(context.Background(), "c-1")
	if err == nil && (e.agg.Version() != 1 || e.agg.StateAny().(counterState).Value != 5) {
		t.Fatalf("c-1 handed out at version %d with value %d after a checkpoint restore; the log (and a full replay) has it at version 1 with value 5",
			e.agg.Version(), e.agg.StateAny().(counterState).Value)
	}
}

// The same through the processor: a foreign record in the events
// partition, after the checkpoint, with c-4's Add of 100 (version 1) keyed
// for c-0. The next Add on c-4 must be version 2, as a full replay (and
// the restore before 24d5dfd, which decoded its tail) decides it.
func TestAMiskeyedTailEventDoesNotLetACommandReuseItsVersion(t *testing.T) {
	e := newTailEnv(t)
	root := e.kind.New("c-4")
	for _, payload := range []any{createCounter{}, addCounter{N: 100}} {
		cmd, err := e.kind.NewCommand("c-4", payload, aggregates.Metadata{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := root.ExecuteEncoded(&cmd, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		root.ClearChanges()
		if root.Version() == 1 {
			produceAll(t, e.prod, []*kgo.Record{{Topic: e.names.Events, Partition: 0, Key: topics.EventKey("c-0", 3), Value: d.Encoded[0]}})
		}
	}
	c := startProcessor(t, e.quiet(t, "tail-c"))
	waitStat(t, "restores", func() int64 { return c.p.Stats().Restores }, 1)
	if st := c.p.Stats(); st.CheckpointRestores != 1 {
		t.Fatalf("restore: %+v, want one from the checkpoint", st)
	}
	e.d.want(command(t, e.kind, e.names.Commands, "c-4", addCounter{N: 1}, nil), aggregates.StatusAccepted, 2)
}
