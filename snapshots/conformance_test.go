package snapshots

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// store is the method set the processor relies on; every implementation
// must pass runConformance.
type store interface {
	Checkpoint(ctx context.Context, aggType string, partition int32) (Checkpoint, bool, error)
	Load(ctx context.Context, aggType string, partition int32, id string) (Snapshot, bool, error)
	LoadMany(ctx context.Context, aggType string, partition int32, ids []string) (map[string]Snapshot, error)
	Save(ctx context.Context, aggType string, partition int32, cp *Checkpoint, snaps []Snapshot) error
	DropPartition(ctx context.Context, aggType string, partition int32) error
	Close() error
	Claim(ctx context.Context, aggType string, partition int32, epoch string) (Checkpoint, bool, error)
	LoadLeased(ctx context.Context, aggType string, partition int32, lease Lease, ids []string) (map[string]Snapshot, error)
	SaveLeased(ctx context.Context, aggType string, partition int32, lease Lease, cp *Checkpoint, snaps []Snapshot) (Lease, error)
}

var (
	_ store = (*Redis)(nil)
	_ store = (*Memory)(nil)
)

// backend is one implementation under test.
type backend struct {
	// open returns a store whose data no other call of open sees.
	open func(t *testing.T) store
	// corrupt, when set, replaces the raw stored value of aggregate id, or
	// of the checkpoint when id is "", with raw.
	corrupt func(t *testing.T, s store, aggType string, partition int32, id string, raw []byte)
	// outage, when set, returns a store on a server of its own and
	// functions that stop and restart that server.
	outage func(t *testing.T) (s store, stop, restart func())
}

// testCtx returns a context that ends with the test or after 30 s.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func snap(id string, version int64, data string) Snapshot {
	return Snapshot{AggregateID: id, Version: version, Offset: version * 10, Stamp: "order/v1", Data: []byte(data)}
}

// sameSnapshot fails the test unless got equals want (nil and empty Data
// being equal).
func sameSnapshot(t *testing.T, got, want Snapshot) {
	t.Helper()
	if got.AggregateID != want.AggregateID || got.Version != want.Version || got.Offset != want.Offset ||
		got.Stamp != want.Stamp || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("snapshot = %+v (data %q)\nwant       %+v (data %q)", got, got.Data, want, want.Data)
	}
}

func mustLoad(t *testing.T, s store, aggType string, partition int32, id string) Snapshot {
	t.Helper()
	got, ok, err := s.Load(testCtx(t), aggType, partition, id)
	if err != nil || !ok {
		t.Fatalf("Load(%s/%d, %q) = ok %v, err %v; want a snapshot", aggType, partition, id, ok, err)
	}
	return got
}

func mustSave(t *testing.T, s store, aggType string, partition int32, cp *Checkpoint, snaps ...Snapshot) {
	t.Helper()
	if err := s.Save(testCtx(t), aggType, partition, cp, snaps); err != nil {
		t.Fatalf("Save(%s/%d, %d snapshots): %v", aggType, partition, len(snaps), err)
	}
}

func mustCheckpoint(t *testing.T, s store, aggType string, partition int32) Checkpoint {
	t.Helper()
	cp, ok, err := s.Checkpoint(testCtx(t), aggType, partition)
	if err != nil || !ok {
		t.Fatalf("Checkpoint(%s/%d) = ok %v, err %v; want a checkpoint", aggType, partition, ok, err)
	}
	return cp
}

func noCheckpoint(t *testing.T, s store, aggType string, partition int32) {
	t.Helper()
	cp, ok, err := s.Checkpoint(testCtx(t), aggType, partition)
	if err != nil || ok {
		t.Fatalf("Checkpoint(%s/%d) = %+v, ok %v, err %v; want none", aggType, partition, cp, ok, err)
	}
}

func runConformance(t *testing.T, b backend) {
	t.Run("an empty store finds nothing", func(t *testing.T) {
		s := b.open(t)
		ctx := testCtx(t)
		noCheckpoint(t, s, "order", 0)
		if got, ok, err := s.Load(ctx, "order", 0, "a"); err != nil || ok {
			t.Fatalf("Load = %+v, %v, %v; want nothing", got, ok, err)
		}
		for _, ids := range [][]string{nil, {"a", "b"}} {
			m, err := s.LoadMany(ctx, "order", 0, ids)
			if err != nil || m == nil || len(m) != 0 {
				t.Fatalf("LoadMany(%q) = %v, %v; want an empty map", ids, m, err)
			}
		}
		if err := s.Save(ctx, "order", 0, nil, nil); err != nil {
			t.Fatalf("an empty Save: %v", err)
		}
		noCheckpoint(t, s, "order", 0)
	})

	t.Run("leases: claim, write, read, and every way of losing one", func(t *testing.T) {
		s := b.open(t)
		ctx := testCtx(t)
		mustSave(t, s, "order", 0, &Checkpoint{Offset: 7, Stamp: "order/v1"}, snap("old", 3, "O"))
		cp, ok, err := s.Claim(ctx, "order", 0, "E1")
		if err != nil || !ok || cp.Offset != 7 {
			t.Fatalf("Claim = %+v %v %v; want the checkpoint at 7", cp, ok, err)
		}
		l := Lease{Epoch: "E1"}
		l2, err := s.SaveLeased(ctx, "order", 0, l, &Checkpoint{Offset: 9, Stamp: "order/v1"}, []Snapshot{snap("a", 1, "A")})
		if err != nil || l2 != (Lease{Epoch: "E1", Seq: 1}) {
			t.Fatalf("SaveLeased = %+v, %v; want E1:1", l2, err)
		}
		got, err := s.LoadLeased(ctx, "order", 0, l2, []string{"a", "old", "none"})
		if err != nil || len(got) != 2 || got["a"].Version != 1 || got["old"].Version != 3 {
			t.Fatalf("LoadLeased = %v, %v; want a@1 and old@3", got, err)
		}
		// An older Seq of the same epoch is still ours: a write whose
		// answer was lost may have been applied.
		if _, err := s.LoadLeased(ctx, "order", 0, l, nil); err != nil {
			t.Fatalf("LoadLeased with an older Seq: %v", err)
		}
		l3, err := s.SaveLeased(ctx, "order", 0, l, nil, []Snapshot{snap("a", 2, "A2")})
		if err != nil || l3.Seq != 2 {
			t.Fatalf("re-sent SaveLeased = %+v, %v; want Seq 2", l3, err)
		}
		lost := func(what string, err error, found bool) {
			t.Helper()
			var le *LeaseError
			if !errors.Is(err, ErrLeaseLost) || !errors.As(err, &le) || (le.Found != nil) != found {
				t.Fatalf("%s: %v; want a LeaseError (stored lease found: %v)", what, err, found)
			}
		}
		// The store went back in time: it holds fewer writes than we had
		// acknowledged.
		_, err = s.LoadLeased(ctx, "order", 0, Lease{Epoch: "E1", Seq: 5}, []string{"a"})
		lost("LoadLeased after a rollback", err, true)
		_, err = s.SaveLeased(ctx, "order", 0, Lease{Epoch: "E1", Seq: 5}, nil, []Snapshot{snap("a", 9, "A9")})
		lost("SaveLeased after a rollback", err, true)
		// Another owner claims: our writes and reads are refused, theirs work.
		if _, _, err := s.Claim(ctx, "order", 0, "E2"); err != nil {
			t.Fatal(err)
		}
		_, err = s.SaveLeased(ctx, "order", 0, l3, &Checkpoint{Offset: 99}, []Snapshot{snap("a", 9, "A9")})
		lost("SaveLeased of a former owner", err, true)
		_, err = s.LoadLeased(ctx, "order", 0, l3, []string{"a"})
		lost("LoadLeased of a former owner", err, true)
		if got := mustLoad(t, s, "order", 0, "a"); got.Version != 2 {
			t.Fatalf("a former owner's refused save changed a: version %d", got.Version)
		}
		if cp := mustCheckpoint(t, s, "order", 0); cp.Offset != 9 {
			t.Fatalf("a former owner's refused save moved the checkpoint to %d", cp.Offset)
		}
		if _, err := s.SaveLeased(ctx, "order", 0, Lease{Epoch: "E2"}, nil, []Snapshot{snap("b", 0, "B")}); err != nil {
			t.Fatalf("the new owner's save: %v", err)
		}
		// The partition is dropped (as a flush would): the lease is gone.
		if err := s.DropPartition(ctx, "order", 0); err != nil {
			t.Fatal(err)
		}
		_, err = s.LoadLeased(ctx, "order", 0, Lease{Epoch: "E2", Seq: 1}, []string{"b"})
		lost("LoadLeased after a drop", err, false)
		_, err = s.SaveLeased(ctx, "order", 0, Lease{Epoch: "E2", Seq: 1}, &Checkpoint{Offset: 1}, nil)
		lost("SaveLeased after a drop", err, false)
		noCheckpoint(t, s, "order", 0)
		// Claiming an empty partition finds no checkpoint.
		if _, ok, err := s.Claim(ctx, "order", 0, "E3"); err != nil || ok {
			t.Fatalf("Claim of an empty partition: %v %v", ok, err)
		}
		if _, _, err := s.Claim(ctx, "order", 0, ""); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Claim with an empty epoch: %v, want ErrInvalid", err)
		}
	})

	t.Run("a continuing checkpoint is refused once the previous one is gone", func(t *testing.T) {
		s := b.open(t)
		ctx := testCtx(t)
		snap := []Snapshot{{AggregateID: "a", Version: 1, Offset: 5, Stamp: "order/v1", Data: []byte("x")}}
		cont := &Checkpoint{Offset: 6, Stamp: "order/v1", Continues: true}
		// No checkpoint yet: the snapshots are saved, the checkpoint is not.
		if err := s.Save(ctx, "order", 0, cont, snap); !errors.Is(err, ErrCheckpointGone) {
			t.Fatalf("Save continuing nothing: %v, want ErrCheckpointGone", err)
		}
		noCheckpoint(t, s, "order", 0)
		if _, ok, err := s.Load(ctx, "order", 0, "a"); err != nil || !ok {
			t.Fatalf("the snapshots of a refused checkpoint were not saved: %v %v", ok, err)
		}
		// After a plain checkpoint, continuing works.
		if err := s.Save(ctx, "order", 0, &Checkpoint{Offset: 6, Stamp: "order/v1"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Save(ctx, "order", 0, &Checkpoint{Offset: 9, Stamp: "order/v1", Continues: true}, nil); err != nil {
			t.Fatalf("continuing an existing checkpoint: %v", err)
		}
		if cp, ok, err := s.Checkpoint(ctx, "order", 0); err != nil || !ok || cp.Offset != 9 || cp.Continues {
			t.Fatalf("checkpoint %+v %v %v, want offset 9 (Continues is not stored)", cp, ok, err)
		}
	})

	t.Run("saved snapshots and checkpoint load back unchanged", func(t *testing.T) {
		s := b.open(t)
		all := make([]byte, 256*64)
		for i := range all {
			all[i] = byte(i)
		}
		snaps := []Snapshot{
			{AggregateID: "a", Version: 3, Offset: 41, Stamp: "order/v1", Data: []byte(`{"user":"u1","lines":[1,2]}`)},
			{AggregateID: "new", Version: -1, Offset: -1, Stamp: "", Data: nil},
			{AggregateID: "bytes", Version: math.MaxInt64, Offset: math.MaxInt64, Stamp: "order/v2 ünïcode", Data: all},
			{AggregateID: "id:with{braces}*?[x]\\ and ünïcode", Version: 256, Offset: 7, Stamp: "s", Data: []byte{0}},
		}
		cp := Checkpoint{Offset: 42, Stamp: "order/v1", Time: time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.UTC)}
		in := make([]Snapshot, len(snaps))
		for i, sn := range snaps {
			in[i] = sn
			in[i].Data = bytes.Clone(sn.Data)
		}
		mustSave(t, s, "order", 3, &cp, in...)
		for i := range in { // the store must not keep the caller's slices
			for j := range in[i].Data {
				in[i].Data[j] ^= 0xff
			}
		}
		for _, want := range snaps {
			got := mustLoad(t, s, "order", 3, want.AggregateID)
			sameSnapshot(t, got, want)
			if len(got.Data) > 0 {
				got.Data[0] ^= 0xff // nor hand out its own
				sameSnapshot(t, mustLoad(t, s, "order", 3, want.AggregateID), want)
			}
		}
		got := mustCheckpoint(t, s, "order", 3)
		if got.Offset != cp.Offset || got.Stamp != cp.Stamp || !got.Time.Equal(cp.Time) {
			t.Fatalf("Checkpoint = %+v, want %+v", got, cp)
		}

		mustSave(t, s, "order", 4, &Checkpoint{Offset: 0})
		if got := mustCheckpoint(t, s, "order", 4); got.Offset != 0 || got.Stamp != "" || !got.Time.IsZero() {
			t.Fatalf("Checkpoint with zero fields = %+v, want them zero", got)
		}
	})

	t.Run("LoadMany returns only the ids that exist", func(t *testing.T) {
		s := b.open(t)
		a, c := snap("a", 1, "A"), snap("c", 2, "C")
		mustSave(t, s, "order", 0, nil, a, c)
		m, err := s.LoadMany(testCtx(t), "order", 0, []string{"a", "missing", "c", "a"})
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != 2 {
			t.Fatalf("LoadMany found %d snapshots (%v), want a and c", len(m), m)
		}
		sameSnapshot(t, m["a"], a)
		sameSnapshot(t, m["c"], c)
	})

	t.Run("an older snapshot never replaces a newer one", func(t *testing.T) {
		s := b.open(t)
		mustSave(t, s, "order", 0, nil, snap("x", 5, "five"))
		mustSave(t, s, "order", 0, nil, snap("x", 3, "three"), snap("y", 1, "one"))
		sameSnapshot(t, mustLoad(t, s, "order", 0, "x"), snap("x", 5, "five"))
		sameSnapshot(t, mustLoad(t, s, "order", 0, "y"), snap("y", 1, "one")) // the rest of the Save was written

		restamped := snap("x", 5, "five, new schema")
		restamped.Stamp = "order/v2"
		mustSave(t, s, "order", 0, nil, restamped)
		sameSnapshot(t, mustLoad(t, s, "order", 0, "x"), restamped) // an equal version replaces

		// Orderings that a careless byte or float comparison gets wrong.
		steps := []struct{ stored, saved, want int64 }{
			{stored: 256, saved: 255, want: 256},
			{stored: 255, saved: 256, want: 256},
			{stored: 0, saved: -1, want: 0},
			{stored: -1, saved: 0, want: 0},
			{stored: math.MaxInt64, saved: math.MaxInt64 - 1, want: math.MaxInt64},
			{stored: 1<<53 + 1, saved: 1 << 53, want: 1<<53 + 1},
			{stored: math.MinInt64, saved: math.MaxInt64, want: math.MaxInt64},
		}
		for i, st := range steps {
			id := fmt.Sprintf("o%d", i)
			mustSave(t, s, "order", 0, nil, snap(id, st.stored, "stored"))
			mustSave(t, s, "order", 0, nil, snap(id, st.saved, "saved"))
			if got := mustLoad(t, s, "order", 0, id); got.Version != st.want {
				t.Errorf("stored version %d, saved %d: kept %d, want %d", st.stored, st.saved, got.Version, st.want)
			}
		}

		// Several snapshots of one aggregate in one Save: the newest counts,
		// the later one on a tie.
		mustSave(t, s, "order", 0, nil, snap("z", 7, "seven"), snap("z", 6, "six"), snap("w", 2, "first"), snap("w", 2, "second"))
		sameSnapshot(t, mustLoad(t, s, "order", 0, "z"), snap("z", 7, "seven"))
		sameSnapshot(t, mustLoad(t, s, "order", 0, "w"), snap("w", 2, "second"))
	})

	t.Run("the checkpoint never moves backwards", func(t *testing.T) {
		s := b.open(t)
		mustSave(t, s, "order", 0, &Checkpoint{Offset: 100, Stamp: "v1"})
		mustSave(t, s, "order", 0, &Checkpoint{Offset: 50, Stamp: "v1"}, snap("a", 1, "A"))
		if got := mustCheckpoint(t, s, "order", 0); got.Offset != 100 {
			t.Fatalf("checkpoint moved back to %d", got.Offset)
		}
		mustLoad(t, s, "order", 0, "a") // the snapshots of that Save were still written
		mustSave(t, s, "order", 0, &Checkpoint{Offset: 100, Stamp: "v2"})
		if got := mustCheckpoint(t, s, "order", 0); got.Stamp != "v2" {
			t.Fatalf("checkpoint at an equal offset kept stamp %q, want v2", got.Stamp)
		}
		mustSave(t, s, "order", 0, &Checkpoint{Offset: 150, Stamp: "v2"})
		mustSave(t, s, "order", 0, nil, snap("b", 1, "B"))
		if got := mustCheckpoint(t, s, "order", 0); got.Offset != 150 {
			t.Fatalf("checkpoint = %d, want 150", got.Offset)
		}
	})

	t.Run("a save is all or nothing to concurrent readers", func(t *testing.T) {
		s := b.open(t)
		ctx := testCtx(t)
		// A Save larger than Redis's 16 KiB read buffer: a pipelined but
		// non-atomic write would reach Redis in several reads and
		// interleave with the readers' commands.
		const rounds, width = 100, 200
		ids := make([]string, width)
		for i := range ids {
			ids[i] = fmt.Sprintf("agg-%03d", i)
		}
		var done atomic.Bool
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		var reads, midReads atomic.Int64
		// The writer starts once both readers have read, and yields after
		// every Save: on one CPU a Save that never blocks (Memory's) would
		// otherwise run all its rounds before a reader is scheduled.
		var ready sync.WaitGroup
		for range 2 {
			wg.Add(1)
			ready.Add(1)
			go func() {
				defer wg.Done()
				readOnce := sync.OnceFunc(ready.Done)
				defer readOnce() // also when a read fails
				for first := true; first || !done.Load(); first = false {
					cp, ok, err := s.Checkpoint(ctx, "order", 0)
					if err != nil {
						errs <- err
						return
					}
					m, err := s.LoadMany(ctx, "order", 0, ids)
					if err != nil {
						errs <- err
						return
					}
					reads.Add(1)
					readOnce()
					if len(m) != 0 && len(m) != width {
						errs <- fmt.Errorf("saw %d of the %d snapshots one Save wrote", len(m), width)
						return
					}
					var version int64 = -1
					for _, sn := range m {
						if version == -1 {
							version = sn.Version
						}
						if sn.Version != version {
							errs <- fmt.Errorf("saw snapshots of versions %d and %d in one read: half a Save", version, sn.Version)
							return
						}
					}
					if ok && (len(m) == 0 || version < cp.Offset) {
						errs <- fmt.Errorf("saw checkpoint %d but snapshots of version %d (%d found): a checkpoint without its snapshots", cp.Offset, version, len(m))
						return
					}
					if version > 0 && version < rounds {
						midReads.Add(1)
					}
				}
			}()
		}
		ready.Wait()
		for k := int64(1); k <= rounds; k++ {
			runtime.Gosched()
			batch := make([]Snapshot, width)
			for i, id := range ids {
				batch[i] = Snapshot{AggregateID: id, Version: k, Offset: k, Stamp: "v1", Data: bytes.Repeat([]byte{byte(k)}, 256)}
			}
			if err := s.Save(ctx, "order", 0, &Checkpoint{Offset: k, Stamp: "v1"}, batch); err != nil {
				t.Fatalf("Save round %d: %v", k, err)
			}
		}
		done.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if reads.Load() == 0 {
			t.Fatal("the readers read nothing; the test proved nothing")
		}
		t.Logf("%d reads, %d of them while the writer was running", reads.Load(), midReads.Load())
	})

	t.Run("partitions and aggregate types are kept apart", func(t *testing.T) {
		s := b.open(t)
		places := []struct {
			aggType   string
			partition int32
		}{{"order", 0}, {"order", 1}, {"order", 13}, {"order.1", 3}, {"invoice", 0}}
		for i, p := range places {
			mustSave(t, s, p.aggType, p.partition, &Checkpoint{Offset: int64(100 + i)}, snap("x", int64(i), p.aggType))
		}
		for i, p := range places {
			if got := mustLoad(t, s, p.aggType, p.partition, "x"); got.Version != int64(i) {
				t.Errorf("%s/%d holds version %d, want %d", p.aggType, p.partition, got.Version, i)
			}
			if got := mustCheckpoint(t, s, p.aggType, p.partition); got.Offset != int64(100+i) {
				t.Errorf("%s/%d checkpoint %d, want %d", p.aggType, p.partition, got.Offset, 100+i)
			}
		}
	})

	t.Run("DropPartition removes one partition and nothing else", func(t *testing.T) {
		s := b.open(t)
		ctx := testCtx(t)
		big := make([]Snapshot, 2500) // more than one SCAN step
		ids := make([]string, len(big))
		for i := range big {
			ids[i] = fmt.Sprintf("id-%d", i)
			big[i] = snap(ids[i], 1, "d")
		}
		mustSave(t, s, "order", 1, &Checkpoint{Offset: 500}, big...)
		for _, p := range []int32{0, 10} {
			mustSave(t, s, "order", p, &Checkpoint{Offset: 7}, snap("id-1", 1, "keep"))
		}
		mustSave(t, s, "order.1", 0, &Checkpoint{Offset: 7}, snap("id-1", 1, "keep"))

		if err := s.DropPartition(ctx, "order", 1); err != nil {
			t.Fatal(err)
		}
		noCheckpoint(t, s, "order", 1)
		if m, err := s.LoadMany(ctx, "order", 1, ids); err != nil || len(m) != 0 {
			t.Fatalf("after DropPartition LoadMany found %d snapshots, err %v; want none", len(m), err)
		}
		for _, p := range []struct {
			aggType   string
			partition int32
		}{{"order", 0}, {"order", 10}, {"order.1", 0}} {
			sameSnapshot(t, mustLoad(t, s, p.aggType, p.partition, "id-1"), snap("id-1", 1, "keep"))
			mustCheckpoint(t, s, p.aggType, p.partition)
		}

		if err := s.DropPartition(ctx, "order", 99); err != nil {
			t.Fatalf("dropping an empty partition: %v", err)
		}
		// A dropped partition starts over: a lower checkpoint is accepted.
		mustSave(t, s, "order", 1, &Checkpoint{Offset: 3}, snap("id-1", 0, "again"))
		if got := mustCheckpoint(t, s, "order", 1); got.Offset != 3 {
			t.Fatalf("checkpoint after drop = %d, want 3", got.Offset)
		}
	})

	t.Run("invalid arguments are refused and nothing is written", func(t *testing.T) {
		s := b.open(t)
		ctx := testCtx(t)
		calls := []struct {
			name string
			call func() error
		}{
			{"empty aggregate type", func() error { _, _, err := s.Checkpoint(ctx, "", 0); return err }},
			{"aggregate type with an opening brace", func() error { _, _, err := s.Load(ctx, "or{der", 0, "a"); return err }},
			{"aggregate type with a closing brace", func() error { _, err := s.LoadMany(ctx, "or}der", 0, []string{"a"}); return err }},
			{"negative partition", func() error { return s.DropPartition(ctx, "order", -1) }},
			{"empty id in Load", func() error { _, _, err := s.Load(ctx, "order", 0, ""); return err }},
			{"empty id in LoadMany", func() error { _, err := s.LoadMany(ctx, "order", 0, []string{"a", ""}); return err }},
			{"empty AggregateID in Save", func() error {
				return s.Save(ctx, "order", 0, &Checkpoint{Offset: 9}, []Snapshot{snap("a", 1, "A"), snap("", 1, "B")})
			}},
		}
		for _, c := range calls {
			if err := c.call(); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", c.name, err)
			}
		}
		noCheckpoint(t, s, "order", 0)
		if _, ok, err := s.Load(ctx, "order", 0, "a"); ok || err != nil {
			t.Fatalf("a refused Save wrote a snapshot (ok %v, err %v)", ok, err)
		}
	})

	t.Run("an ended context fails every call", func(t *testing.T) {
		s := b.open(t)
		mustSave(t, s, "order", 0, &Checkpoint{Offset: 1}, snap("a", 1, "A"))
		cancelled, cancel := context.WithCancel(context.Background())
		cancel()
		expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel2()
		for _, c := range []struct {
			ctx  context.Context
			want error
		}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
			ctx := c.ctx
			calls := map[string]func() error{
				"Checkpoint":    func() error { _, _, err := s.Checkpoint(ctx, "order", 0); return err },
				"Load":          func() error { _, _, err := s.Load(ctx, "order", 0, "a"); return err },
				"LoadMany":      func() error { _, err := s.LoadMany(ctx, "order", 0, []string{"a"}); return err },
				"Save":          func() error { return s.Save(ctx, "order", 0, &Checkpoint{Offset: 9}, []Snapshot{snap("a", 9, "A9")}) },
				"DropPartition": func() error { return s.DropPartition(ctx, "order", 0) },
			}
			for name, call := range calls {
				if err := call(); !errors.Is(err, c.want) {
					t.Errorf("%s with an ended context: err = %v, want %v", name, err, c.want)
				}
			}
		}
		sameSnapshot(t, mustLoad(t, s, "order", 0, "a"), snap("a", 1, "A"))
		if got := mustCheckpoint(t, s, "order", 0); got.Offset != 1 {
			t.Fatalf("a cancelled Save moved the checkpoint to %d", got.Offset)
		}
	})

	t.Run("a closed store refuses every call", func(t *testing.T) {
		s := b.open(t)
		ctx := testCtx(t)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		calls := map[string]func() error{
			"Checkpoint":    func() error { _, _, err := s.Checkpoint(ctx, "order", 0); return err },
			"Load":          func() error { _, _, err := s.Load(ctx, "order", 0, "a"); return err },
			"LoadMany":      func() error { _, err := s.LoadMany(ctx, "order", 0, []string{"a"}); return err },
			"Save":          func() error { return s.Save(ctx, "order", 0, nil, []Snapshot{snap("a", 1, "A")}) },
			"DropPartition": func() error { return s.DropPartition(ctx, "order", 0) },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close: err = %v, want ErrClosed", name, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})

	t.Run("a corrupt stored value is ErrCorrupt, and a Save repairs it", func(t *testing.T) {
		if b.corrupt == nil {
			t.Skip("this store cannot hold corrupt values")
		}
		good := encodeSnapshot(snap("x", 4, "data"))
		flipped := bytes.Clone(good)
		flipped[len(flipped)-6] ^= 0x01
		cases := []struct {
			name string
			raw  []byte
		}{
			{"text", []byte("not a snapshot")},
			{"empty value", []byte{}},
			{"truncated", good[:len(good)-1]},
			{"one bit flipped", flipped},
			{"a checkpoint where a snapshot belongs", encodeCheckpoint(Checkpoint{Offset: 4})},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				s := b.open(t)
				ctx := testCtx(t)
				mustSave(t, s, "order", 0, nil, snap("x", 1, "X"), snap("ok", 1, "fine"))
				b.corrupt(t, s, "order", 0, "x", c.raw)

				_, ok, err := s.Load(ctx, "order", 0, "x")
				var ce *CorruptError
				if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.Key == "" || ok {
					t.Fatalf("Load of a corrupt value: ok %v, err %v; want a *CorruptError", ok, err)
				}
				m, err := s.LoadMany(ctx, "order", 0, []string{"ok", "x"})
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("LoadMany with a corrupt value: err %v, want ErrCorrupt", err)
				}
				if _, found := m["ok"]; !found || len(m) != 1 {
					t.Fatalf("LoadMany with a corrupt value returned %v; want the intact snapshot only", m)
				}
				// Newer than the version the damaged header may still claim.
				mustSave(t, s, "order", 0, nil, snap("x", 5, "repaired"))
				sameSnapshot(t, mustLoad(t, s, "order", 0, "x"), snap("x", 5, "repaired"))
			})
		}
		t.Run("checkpoint", func(t *testing.T) {
			s := b.open(t)
			mustSave(t, s, "order", 0, &Checkpoint{Offset: 10})
			b.corrupt(t, s, "order", 0, "", []byte("garbage"))
			if _, ok, err := s.Checkpoint(testCtx(t), "order", 0); !errors.Is(err, ErrCorrupt) || ok {
				t.Fatalf("Checkpoint of a corrupt value: ok %v, err %v; want ErrCorrupt", ok, err)
			}
			mustSave(t, s, "order", 0, &Checkpoint{Offset: 11})
			if got := mustCheckpoint(t, s, "order", 0); got.Offset != 11 {
				t.Fatalf("repaired checkpoint = %d, want 11", got.Offset)
			}
		})
	})

	t.Run("an outage fails calls within their deadline and a restart heals them", func(t *testing.T) {
		if b.outage == nil {
			t.Skip("this store has no server to stop")
		}
		s, stop, restart := b.outage(t)
		mustSave(t, s, "order", 0, &Checkpoint{Offset: 1}, snap("a", 1, "A"))
		stop()
		const deadline = time.Second
		calls := map[string]func(ctx context.Context) error{
			"Checkpoint":    func(ctx context.Context) error { _, _, err := s.Checkpoint(ctx, "order", 0); return err },
			"Load":          func(ctx context.Context) error { _, _, err := s.Load(ctx, "order", 0, "a"); return err },
			"LoadMany":      func(ctx context.Context) error { _, err := s.LoadMany(ctx, "order", 0, []string{"a"}); return err },
			"Save":          func(ctx context.Context) error { return s.Save(ctx, "order", 0, nil, []Snapshot{snap("a", 2, "A2")}) },
			"DropPartition": func(ctx context.Context) error { return s.DropPartition(ctx, "order", 0) },
		}
		for name, call := range calls {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			start := time.Now()
			err := call(ctx)
			took := time.Since(start)
			cancel()
			if err == nil {
				t.Errorf("%s succeeded with the server down", name)
			}
			if took > deadline+time.Second {
				t.Errorf("%s took %v with the server down; the deadline was %v", name, took, deadline)
			}
		}

		restart()
		// A client may fail fast for a moment after an outage (go-redis
		// probes a refused address once a second before dialling again),
		// so the first Save gets a bounded time to succeed.
		heal := time.Now()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			err := s.Save(ctx, "order", 0, &Checkpoint{Offset: 5}, []Snapshot{snap("b", 1, "B")})
			cancel()
			if err == nil {
				break
			}
			if time.Since(heal) > 10*time.Second {
				t.Fatalf("Save still fails 10s after the restart: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("the store worked again %v after the restart", time.Since(heal).Round(time.Millisecond))
		sameSnapshot(t, mustLoad(t, s, "order", 0, "b"), snap("b", 1, "B"))
		if got := mustCheckpoint(t, s, "order", 0); got.Offset != 5 {
			t.Fatalf("checkpoint after restart = %d, want 5", got.Offset)
		}
	})
}
