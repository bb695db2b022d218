package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/snapshots"
)

// aggState owns the aggregates of one partition: the cache, which of them
// are newer than their stored snapshot, eviction, loading on a miss,
// checkpoints, restore, and the partition's lease in the snapshot store. No
// other code reads the snapshot store for a partition or decides that an
// aggregate is new.
//
// # Invariants
//
//  1. Every aggregate get hands out equals the replay of its committed
//     events, plus the changes of the open transaction.
//  2. An aggregate leaves memory only once the store acknowledged, under
//     the current lease, a snapshot of its current version (entry.stored).
//     Handing a snapshot to the writer is not enough.
//  3. The store is believed only under the lease: the partition is claimed
//     (a new epoch) before a restore reads its checkpoint, and every later
//     read checks, at the same instant, that the lease still has our epoch
//     and at least the writes we saw acknowledged; every write is refused
//     otherwise. A flush, a restart without or with older data, a failover
//     to a lagging replica, another owner's claim and a delayed write of a
//     former owner all fail that check, before anything read is used.
//  4. An aggregate found neither in memory nor in the store is new only when
//     that answer is covered: either every aggregate of the partition is in
//     memory (complete: a full replay and no eviction since), or the answer
//     came under the lease, which was taken together with a checkpoint that
//     promises snapshots of every aggregate with events below it, and every
//     aggregate evicted since was acknowledged (2).
//  5. A checkpoint at offset O is handed to the writer together with the
//     snapshot of every aggregate whose committed version is newer than its
//     acknowledged snapshot; the writer stores them in order, so the
//     checkpoint is never stored before the snapshots it relies on.
//  6. Restore never skips a stored event: one that cannot be decoded or
//     applied stops the partition (errStopped).
//  7. A restore from a checkpoint defers the events after it (the tail):
//     the tail events of an aggregate not in memory wait, decoded, in
//     pending, and no snapshot is read for them. load applies them to the
//     aggregate's snapshot (or new aggregate) before anything uses it, with
//     the rules of replayOne; a version gap or an event that cannot be
//     applied is errUntrusted, so the partition is restored with a full
//     replay, which stops at such an event (6). An aggregate is never both
//     in memory and pending, so get hands out nothing without its deferred
//     events (1). Until it is loaded, an aggregate's committed state is its
//     stored snapshot plus its pending events, so a checkpoint is written
//     only once no aggregate is pending (5); between transactions the main
//     loop loads them a batch per call (checkpointStep) until then.
//
// # Threads
//
// One goroutine at a time uses an aggState: its restore, then the worker of
// a batch, then the main loop between transactions. The writer goroutine
// only calls ack, lose and leaseForWrite, which take mu.
type aggState struct {
	kind      aggregates.Kind
	part      int32
	store     SnapshotStore // nil: every aggregate stays in memory
	writer    *writer
	cacheSize int
	log       *slog.Logger
	stats     *counters
	epoch     string // this state's claim on the store; guarded by mu
	stamp     string // the kind's state stamp, which snapshots carry
	cpStamp   string // what checkpoints carry: the state stamp and the events topic's id
	// retries are the waits before retrying a store operation that failed
	// for another reason than a lost lease: a blip of the store should not
	// cost an aborted transaction and restores.
	retries []time.Duration

	cache    *cache
	complete atomic.Bool          // every aggregate of the partition is in the cache
	unsaved  map[string]struct{}  // committed versions newer than their stored snapshot
	open     map[string]openState // changed in the open transaction: its new state record
	// pending is the deferred tail of a restore from a checkpoint: for each
	// aggregate not in memory, its events after the checkpoint, in offset
	// order, applied by load when the aggregate is first used (invariant 7).
	pending map[string][]decodedEvent
	// materializeStep is the most deferred aggregates one checkpointStep
	// loads: materializeBatch, lower in tests.
	materializeStep int
	produced        []producedEvent // events produced in the open transaction

	nextOffset int64 // events offset after the last committed event
	// expectNext is where our next event record must land in the events
	// partition: its end after the restore, then two past the last event
	// of each committed transaction (one offset for its commit marker).
	// Anything else means someone else wrote to the partition.
	expectNext    int64
	eventsSinceCP int
	lastCP        time.Time
	closed        atomic.Bool
	obs           Observer
	// gauges mirror, for Status, what only the owning goroutine may read.
	gauges struct {
		cached, sinceCP, lastCP atomic.Int64 // lastCP in Unix nanoseconds
	}

	mu      sync.Mutex // guards the fields below
	claimed bool
	lease   snapshots.Lease
	acks    []ack
	lost    error // the lease was lost: the store cannot be trusted any more
}

// ack is the writer's report of one stored save.
type ack struct {
	versions map[string]int64
}

type producedEvent struct {
	id  string
	rec *kgo.Record // its Offset is known once the transaction committed
}

// newAggState returns an empty state for a partition, with an epoch of its
// own.
func newAggState(kind aggregates.Kind, part int32, store SnapshotStore, w *writer, cacheSize int, log *slog.Logger, stats *counters, topicID string) *aggState {
	s := &aggState{kind: kind, part: part, store: store, writer: w, cacheSize: cacheSize, log: log, stats: stats,
		stamp: kind.StateStamp(), cpStamp: kind.StateStamp() + " topic " + topicID, retries: []time.Duration{100 * time.Millisecond, 400 * time.Millisecond},
		epoch: ulid.Make().String(), cache: newCache(), unsaved: map[string]struct{}{},
		open: map[string]openState{}, pending: map[string][]decodedEvent{}, materializeStep: materializeBatch, lastCP: time.Now(), obs: nopObserver{}}
	s.complete.Store(true)
	return s
}

// errStoreLost wraps the reason the snapshot store cannot be trusted for
// the partition: it is restored from Kafka.
var errStoreLost = errors.New("snapshot store cannot be trusted for this partition")

// get returns the aggregate id: from memory, from the store, or new.
func (s *aggState) get(ctx context.Context, id string) (*entry, error) {
	if e := s.cache.get(id); e != nil {
		return e, nil // counted by lookup
	}
	s.obs.CacheLookup(s.kind.Name(), false)
	if err := s.load(ctx, []string{id}); err != nil {
		return nil, err
	}
	return s.cache.get(id), nil
}

// lookup brings the aggregates a batch of commands addresses into memory
// with one store read, counting each as a cache hit or miss.
func (s *aggState) lookup(ctx context.Context, ids []string) error {
	missing := s.missing(ids)
	for range len(ids) - len(missing) {
		s.obs.CacheLookup(s.kind.Name(), true)
	}
	for range missing {
		s.obs.CacheLookup(s.kind.Name(), false)
	}
	return s.load(ctx, missing)
}

// prefetch brings the aggregates ids into memory with one store read.
func (s *aggState) prefetch(ctx context.Context, ids []string) error {
	return s.load(ctx, s.missing(ids))
}

// missing returns the ids that are not in memory.
func (s *aggState) missing(ids []string) []string {
	var missing []string
	for _, id := range ids {
		if s.cache.entries[id] == nil {
			missing = append(missing, id)
		}
	}
	return missing
}

// load brings ids, none of them in memory, into the cache: new when the
// partition is complete, else from the store under the lease (invariant 4).
func (s *aggState) load(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	if s.store == nil || s.complete.Load() {
		for _, id := range ids {
			if err := s.install(s.kind.NewAggregate(id), -1, -1); err != nil {
				return err
			}
		}
		return nil
	}
	lease, ok, err := s.currentLease()
	if err != nil {
		return err
	}
	if !ok {
		// Only a complete partition runs without a claim.
		return fmt.Errorf("%w: partition %d is not claimed and not complete", errStoreLost, s.part)
	}
	s.stats.snapshotLoads.Add(int64(len(ids)))
	var snaps map[string]snapshots.Snapshot
	err = s.retry(ctx, "load", func() error {
		snaps, err = s.store.LoadLeased(ctx, s.kind.Name(), s.part, lease, ids)
		return err
	})
	if errors.Is(err, snapshots.ErrLeaseLost) {
		s.lose(err)
		return fmt.Errorf("%w: %w", errStoreLost, err)
	}
	if errors.Is(err, snapshots.ErrCorrupt) {
		return fmt.Errorf("%w: %w", errUntrusted, err)
	}
	if err != nil {
		s.obs.SnapshotStoreError("load")
		return fmt.Errorf("loading %d snapshots: %w", len(ids), err)
	}
	for _, id := range ids {
		sn, ok := snaps[id]
		if !ok {
			if err := s.install(s.kind.NewAggregate(id), -1, -1); err != nil {
				return err
			}
			continue
		}
		a, err := s.fromSnapshot(sn)
		if err != nil {
			return err
		}
		if err := s.install(a, sn.Offset, sn.Version); err != nil {
			return err
		}
	}
	return nil
}

// install puts a loaded aggregate a, whose stored snapshot has version
// stored (-1: none) and offset offset, into the cache, after applying the
// events the restore deferred for it (invariant 7), with the rules of
// replayOne: an event the snapshot contains is skipped, a version gap means
// the snapshot is missing or stale (errUntrusted). An event that cannot be
// applied is errUntrusted too: the full replay that follows stops the
// partition at it with a *StoppedError (invariant 6). On an error nothing
// changes: a stays out of the cache and its events stay deferred.
func (s *aggState) install(a aggregates.Aggregate, offset, stored int64) error {
	id := a.ID()
	evs, deferred := s.pending[id]
	applied := false
	for i := range evs {
		d := &evs[i]
		if d.e.Version <= a.Version() {
			continue // in the snapshot already
		}
		if d.e.Version != a.Version()+1 {
			return fmt.Errorf("%w: aggregate %q is at version %d but its next event after the checkpoint is version %d (offset %d): its snapshot is missing or stale",
				errUntrusted, id, a.Version(), d.e.Version, d.offset)
		}
		if err := a.Apply(&d.e); err != nil && !errors.Is(err, aggregates.ErrInvariantViolated) {
			return fmt.Errorf("%w: event %s@%d (offset %d) after the checkpoint cannot be applied: %w", errUntrusted, id, d.e.Version, d.offset, err)
		}
		offset, applied = d.offset, true
	}
	s.cache.put(a, offset).stored = stored
	if applied {
		// Newer than its stored snapshot, as replayOne would have left it.
		s.unsaved[id] = struct{}{}
	}
	if deferred {
		delete(s.pending, id)
		s.stats.deferredLoaded.Add(1)
		if len(s.pending) == 0 {
			s.pending = map[string][]decodedEvent{} // a map does not shrink
		}
	}
	return nil
}

// fromSnapshot decodes a stored snapshot, refusing one of another schema.
func (s *aggState) fromSnapshot(sn snapshots.Snapshot) (aggregates.Aggregate, error) {
	if sn.Stamp != s.stamp {
		return nil, fmt.Errorf("%w: snapshot of %q has stamp %q, the running code writes %q", errUntrusted, sn.AggregateID, sn.Stamp, s.stamp)
	}
	a := s.kind.NewAggregate(sn.AggregateID)
	if err := a.UnmarshalSnapshot(sn.Data); err != nil {
		return nil, fmt.Errorf("%w: %w", errUntrusted, err)
	}
	return a, nil
}

// snapshotOf encodes a cached aggregate for the store.
func (s *aggState) snapshotOf(e *entry) (snapshots.Snapshot, error) {
	data, err := e.agg.MarshalSnapshot()
	if err != nil {
		return snapshots.Snapshot{}, fmt.Errorf("encoding the snapshot of %q: %w", e.agg.ID(), err)
	}
	return snapshots.Snapshot{AggregateID: e.agg.ID(), Version: e.agg.Version(), Offset: e.offset,
		Stamp: s.stamp, Data: data}, nil
}

// openState is the state record an aggregate changed by the open
// transaction gets when the transaction ends: the state after its last
// event, and that event's record time.
type openState struct {
	state []byte
	at    time.Time
}

// changed records that the open transaction changed aggregate id, produced
// an event record for it, and leads to state (its encoded state record).
func (s *aggState) changed(id string, rec *kgo.Record, state []byte) {
	s.open[id] = openState{state: state, at: rec.Timestamp}
	s.produced = append(s.produced, producedEvent{id: id, rec: rec})
}

// committed is called once the transaction that touched the partition
// committed: its events now have offsets and are history. It returns an
// error when they did not land where this instance's own writes would put
// them: another writer appended to the events partition.
func (s *aggState) committed() error {
	var foreign error
	for _, pe := range s.produced {
		off := pe.rec.Offset
		if off != s.expectNext && foreign == nil {
			foreign = fmt.Errorf("event %s@%d landed at offset %d of the events partition, where this instance expected %d: something else writes to it (another consumer group, a processor that should have been fenced, a producer outside Chronicle)",
				pe.id, off, off, s.expectNext)
		}
		s.expectNext = off + 1
		if e := s.cache.entries[pe.id]; e != nil && off > e.offset {
			e.offset = off
		}
		s.nextOffset = max(s.nextOffset, off+1)
		s.unsaved[pe.id] = struct{}{}
		s.eventsSinceCP++
	}
	if len(s.produced) > 0 {
		s.expectNext++ // the commit marker
	}
	s.gauges.sinceCP.Store(int64(s.eventsSinceCP))
	s.gauges.cached.Store(int64(s.cache.len()))
	clear(s.produced)
	s.produced = s.produced[:0]
	clear(s.open)
	return foreign
}

// applyAcks marks the snapshots the writer stored since the last call.
func (s *aggState) applyAcks() {
	s.mu.Lock()
	acks := s.acks
	s.acks = nil
	s.mu.Unlock()
	for _, a := range acks {
		for id, v := range a.versions {
			e := s.cache.entries[id]
			if e == nil {
				continue
			}
			e.stored = max(e.stored, v)
			if e.stored >= e.agg.Version() {
				delete(s.unsaved, id)
			}
		}
	}
}

// evict shrinks the cache to its size, removing only aggregates whose
// current version is stored (invariant 2); older ones with newer versions
// are handed to the writer, to be evicted once it acknowledges them.
func (s *aggState) evict() {
	if s.store == nil || s.cache.len() <= s.cacheSize || s.lostErr() != nil {
		return
	}
	s.applyAcks()
	over := s.cache.len() - s.cacheSize
	var snaps []snapshots.Snapshot
	budget := 2*over + 64
	for el := s.cache.order.Back(); el != nil && over > 0 && budget > 0; budget-- {
		prev := el.Prev()
		id := el.Value.(string)
		e := s.cache.entries[id]
		if _, busy := s.open[id]; !busy {
			if e.stored >= e.agg.Version() {
				s.cache.remove(id)
				s.complete.Store(false)
				s.stats.evictions.Add(1)
				s.obs.Evicted(s.kind.Name(), 1)
				over--
			} else if e.queued < e.agg.Version() {
				sn, err := s.snapshotOf(e)
				if err != nil {
					s.log.Error("keeping an aggregate in memory: its snapshot cannot be encoded", "aggregate", id, "err", err)
				} else {
					snaps = append(snaps, sn)
					e.queued = e.agg.Version()
				}
			}
		}
		el = prev
	}
	if len(snaps) > 0 {
		s.writer.submit(s, nil, snaps)
	}
	s.gauges.cached.Store(int64(s.cache.len()))
}

// checkpoint hands the writer the snapshot of every aggregate newer than
// its stored snapshot and a checkpoint at the end of the committed events
// (invariant 5). Call it only when no transaction is open on the partition.
func (s *aggState) checkpoint() { s.checkpointUpTo(context.Background(), 0) }

// checkpointStep is checkpoint for the main loop between transactions:
// while a restore's deferred tail is still to be loaded, each call loads
// at most materializeStep more of its aggregates (one store read) and
// leaves the checkpoint to a later call, which the checkpoint policy, still
// due, makes at the next transaction's end. No call holds the main loop,
// and every partition's commands, for the whole tail.
func (s *aggState) checkpointStep() { s.checkpointUpTo(context.Background(), s.materializeStep) }

// checkpointWithin is checkpoint whose loads of deferred aggregates (see
// materialize) end with ctx: a shutdown bounds them by its timeout.
func (s *aggState) checkpointWithin(ctx context.Context) { s.checkpointUpTo(ctx, 0) }

// checkpointUpTo checkpoints once at most limit deferred aggregates (0: all
// of them) were enough to load the restore's whole deferred tail.
func (s *aggState) checkpointUpTo(ctx context.Context, limit int) {
	if s.store == nil || len(s.open) > 0 || s.closed.Load() || s.lostErr() != nil {
		return
	}
	if !s.materialize(ctx, limit) {
		return
	}
	s.applyAcks()
	snaps := make([]snapshots.Snapshot, 0, len(s.unsaved))
	queued := make([]*entry, 0, len(s.unsaved))
	for id := range s.unsaved {
		e := s.cache.entries[id]
		if e == nil || e.stored >= e.agg.Version() {
			delete(s.unsaved, id)
			continue
		}
		sn, err := s.snapshotOf(e)
		if err != nil {
			s.log.Error("no checkpoint this time: a snapshot cannot be encoded", "aggregate", id, "err", err)
			return
		}
		snaps = append(snaps, sn)
		queued = append(queued, e)
	}
	cp := &snapshots.Checkpoint{Offset: s.nextOffset, Stamp: s.cpStamp, Time: time.Now()}
	s.writer.submit(s, cp, snaps)
	for _, e := range queued {
		e.queued = e.agg.Version()
	}
	s.eventsSinceCP = 0
	s.lastCP = time.Now()
	s.gauges.sinceCP.Store(0)
}

// materializeBatch is how many deferred aggregates materialize loads with
// one store read, and materializeTimeout bounds all its reads: the main
// loop has no context to hand a checkpoint; a shutdown's is shorter still.
const (
	materializeBatch   = 512
	materializeTimeout = 10 * time.Second
)

// materialize brings aggregates with deferred events into memory, at most
// limit of them (0: all), so that a checkpoint can promise their snapshots
// (invariants 5 and 7), and reports whether the checkpoint may go on: no
// deferred aggregate is left. A lost lease is recorded (lose); an untrusted
// snapshot too (distrust), so the partition is restored with a full
// replay; any other store error only skips this checkpoint: it is tried
// again at the next due time.
func (s *aggState) materialize(ctx context.Context, limit int) bool {
	if len(s.pending) == 0 {
		return true
	}
	ids := make([]string, 0, len(s.pending))
	for id := range s.pending {
		ids = append(ids, id)
		if len(ids) == limit {
			break
		}
	}
	rest := len(s.pending) - len(ids) // left for later calls
	ctx, cancel := context.WithTimeout(ctx, materializeTimeout)
	defer cancel()
	for len(ids) > 0 {
		n := min(len(ids), materializeBatch)
		err := s.load(ctx, ids[:n])
		ids = ids[n:]
		switch {
		case err == nil:
			continue
		case errors.Is(err, errUntrusted):
			s.log.Warn("an aggregate of the checkpoint restore's tail cannot be loaded; the partition is restored with a full replay",
				"aggregate_type", s.kind.Name(), "partition", s.part, "err", err)
			s.distrust(err)
		case errors.Is(err, errStoreLost):
			s.lose(err) // load recorded a lost lease already; this covers the rest
		default:
			s.log.Warn("no checkpoint this time: the aggregates of the restore's tail cannot be loaded from the snapshot store; retried at the next checkpoint",
				"aggregate_type", s.kind.Name(), "partition", s.part, "deferred", len(s.pending), "err", err)
			s.lastCP = time.Now() // the next try waits an interval
		}
		return false
	}
	return rest == 0
}

// checkpointDue reports whether the checkpoint policy asks for one now.
func (s *aggState) checkpointDue(events int, interval time.Duration) bool {
	return s.store != nil && (s.eventsSinceCP >= events ||
		((len(s.unsaved) > 0 || len(s.pending) > 0) && time.Since(s.lastCP) >= interval))
}

// currentLease returns the lease reads must present; ok is false while the
// partition is not claimed. It fails once the lease was lost.
func (s *aggState) currentLease() (snapshots.Lease, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost != nil {
		return snapshots.Lease{}, false, fmt.Errorf("%w: %w", errStoreLost, s.lost)
	}
	return s.lease, s.claimed, nil
}

// leaseForWrite returns the lease the writer saves under, claiming the
// partition first if the restore could not (the store was down then). Only
// a complete, open state claims late: all its aggregates are in memory and
// unsaved, so the store's earlier content does not matter.
func (s *aggState) leaseForWrite(ctx context.Context) (snapshots.Lease, error) {
	l, ok, err := s.currentLease()
	if err != nil || ok {
		return l, err
	}
	s.mu.Lock()
	epoch := s.epoch
	s.mu.Unlock()
	if !s.complete.Load() || s.closed.Load() {
		return snapshots.Lease{}, fmt.Errorf("%w: partition %d was never claimed", errStoreLost, s.part)
	}
	if err := s.claimEmpty(ctx, epoch); err != nil {
		return snapshots.Lease{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.epoch != epoch || s.claimed {
		// A restore started meanwhile and claims for itself.
		return snapshots.Lease{}, fmt.Errorf("%w: partition %d is being restored", errStoreLost, s.part)
	}
	s.claimed, s.lease = true, snapshots.Lease{Epoch: epoch}
	return s.lease, nil
}

// claimEmpty claims the partition under epoch and empties it: a state
// whose aggregates all come from a full replay must find nothing of another
// history in the store (a recreated topic, another schema, a stale or
// corrupt snapshot). Dropping removes the lease too, hence the second
// claim; a writer of another owner is refused throughout.
func (s *aggState) claimEmpty(ctx context.Context, epoch string) error {
	err := s.retry(ctx, "claim", func() error {
		_, _, err := s.store.Claim(ctx, s.kind.Name(), s.part, epoch)
		return err
	})
	if err != nil && !errors.Is(err, snapshots.ErrCorrupt) {
		s.obs.SnapshotStoreError("claim")
		return err
	}
	err = s.retry(ctx, "drop", func() error { return s.store.DropPartition(ctx, s.kind.Name(), s.part) })
	if err != nil {
		s.obs.SnapshotStoreError("drop")
		return err
	}
	err = s.retry(ctx, "claim", func() error {
		_, _, err := s.store.Claim(ctx, s.kind.Name(), s.part, epoch)
		return err
	})
	if err != nil && !errors.Is(err, snapshots.ErrCorrupt) {
		s.obs.SnapshotStoreError("claim")
	}
	return err
}

// retry runs fn, store operation op, and again after each of s.retries
// while it fails for another reason than a lost lease or corrupt data,
// reporting each retry to the observer.
func (s *aggState) retry(ctx context.Context, op string, fn func() error) error {
	var err error
	for i := 0; i <= len(s.retries); i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(s.retries[i-1]):
			}
			s.obs.SnapshotStoreRetry(op)
		}
		if err = fn(); err == nil || errors.Is(err, snapshots.ErrLeaseLost) || errors.Is(err, snapshots.ErrCorrupt) {
			return err
		}
	}
	return err
}

// ack records a stored save (called by the writer).
func (s *aggState) ack(l snapshots.Lease, snaps []snapshots.Snapshot) {
	versions := make(map[string]int64, len(snaps))
	for _, sn := range snaps {
		versions[sn.AggregateID] = sn.Version
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.Epoch != s.epoch {
		return // a save of an earlier restore attempt: says nothing about this one
	}
	if l.Seq > s.lease.Seq {
		s.lease = l
	}
	s.acks = append(s.acks, ack{versions: versions})
}

// lose records that the lease was lost: nothing more is read from or
// written to the store for this partition, which must be restored.
func (s *aggState) lose(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost == nil {
		s.lost = err
		s.obs.LeaseLost(s.kind.Name(), leaseLostReason(err, s.closed.Load()))
	}
}

// distrust records that the store's content cannot be trusted for the
// partition (err wraps errUntrusted), found outside a transaction: like a
// lost lease, nothing more is read from or written to the store, and the
// partition is restored, with a full replay since err is errUntrusted.
func (s *aggState) distrust(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lost == nil {
		s.lost = err
	}
}

// lostErr returns why the store cannot be trusted any more, or nil.
func (s *aggState) lostErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}
