package snapshots

import (
	"bytes"
	"context"
	"fmt"
	"sync"
)

// Memory is a snapshot store held in the process: for tests and for running
// a single processor without Redis. It follows the same rules as Redis (see
// the package documentation) and loses everything when the process ends.
//
// A single mutex guards it, so every method is atomic with respect to every
// other. Byte slices are copied on the way in and out: callers may reuse
// what they pass and modify what they get.
type Memory struct {
	mu     sync.RWMutex
	closed bool
	parts  map[memKey]*memPartition
}

type memKey struct {
	aggType   string
	partition int32
}

type memPartition struct {
	cp    *Checkpoint
	lease *Lease
	snaps map[string]Snapshot
}

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{parts: make(map[memKey]*memPartition)}
}

// Checkpoint returns the partition's checkpoint; ok is false when there is
// none.
func (m *Memory) Checkpoint(ctx context.Context, aggType string, partition int32) (cp Checkpoint, ok bool, err error) {
	if err := m.enter(ctx, aggType, partition); err != nil {
		return Checkpoint{}, false, fmt.Errorf("snapshots: reading the checkpoint of %s: %w", where(aggType, partition), err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return Checkpoint{}, false, fmt.Errorf("snapshots: reading the checkpoint of %s: %w", where(aggType, partition), ErrClosed)
	}
	p := m.parts[memKey{aggType, partition}]
	if p == nil || p.cp == nil {
		return Checkpoint{}, false, nil
	}
	return *p.cp, true, nil
}

// Load returns the snapshot of aggregate id; ok is false when there is none.
func (m *Memory) Load(ctx context.Context, aggType string, partition int32, id string) (s Snapshot, ok bool, err error) {
	err = m.enter(ctx, aggType, partition)
	if err == nil {
		err = checkIDs([]string{id})
	}
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("snapshots: loading %q of %s: %w", id, where(aggType, partition), err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return Snapshot{}, false, fmt.Errorf("snapshots: loading %q of %s: %w", id, where(aggType, partition), ErrClosed)
	}
	p := m.parts[memKey{aggType, partition}]
	if p == nil {
		return Snapshot{}, false, nil
	}
	s, ok = p.snaps[id]
	if !ok {
		return Snapshot{}, false, nil
	}
	s.Data = bytes.Clone(s.Data)
	return s, true, nil
}

// LoadMany returns the snapshots of the given ids that exist, keyed by id.
// Missing ids are absent from the map. All are read at one instant.
func (m *Memory) LoadMany(ctx context.Context, aggType string, partition int32, ids []string) (map[string]Snapshot, error) {
	err := m.enter(ctx, aggType, partition)
	if err == nil {
		err = checkIDs(ids)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots: loading %d snapshots of %s: %w", len(ids), where(aggType, partition), err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, fmt.Errorf("snapshots: loading %d snapshots of %s: %w", len(ids), where(aggType, partition), ErrClosed)
	}
	return m.parts[memKey{aggType, partition}].copyOf(ids), nil
}

// copyOf returns copies of the snapshots of ids that p holds; p may be nil.
func (p *memPartition) copyOf(ids []string) map[string]Snapshot {
	out := make(map[string]Snapshot, len(ids))
	if p == nil {
		return out
	}
	for _, id := range ids {
		if s, ok := p.snaps[id]; ok {
			s.Data = bytes.Clone(s.Data)
			out[id] = s
		}
	}
	return out
}

// Save stores snaps and, when cp is not nil, the checkpoint, all at once. A
// snapshot older than the stored one and a checkpoint behind the stored one
// are skipped.
func (m *Memory) Save(ctx context.Context, aggType string, partition int32, cp *Checkpoint, snaps []Snapshot) error {
	err := m.enter(ctx, aggType, partition)
	if err == nil {
		err = checkSnapshots(snaps)
	}
	if err != nil {
		return fmt.Errorf("snapshots: saving %d snapshots of %s: %w", len(snaps), where(aggType, partition), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("snapshots: saving %d snapshots of %s: %w", len(snaps), where(aggType, partition), ErrClosed)
	}
	if cp == nil && len(snaps) == 0 {
		return nil
	}
	p := m.partition(memKey{aggType, partition})
	if cp != nil && cp.Continues && p.cp == nil {
		m.write(p, nil, snaps)
		return fmt.Errorf("snapshots: saving the checkpoint of %s: %w (the %d snapshots were saved)", where(aggType, partition), ErrCheckpointGone, len(snaps))
	}
	m.write(p, cp, snaps)
	return nil
}

// Claim makes epoch the partition's lease, with Seq 0, and returns the
// checkpoint as it was at that instant (see Lease).
func (m *Memory) Claim(ctx context.Context, aggType string, partition int32, epoch string) (cp Checkpoint, ok bool, err error) {
	err = m.enter(ctx, aggType, partition)
	if err == nil {
		err = checkEpoch(epoch)
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("snapshots: claiming %s: %w", where(aggType, partition), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Checkpoint{}, false, fmt.Errorf("snapshots: claiming %s: %w", where(aggType, partition), ErrClosed)
	}
	p := m.partition(memKey{aggType, partition})
	p.lease = &Lease{Epoch: epoch}
	if p.cp == nil {
		return Checkpoint{}, false, nil
	}
	return *p.cp, true, nil
}

// LoadLeased is LoadMany that first checks, at the same instant, that the
// partition's lease is still lease (same epoch, Seq at least lease.Seq); if
// not it returns an error matching ErrLeaseLost and no snapshots.
func (m *Memory) LoadLeased(ctx context.Context, aggType string, partition int32, lease Lease, ids []string) (map[string]Snapshot, error) {
	err := m.enter(ctx, aggType, partition)
	if err == nil {
		err = checkIDs(ids)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots: loading %d snapshots of %s: %w", len(ids), where(aggType, partition), err)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, fmt.Errorf("snapshots: loading %d snapshots of %s: %w", len(ids), where(aggType, partition), ErrClosed)
	}
	p, err := m.leased(aggType, partition, lease)
	if err != nil {
		return nil, err
	}
	return p.copyOf(ids), nil
}

// SaveLeased is Save made only while the partition's lease is still lease
// (same epoch, Seq at least lease.Seq); it adds one to the stored Seq and
// returns the new lease. When the lease is not ours it writes nothing and
// returns an error matching ErrLeaseLost. Checkpoint.Continues is ignored.
func (m *Memory) SaveLeased(ctx context.Context, aggType string, partition int32, lease Lease, cp *Checkpoint, snaps []Snapshot) (Lease, error) {
	err := m.enter(ctx, aggType, partition)
	if err == nil {
		err = checkSnapshots(snaps)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("snapshots: saving %d snapshots of %s: %w", len(snaps), where(aggType, partition), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Lease{}, fmt.Errorf("snapshots: saving %d snapshots of %s: %w", len(snaps), where(aggType, partition), ErrClosed)
	}
	p, err := m.leased(aggType, partition, lease)
	if err != nil {
		return Lease{}, err
	}
	m.write(p, cp, snaps)
	p.lease = &Lease{Epoch: p.lease.Epoch, Seq: p.lease.Seq + 1}
	return *p.lease, nil
}

// leased returns the partition if its stored lease is still lease (same
// epoch, Seq at least lease.Seq), else a *LeaseError. m.mu must be held.
func (m *Memory) leased(aggType string, partition int32, lease Lease) (*memPartition, error) {
	p := m.parts[memKey{aggType, partition}]
	var found *Lease
	if p != nil {
		found = p.lease
	}
	if err := checkLease(where(aggType, partition), lease, found); err != nil {
		return nil, err
	}
	return p, nil
}

// Flush forgets everything, as FLUSHALL does to Redis.
func (m *Memory) Flush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		clear(m.parts)
	}
}

// Copy returns an independent copy of the store's content, as a Redis
// snapshot (RDB) would be: tests restore it to make a store go back in
// time.
func (m *Memory) Copy() *Memory {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := NewMemory()
	for k, p := range m.parts {
		q := &memPartition{snaps: make(map[string]Snapshot, len(p.snaps))}
		if p.cp != nil {
			cp := *p.cp
			q.cp = &cp
		}
		if p.lease != nil {
			l := *p.lease
			q.lease = &l
		}
		for id, s := range p.snaps {
			s.Data = bytes.Clone(s.Data)
			q.snaps[id] = s
		}
		c.parts[k] = q
	}
	return c
}

// partition returns the partition's entry, creating it. m.mu must be held
// for writing.
func (m *Memory) partition(key memKey) *memPartition {
	p := m.parts[key]
	if p == nil {
		p = &memPartition{snaps: map[string]Snapshot{}}
		m.parts[key] = p
	}
	return p
}

// write applies a Save's snapshots and checkpoint to p, keeping newer
// stored snapshots and never moving the checkpoint back.
func (m *Memory) write(p *memPartition, cp *Checkpoint, snaps []Snapshot) {
	for _, s := range snaps {
		if cur, ok := p.snaps[s.AggregateID]; ok && cur.Version > s.Version {
			continue
		}
		s.Data = bytes.Clone(s.Data)
		p.snaps[s.AggregateID] = s
	}
	if cp != nil && (p.cp == nil || cp.Offset >= p.cp.Offset) {
		c := *cp
		c.Continues = false
		p.cp = &c
	}
}

// DropPartition forgets the partition's checkpoint and snapshots.
func (m *Memory) DropPartition(ctx context.Context, aggType string, partition int32) error {
	if err := m.enter(ctx, aggType, partition); err != nil {
		return fmt.Errorf("snapshots: dropping %s: %w", where(aggType, partition), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("snapshots: dropping %s: %w", where(aggType, partition), ErrClosed)
	}
	delete(m.parts, memKey{aggType, partition})
	return nil
}

// Close releases the stored data. Every later call returns ErrClosed; a
// second Close returns nil.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.parts = nil
	return nil
}

// enter checks what every method checks before taking the lock: the context
// and the partition address. Closed is checked under the lock.
func (m *Memory) enter(ctx context.Context, aggType string, partition int32) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return checkPartition(aggType, partition)
}
