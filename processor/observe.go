package processor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// Observer receives what a Processor does, for metrics (package metrics
// implements it for Prometheus). Its methods are called from the
// processor's goroutines, concurrently; they must be quick and not block.
type Observer interface {
	// CommandHandled: outcome is accepted, rejected, duplicate, invalid or
	// forwarded; handling is the time spent deciding it; sinceSent the time
	// from the command record's timestamp to its result being produced.
	CommandHandled(aggType, commandType, outcome string, handling, sinceSent time.Duration)
	// TransactionEnded: commands is how many command records it consumed.
	TransactionEnded(committed bool, commands int, took time.Duration)
	// Restored: mode is "full" or "checkpoint".
	Restored(aggType, mode string, took time.Duration, events int64)
	// DeadLettered is a record sent to the DLQ with its code.
	DeadLettered(aggType, code string)
	// CacheLookup is one aggregate looked up in memory.
	CacheLookup(aggType string, hit bool)
	// Evicted is aggregates evicted from memory.
	Evicted(aggType string, n int)
	// SnapshotStoreError is a failed store operation (claim, load, save).
	SnapshotStoreError(operation string)
	// LeaseLost is a partition whose snapshot-store lease was lost.
	LeaseLost(aggType string)
	// ForeignWrite is a commit that found events it did not write.
	ForeignWrite(aggType string)
}

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) CommandHandled(string, string, string, time.Duration, time.Duration) {}
func (nopObserver) TransactionEnded(bool, int, time.Duration)                           {}
func (nopObserver) Restored(string, string, time.Duration, int64)                       {}
func (nopObserver) DeadLettered(string, string)                                         {}
func (nopObserver) CacheLookup(string, bool)                                            {}
func (nopObserver) Evicted(string, int)                                                 {}
func (nopObserver) SnapshotStoreError(string)                                           {}
func (nopObserver) LeaseLost(string)                                                    {}
func (nopObserver) ForeignWrite(string)                                                 {}

// Partition states in PartitionStatus.
const (
	PartitionRestoring = "restoring" // fetching paused until its state is restored
	PartitionReady     = "ready"
	PartitionStopped   = "stopped" // the running code cannot restore it; see Reason
)

// PartitionStatus is one partition this instance holds.
type PartitionStatus struct {
	AggregateType string
	Topic         string // the commands topic
	Partition     int32
	State         string // PartitionRestoring, PartitionReady or PartitionStopped
	Reason        string // why it is stopped
	Cached        int    // aggregates in memory
	// EventsSinceCheckpoint and LastCheckpoint (zero: none yet) are kept
	// with a snapshot store only.
	EventsSinceCheckpoint int64
	LastCheckpoint        time.Time
}

// Status is what an instance is doing now.
type Status struct {
	// Running is set once the topics exist and the group is joined.
	Running    bool
	Partitions []PartitionStatus // sorted by topic and partition
}

// Status returns a snapshot of the instance's partitions.
func (p *Processor) Status() Status {
	st := Status{Running: p.running.Load()}
	p.mu.Lock()
	for tp, part := range p.parts {
		ps := PartitionStatus{AggregateType: part.b.kind.Name(), Topic: tp.topic, Partition: tp.partition, State: PartitionRestoring,
			Cached: int(part.st.gauges.cached.Load()), EventsSinceCheckpoint: part.st.gauges.sinceCP.Load()}
		if ns := part.st.gauges.lastCP.Load(); ns > 0 {
			ps.LastCheckpoint = time.Unix(0, ns)
		}
		switch {
		case part.stopped.Load() != nil:
			ps.State, ps.Reason = PartitionStopped, part.stopped.Load().Error()
		case part.isRestored():
			ps.State = PartitionReady
		}
		st.Partitions = append(st.Partitions, ps)
	}
	p.mu.Unlock()
	slices.SortFunc(st.Partitions, func(a, b PartitionStatus) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	})
	return st
}

// Readiness reports whether the instance is ready to serve: running (topics
// valid, group joined) and every partition it holds restored, none stopped.
// When not, the reasons say why.
func (p *Processor) Readiness() (ready bool, reasons []string) {
	st := p.Status()
	if !st.Running {
		reasons = append(reasons, "not running: the topics are being checked or the consumer group is being joined")
	}
	for _, ps := range st.Partitions {
		switch ps.State {
		case PartitionRestoring:
			reasons = append(reasons, fmt.Sprintf("%s/%d is restoring", ps.Topic, ps.Partition))
		case PartitionStopped:
			reasons = append(reasons, fmt.Sprintf("%s/%d is stopped: %s", ps.Topic, ps.Partition, ps.Reason))
		}
	}
	return len(reasons) == 0, reasons
}

// Lag returns, per aggregate type and partition, how many command records
// the group has not consumed: the commands partition's last stable offset
// minus the group's committed offset.
func (p *Processor) Lag(ctx context.Context) (map[string]map[int32]int64, error) {
	if p.adm == nil {
		return nil, fmt.Errorf("the processor is not running")
	}
	names := make([]string, 0, len(p.bindings))
	for t := range p.bindings {
		names = append(names, t)
	}
	ends, err := p.adm.ListCommittedOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing the stable offsets of %v: %w", names, err)
	}
	committed, err := p.adm.FetchOffsets(ctx, p.cfg.Group)
	if err != nil {
		return nil, fmt.Errorf("fetching the offsets of group %q: %w", p.cfg.Group, err)
	}
	out := map[string]map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		b := p.bindings[o.Topic]
		if o.Err != nil || b == nil {
			return
		}
		var done int64
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.Err == nil && c.At >= 0 {
			done = c.At
		}
		if out[b.kind.Name()] == nil {
			out[b.kind.Name()] = map[int32]int64{}
		}
		out[b.kind.Name()][o.Partition] = max(0, o.Offset-done)
	})
	return out, nil
}

// typeLabel returns a command type for metrics: the type as sent when the
// aggregate knows it, else "other", so that bad input cannot create
// unbounded label values.
func (b *binding) typeLabel(t string) string {
	for _, known := range b.commandTypes {
		if t == known {
			return t
		}
	}
	return "other"
}
