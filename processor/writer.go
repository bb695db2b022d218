package processor

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/chronicle-es/chronicle/snapshots"
)

// SnapshotStore keeps aggregate snapshots and per-partition checkpoints so a
// restore replays only recent events. snapshots.Redis and snapshots.Memory
// implement it. All methods may be called concurrently.
//
// The processor reads and writes a partition only under a lease it claimed
// (see snapshots.Lease): Claim must replace the lease and return the
// checkpoint at one instant; LoadLeased must read the lease and the
// snapshots at one instant and refuse with snapshots.ErrLeaseLost unless
// the lease is the caller's; SaveLeased must write its snapshots and
// checkpoint atomically, only under the caller's lease, never replacing a
// snapshot by an older version nor moving the checkpoint back.
type SnapshotStore interface {
	Claim(ctx context.Context, aggType string, partition int32, epoch string) (snapshots.Checkpoint, bool, error)
	LoadLeased(ctx context.Context, aggType string, partition int32, lease snapshots.Lease, ids []string) (map[string]snapshots.Snapshot, error)
	SaveLeased(ctx context.Context, aggType string, partition int32, lease snapshots.Lease, cp *snapshots.Checkpoint, snaps []snapshots.Snapshot) (snapshots.Lease, error)
	// DropPartition deletes the partition's lease, checkpoint and
	// snapshots: a full replay starts from an empty partition, so nothing
	// of an earlier history (a recreated topic, another state schema)
	// survives it.
	DropPartition(ctx context.Context, aggType string, partition int32) error
}

// saveBatch bounds the snapshots of one SaveLeased by default: Redis runs
// nothing else while the save script runs.
const saveBatch = 1000

// writeJob is what the writer has to save for one partition: snapshots, and
// possibly a checkpoint that relies on them.
type writeJob struct {
	st    *aggState
	cp    *snapshots.Checkpoint
	snaps map[string]snapshots.Snapshot
}

// writer saves snapshots and checkpoints off the command path, one
// goroutine for the whole processor, so the saves of one partition happen
// in the order they were handed over. Jobs of one partition merge while
// they wait, so an outage of the store costs bounded memory per aggregate;
// failed saves retry with backoff. A checkpoint is saved with, or after,
// the last of its job's snapshots.
type writer struct {
	log     *slog.Logger
	stats   *counters
	store   SnapshotStore
	mu      sync.Mutex
	jobs    map[*aggState]*writeJob
	order   []*aggState
	busy    int // jobs taken and not yet finished
	wake    chan struct{}
	failing bool
	batch   int // snapshots per SaveLeased
}

func newWriter(store SnapshotStore, log *slog.Logger, stats *counters) *writer {
	return &writer{log: log, stats: stats, store: store, jobs: map[*aggState]*writeJob{}, wake: make(chan struct{}, 1), batch: saveBatch}
}

// submit queues snaps (and cp, if not nil) of st.
func (w *writer) submit(st *aggState, cp *snapshots.Checkpoint, snaps []snapshots.Snapshot) {
	w.mu.Lock()
	j := w.jobs[st]
	if j == nil {
		j = &writeJob{st: st, snaps: map[string]snapshots.Snapshot{}}
		w.jobs[st] = j
		w.order = append(w.order, st)
	}
	for _, s := range snaps {
		if old, ok := j.snaps[s.AggregateID]; !ok || old.Version <= s.Version {
			j.snaps[s.AggregateID] = s
		}
	}
	if cp != nil && (j.cp == nil || j.cp.Offset <= cp.Offset) {
		j.cp = cp
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *writer) take() *writeJob {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.order) == 0 {
		return nil
	}
	st := w.order[0]
	w.order = w.order[1:]
	j := w.jobs[st]
	delete(w.jobs, st)
	w.busy++
	return j
}

func (w *writer) done() {
	w.mu.Lock()
	w.busy--
	w.mu.Unlock()
}

func (w *writer) pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.order) + w.busy
}

// run saves jobs until ctx ends.
func (w *writer) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		ok, err := w.step(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case !ok:
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
		case err != nil:
			if !w.failing {
				w.log.Warn("snapshot store unavailable; commands keep flowing, snapshot writes retry with backoff", "err", err)
				w.failing = true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		default:
			if w.failing {
				w.log.Info("snapshot store reachable again")
				w.failing = false
			}
			backoff = 50 * time.Millisecond
		}
	}
}

// step saves one queued job; ok is false when there was none. A job that
// failed is merged back to be retried.
func (w *writer) step(ctx context.Context) (ok bool, err error) {
	j := w.take()
	if j == nil {
		return false, nil
	}
	defer w.done()
	err = w.save(ctx, j)
	if err != nil && !errors.Is(err, errStoreLost) {
		j.st.obs.SnapshotStoreRetry("save")
		w.submit(j.st, j.cp, mapValues(j.snaps)) // retried later
	}
	return true, err
}

// save writes one job in batches, the checkpoint with the last one, under
// the partition's lease. Saved batches are removed from j. When the lease
// is lost the job is dropped: the partition is restored from Kafka.
func (w *writer) save(ctx context.Context, j *writeJob) error {
	st := j.st
	snaps := mapValues(j.snaps)
	for {
		n := min(len(snaps), w.batch)
		var cp *snapshots.Checkpoint
		if n == len(snaps) {
			cp = j.cp
		}
		if n == 0 && cp == nil {
			return nil
		}
		lease, err := st.leaseForWrite(ctx)
		if err == nil {
			lease, err = w.store.SaveLeased(ctx, st.kind.Name(), st.part, lease, cp, snaps[:n])
		}
		if errors.Is(err, snapshots.ErrLeaseLost) {
			st.lose(err)
			if !st.closed.Load() {
				w.log.Warn("the snapshot store lost this partition's lease; restoring it from Kafka", "aggregate_type", st.kind.Name(), "partition", st.part, "err", err)
			}
			return errStoreLost
		}
		if errors.Is(err, errStoreLost) {
			return err
		}
		if err != nil {
			st.obs.SnapshotStoreError("save")
			return err
		}
		st.ack(lease, snaps[:n])
		for _, s := range snaps[:n] {
			delete(j.snaps, s.AggregateID)
		}
		w.stats.snapshotsSaved.Add(int64(n))
		if cp != nil {
			j.cp = nil
			w.stats.checkpoints.Add(1)
			st.gauges.lastCP.Store(cp.Time.UnixNano())
			return nil
		}
		snaps = snaps[n:]
	}
}

// drain waits until the queue is empty or ctx ends.
func (w *writer) drain(ctx context.Context) {
	for w.pending() > 0 {
		select {
		case <-ctx.Done():
			w.log.Warn("shutting down with snapshot writes pending; the next restore replays more", "partitions", w.pending())
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
