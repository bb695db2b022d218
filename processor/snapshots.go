package processor

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/chronicle-es/chronicle/snapshots"
)

// SnapshotStore keeps aggregate snapshots and per-partition checkpoints so a
// restore replays only recent events. snapshots.Redis and snapshots.Memory
// implement it. All methods may be called concurrently. Save must write its
// snapshots and checkpoint atomically, never replace a snapshot by an older
// version and never move a checkpoint backwards.
type SnapshotStore interface {
	Checkpoint(ctx context.Context, aggType string, partition int32) (snapshots.Checkpoint, bool, error)
	Load(ctx context.Context, aggType string, partition int32, id string) (snapshots.Snapshot, bool, error)
	LoadMany(ctx context.Context, aggType string, partition int32, ids []string) (map[string]snapshots.Snapshot, error)
	Save(ctx context.Context, aggType string, partition int32, cp *snapshots.Checkpoint, snaps []snapshots.Snapshot) error
}

// errUntrusted means the store's content cannot be trusted for a partition
// (flushed, corrupt, another schema): it is restored with a full replay.
var errUntrusted = errors.New("snapshot store content not trusted")

// writeJob is what the writer has to save for one partition: snapshots, and
// possibly a checkpoint that covers them.
type writeJob struct {
	pt    *partition
	cp    *snapshots.Checkpoint
	snaps map[string]snapshots.Snapshot
}

// writer saves snapshots and checkpoints off the command path. Jobs of one
// partition are merged while they wait, so an outage of the store costs
// bounded memory per aggregate, and saves retry with backoff.
type writer struct {
	p       *Processor
	mu      sync.Mutex
	jobs    map[*partition]*writeJob
	order   []*partition
	busy    int // jobs taken and not yet finished
	wake    chan struct{}
	drained chan struct{} // signalled when the queue empties
	failing bool
}

func newWriter(p *Processor) *writer {
	return &writer{p: p, jobs: map[*partition]*writeJob{}, wake: make(chan struct{}, 1), drained: make(chan struct{}, 1)}
}

// submit queues snaps (and cp, if not nil) of pt.
func (w *writer) submit(pt *partition, cp *snapshots.Checkpoint, snaps []snapshots.Snapshot) {
	w.mu.Lock()
	j := w.jobs[pt]
	if j == nil {
		j = &writeJob{pt: pt, snaps: map[string]snapshots.Snapshot{}}
		w.jobs[pt] = j
		w.order = append(w.order, pt)
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
	pt := w.order[0]
	w.order = w.order[1:]
	j := w.jobs[pt]
	delete(w.jobs, pt)
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
		j := w.take()
		if j == nil {
			select {
			case w.drained <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
				return
			case <-w.wake:
			}
			continue
		}
		err := w.save(ctx, j)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !w.failing {
				w.p.log.Warn("snapshot store unavailable; commands keep flowing, snapshot writes retry with backoff", "err", err)
				w.failing = true
			}
			w.submit(j.pt, j.cp, mapValues(j.snaps)) // merge back, retry later
			w.done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		w.done()
		if w.failing {
			w.p.log.Info("snapshot store reachable again")
			w.failing = false
		}
		backoff = 50 * time.Millisecond
	}
}

// save writes one job. A checkpoint continues the one the store should
// hold (Checkpoint.Continues, checked atomically with the write): if that
// vanished — Redis was flushed — snapshots of aggregates no longer in memory
// may be gone too, so the store refuses the checkpoint and the partition is
// restored with a full replay instead.
func (w *writer) save(ctx context.Context, j *writeJob) error {
	pt, store := j.pt, w.p.cfg.Snapshots
	cp := j.cp
	if cp != nil {
		c := *cp
		c.Continues = pt.cpExpected.Load()
		cp = &c
	}
	snaps := mapValues(j.snaps)
	err := store.Save(ctx, pt.b.kind.Name(), pt.id, cp, snaps)
	if errors.Is(err, snapshots.ErrCheckpointGone) {
		w.p.log.Warn("the snapshot store lost this partition's checkpoint (flushed?); restoring it with a full replay", "aggregate_type", pt.b.kind.Name(), "partition", pt.id)
		pt.storeLost.Store(true)
		cp, err = nil, nil
	}
	if err != nil {
		return err
	}
	w.p.stats.snapshotsSaved.Add(int64(len(snaps)))
	if cp != nil {
		w.p.stats.checkpoints.Add(1)
		pt.cpExpected.Store(true)
	}
	pt.saved(snaps)
	return nil
}

// drain waits until the queue is empty or ctx ends.
func (w *writer) drain(ctx context.Context) {
	for w.pending() > 0 {
		select {
		case <-ctx.Done():
			w.p.log.Warn("shutting down with snapshot writes pending; the next restore replays more", "partitions", w.pending())
			return
		case <-w.drained:
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
