// Package snapshots stores aggregate snapshots and per-partition checkpoints,
// so a processor that takes over a partition can restore it without
// replaying the partition's whole events topic.
//
// # Snapshots and checkpoints
//
// A Snapshot is one aggregate's encoded state at a version, together with the
// events-topic offset of the last event it includes and a Stamp naming the
// state schema that encoded it. A Checkpoint belongs to one partition of one
// aggregate type and promises: every aggregate of the partition whose events
// lie below Checkpoint.Offset has a snapshot at least that new. Restoring a
// partition is therefore: read the checkpoint, load snapshots, and replay the
// events topic from Checkpoint.Offset on. Without a checkpoint the processor
// replays from the start of the topic.
//
// Kafka stays the source of truth. A store may lose everything at any time
// (a flushed Redis, a restarted process): the price is a longer replay, never
// a wrong state. What a store must never do is claim coverage it does not
// have, and so:
//
//   - Save writes its snapshots and its optional checkpoint atomically: no
//     reader ever sees the checkpoint without the snapshots saved with it.
//   - A snapshot never replaces a stored one of a higher Version. Such a
//     snapshot is skipped; the rest of the Save is still written.
//   - A checkpoint never moves backwards: one with a lower Offset than the
//     stored one is ignored.
//
// A Stamp that differs from what the running code expects means "do not
// trust": the caller ignores the snapshot or checkpoint and replays instead.
// Stores compare versions and offsets, never stamps.
//
// # Implementations
//
// Redis keeps the data in Redis (single node, Sentinel or Cluster) and is
// what production uses; Open builds one from a URL. Memory keeps it in the
// process, for tests and single-process development. Both provide the same
// methods (Checkpoint, Load, LoadMany, Save, DropPartition, Close) and pass
// the same conformance suite; the processor defines the interface it needs.
// All methods of both may be called concurrently.
//
// # Errors
//
// Every error can be matched with errors.Is: ErrInvalid for arguments no
// store can accept, ErrCorrupt for a stored value that cannot be decoded,
// ErrClosed after Close, and the context's error when ctx ends first. Other
// errors are Redis being unreachable or refusing a command.
//
// # Operating Redis
//
// Redis must not evict single keys behind the store's back: a checkpoint
// whose snapshots were evicted would claim coverage that is gone. Run the
// instance with maxmemory-policy noeviction (the Redis default), or give the
// store an instance of its own. Persistence is optional: after a restart
// without data the processor replays from Kafka. Flushing Redis is always
// safe.
package snapshots

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Snapshot is one aggregate's saved state.
type Snapshot struct {
	AggregateID string
	Version     int64  // aggregate version included
	Offset      int64  // events-topic offset of the last event it includes
	Stamp       string // state schema stamp, e.g. "order/v1"; a mismatch means "do not trust"
	Data        []byte // opaque encoded aggregate (aggregates.Root.MarshalSnapshot)
}

// Checkpoint says that every aggregate of the partition whose events are
// below Offset has a snapshot at least that new.
type Checkpoint struct {
	Offset int64 // next events-topic offset to replay from
	Stamp  string
	Time   time.Time
	// Continues, on a checkpoint given to Save, writes it only if the
	// partition still has a checkpoint. One that vanished (a flushed store)
	// may have taken snapshots with it that the new checkpoint would claim,
	// so Save then writes the snapshots but not the checkpoint and returns
	// ErrCheckpointGone. The check and the write are one atomic step. It is
	// not stored.
	Continues bool
}

// Sentinel errors, matched with errors.Is.
var (
	// ErrCorrupt is returned by Load, LoadMany and Checkpoint when a stored
	// value cannot be decoded (wrong format, truncated, checksum mismatch).
	// The error is a *CorruptError. Treat the value as missing and replay;
	// the next Save of the key replaces the value (unless its damaged
	// header still claims a higher version), and DropPartition always
	// clears the whole partition.
	ErrCorrupt = errors.New("corrupt stored snapshot data")
	// ErrClosed is returned by every method called after Close.
	ErrClosed = errors.New("snapshot store is closed")
	// ErrCheckpointGone is returned by Save when its checkpoint has
	// Continues set and the partition has no checkpoint any more: the
	// snapshots were written, the checkpoint was not. Restore the partition
	// from the events (a full replay) before checkpointing it again.
	ErrCheckpointGone = errors.New("the partition's previous checkpoint is gone")
	// ErrInvalid is returned when an argument can never be stored: an empty
	// or brace-carrying aggregate type, a negative partition, an empty
	// aggregate id, a malformed URL or option.
	ErrInvalid = errors.New("invalid snapshot store argument")
)

// CorruptError is a stored value that could not be decoded.
type CorruptError struct {
	Key    string // where the value is stored (the Redis key)
	Reason string // what is wrong with it
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt stored snapshot data at %q: %s; treat it as missing and replay: a newer Save of that key replaces it, DropPartition clears the partition", e.Key, e.Reason)
}

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// checkPartition validates the (aggregate type, partition) address shared by
// every method. Braces are refused because the Redis key layout uses them as
// the Cluster hash tag.
func checkPartition(aggType string, partition int32) error {
	switch {
	case aggType == "":
		return fmt.Errorf("%w: the aggregate type is empty", ErrInvalid)
	case strings.ContainsAny(aggType, "{}"):
		return fmt.Errorf("%w: aggregate type %q contains '{' or '}', which the Redis key layout reserves for its hash tag", ErrInvalid, aggType)
	case partition < 0:
		return fmt.Errorf("%w: partition %d is negative", ErrInvalid, partition)
	}
	return nil
}

// checkIDs validates aggregate ids.
func checkIDs(ids []string) error {
	for i, id := range ids {
		if id == "" {
			return fmt.Errorf("%w: aggregate id #%d is empty", ErrInvalid, i)
		}
	}
	return nil
}

// checkSnapshots validates a Save's snapshots.
func checkSnapshots(snaps []Snapshot) error {
	for i, s := range snaps {
		if s.AggregateID == "" {
			return fmt.Errorf("%w: snapshot #%d has an empty AggregateID", ErrInvalid, i)
		}
	}
	return nil
}

// newest returns snaps with one snapshot per aggregate id: the highest
// Version, the later one on a tie, as if they had been saved one by one. The
// order of first appearance is kept.
func newest(snaps []Snapshot) []Snapshot {
	index := make(map[string]int, len(snaps))
	out := make([]Snapshot, 0, len(snaps))
	for _, s := range snaps {
		i, seen := index[s.AggregateID]
		if !seen {
			index[s.AggregateID] = len(out)
			out = append(out, s)
			continue
		}
		if s.Version >= out[i].Version {
			out[i] = s
		}
	}
	return out
}

// where names a partition in messages: "order/3".
func where(aggType string, partition int32) string {
	return fmt.Sprintf("%s/%d", aggType, partition)
}
