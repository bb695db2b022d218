package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/snapshots"
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
	// Restored: mode is "full" or "checkpoint"; events is how many events
	// after the checkpoint (all, in a full replay) the restore read. A
	// restore from a checkpoint applies them when their aggregate is first
	// used.
	Restored(aggType, mode string, took time.Duration, events int64)
	// DeadLettered is a record sent to the DLQ with its code.
	DeadLettered(aggType, code string)
	// CacheLookup is one aggregate looked up in memory.
	CacheLookup(aggType string, hit bool)
	// Evicted is aggregates evicted from memory.
	Evicted(aggType string, n int)
	// SnapshotStoreError is a store operation (claim, load, save, drop)
	// that failed: claims, loads and drops after their retries; saves at
	// every failed attempt, since the writer retries them until they
	// succeed or the lease is lost.
	SnapshotStoreError(operation string)
	// SnapshotStoreRetry is a store operation tried again after a failure
	// (a claim, load or drop a moment later; a save with backoff).
	SnapshotStoreRetry(operation string)
	// LeaseLost is a partition whose snapshot-store lease was lost; reason
	// is one of the LeaseLost* constants.
	LeaseLost(aggType, reason string)
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
func (nopObserver) SnapshotStoreRetry(string)                                           {}
func (nopObserver) LeaseLost(string, string)                                            {}
func (nopObserver) ForeignWrite(string)                                                 {}

// Why a snapshot-store lease was lost (Observer.LeaseLost). Only
// LeaseLostRevoked is part of ordinary operation; the others mean the store
// lost or refused data, or another instance took a partition this one still
// held.
const (
	// LeaseLostRevoked: the partition was no longer this state's when its
	// lease was found taken (given away in a rebalance, or reset here after
	// an aborted transaction and claimed again by its own restore).
	LeaseLostRevoked = "revoked"
	// LeaseLostClaimed: another epoch holds the lease of a partition this
	// instance still held: another instance claimed it (this one was
	// thrown out of the group), or the store went back to a copy from
	// before this instance's claim.
	LeaseLostClaimed = "claimed"
	// LeaseLostFlushed: the lease is gone: the store was flushed or
	// restarted without its data.
	LeaseLostFlushed = "flushed"
	// LeaseLostRolledBack: the lease is ours but older than the writes the
	// store acknowledged: it restarted from an older copy or failed over
	// to a lagging replica.
	LeaseLostRolledBack = "rolled_back"
	// LeaseLostOther: a store that reports a lost lease without saying
	// how (not a *snapshots.LeaseError).
	LeaseLostOther = "other"
)

// leaseLostReason classifies err (matching snapshots.ErrLeaseLost) for a
// state that is closed, or not.
func leaseLostReason(err error, closed bool) string {
	var le *snapshots.LeaseError
	switch {
	case closed:
		return LeaseLostRevoked
	case !errors.As(err, &le):
		return LeaseLostOther
	case le.Found == nil:
		return LeaseLostFlushed
	case le.Found.Epoch != le.Want.Epoch:
		return LeaseLostClaimed
	default:
		return LeaseLostRolledBack
	}
}

// Partition states in PartitionStatus.
const (
	PartitionRestoring = "restoring" // fetching paused until its state is restored
	PartitionReady     = "ready"
	PartitionStopped   = "stopped" // the running code cannot restore it; see Reason
)

// PartitionStatus is one partition assigned to this instance.
type PartitionStatus struct {
	AggregateType string
	Topic         string // the commands topic
	Partition     int32
	State         string // PartitionRestoring, PartitionReady or PartitionStopped
	// Reason says why the partition is stopped, or what its restore is
	// doing (for instance, waiting for an open transaction on its events
	// partition to end).
	Reason string
	Cached int // aggregates in memory
	// EventsSinceCheckpoint and LastCheckpoint (zero: none yet) are kept
	// with a snapshot store only.
	EventsSinceCheckpoint int64
	LastCheckpoint        time.Time
}

// Status is what an instance is doing now. An instance is ready (see
// Readiness) once Run started, the topics are valid, the group is joined
// and every assigned partition is restored, none stopped.
type Status struct {
	// Started is set while Run runs.
	Started bool
	// TopicsValid is set once Run created or checked the topics (their
	// partition counts fit, this group serves them), until it returns.
	TopicsValid bool
	// GroupJoined is set while a session runs whose member received its
	// assignment from the group (which may be empty: more instances than
	// partitions).
	GroupJoined bool
	// Partitions are those assigned to this member, sorted by topic and
	// partition; a partition assigned but not yet taken up is restoring.
	Partitions []PartitionStatus
}

// Status returns a snapshot of the instance's partitions.
func (p *Processor) Status() Status {
	st := Status{Started: p.started.Load(), TopicsValid: p.topicsValid.Load()}
	var assigned map[string][]int32
	if a := p.assignment.Load(); a != nil && p.running.Load() {
		st.GroupJoined, assigned = true, *a
	}
	held := map[topicPartition]bool{}
	p.mu.Lock()
	for tp, part := range p.parts {
		held[tp] = true
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
		default:
			if ph := part.phase.Load(); ph != nil {
				ps.Reason = *ph
			}
		}
		st.Partitions = append(st.Partitions, ps)
	}
	p.mu.Unlock()
	for topic, ids := range assigned {
		b := p.bindings[topic]
		if b == nil {
			continue
		}
		for _, id := range ids {
			if !held[topicPartition{topic, id}] {
				st.Partitions = append(st.Partitions, PartitionStatus{AggregateType: b.kind.Name(), Topic: topic, Partition: id,
					State: PartitionRestoring, Reason: "assigned; its restore has not started yet"})
			}
		}
	}
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

// Readiness reports whether the status is that of an instance ready to
// serve: Run started, the topics valid, the group joined, every assigned
// partition restored and none stopped. When not, the reasons say why, one
// per unmet condition and partition.
func (st Status) Readiness() (ready bool, reasons []string) {
	switch {
	case !st.Started:
		reasons = append(reasons, "not running: Run has not started, or has returned")
	case !st.TopicsValid:
		reasons = append(reasons, "topics not validated yet: creating or checking the topics and claiming them for the group")
	case !st.GroupJoined:
		reasons = append(reasons, "consumer group not joined yet: waiting for this member's first assignment")
	}
	for _, ps := range st.Partitions {
		switch ps.State {
		case PartitionRestoring:
			r := fmt.Sprintf("%s/%d is restoring", ps.Topic, ps.Partition)
			if ps.Reason != "" {
				r += ": " + ps.Reason
			}
			reasons = append(reasons, r)
		case PartitionStopped:
			reasons = append(reasons, fmt.Sprintf("%s/%d is stopped: %s", ps.Topic, ps.Partition, ps.Reason))
		}
	}
	return len(reasons) == 0, reasons
}

// Readiness reports whether the instance is ready to serve (see
// Status.Readiness), and when not, why. It answers /readyz.
func (p *Processor) Readiness() (ready bool, reasons []string) {
	return p.Status().Readiness()
}

// durationAttr is a log attribute for a duration that shows its unit in
// every handler ("1.5s"; slog's JSON handler would print a time.Duration
// as integer nanoseconds).
func durationAttr(key string, d time.Duration) slog.Attr {
	return slog.String(key, d.String())
}

// Lag returns, per aggregate type and partition, how many command records
// the group has not consumed yet (see GroupLag).
func (p *Processor) Lag(ctx context.Context) (map[string]map[int32]int64, error) {
	// topicsValid is stored after Run set adm (and the bindings' partition
	// counts): loading it true orders those writes before the reads below.
	if !p.topicsValid.Load() {
		return nil, fmt.Errorf("the processor is not running, or has not checked its topics yet")
	}
	names := make([]string, 0, len(p.bindings))
	for t := range p.bindings {
		names = append(names, t)
	}
	byTopic, err := GroupLag(ctx, p.kafkaOpts(), p.cfg.Group, names...)
	if err != nil {
		return nil, err
	}
	out := map[string]map[int32]int64{}
	for t, parts := range byTopic {
		out[p.bindings[t].kind.Name()] = parts
	}
	return out, nil
}

// GroupLag returns, per commands topic and partition, how many command
// records group has not consumed yet: the partition's last stable offset
// minus the group's committed offset, except that offsets in between
// holding only transaction markers (which the forwards of wrongly
// partitioned commands leave in the commands topic) are not counted: once
// every command is handled, the lag is 0. opts reach the brokers.
func GroupLag(ctx context.Context, opts []kgo.Opt, group string, commandTopics ...string) (map[string]map[int32]int64, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating a Kafka client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListCommittedOffsets(ctx, commandTopics...)
	if err != nil {
		return nil, fmt.Errorf("listing the stable offsets of %v: %w", commandTopics, err)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("fetching the offsets of group %q: %w", group, err)
	}
	out := map[string]map[int32]int64{}
	inspect := map[string]map[int32]kgo.Offset{}
	ranges := map[topicPartition][2]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			return
		}
		var done int64
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.Err == nil && c.At >= 0 {
			done = c.At
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		lag := max(0, o.Offset-done)
		out[o.Topic][o.Partition] = lag
		if lag > 0 && lag <= maxInspectedLag {
			if inspect[o.Topic] == nil {
				inspect[o.Topic] = map[int32]kgo.Offset{}
			}
			inspect[o.Topic][o.Partition] = kgo.NewOffset().At(done)
			ranges[topicPartition{o.Topic, o.Partition}] = [2]int64{done, o.Offset}
		}
	})
	if len(inspect) == 0 {
		return out, nil
	}
	data, err := dataRecords(ctx, opts, inspect, ranges)
	if err != nil {
		return out, nil // the upper bound is still right
	}
	for tp, n := range data {
		out[tp.topic][tp.partition] = n
	}
	return out, nil
}

// maxInspectedLag bounds the lags Lag reads through to tell commands from
// transaction markers; a larger lag is reported as it is.
const maxInspectedLag = 64

// dataRecords reads the offset ranges given (read_committed, markers kept)
// and counts, per partition, the records that are not transaction markers.
// A partition not read to its range's end within a second keeps its upper
// bound.
func dataRecords(ctx context.Context, opts []kgo.Opt, at map[string]map[int32]kgo.Offset, ranges map[topicPartition][2]int64) (map[topicPartition]int64, error) {
	cl, err := kgo.NewClient(append(opts[:len(opts):len(opts)], kgo.ConsumePartitions(at), kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	counts := map[topicPartition]int64{}
	seen := map[topicPartition]bool{}
	for len(seen) < len(ranges) && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			tp := topicPartition{r.Topic, r.Partition}
			rg, ok := ranges[tp]
			if !ok || r.Offset < rg[0] || r.Offset >= rg[1] {
				return
			}
			if !r.Attrs.IsControl() {
				counts[tp]++
			}
			if r.Offset == rg[1]-1 {
				seen[tp] = true
			}
		})
	}
	out := map[topicPartition]int64{}
	for tp := range seen {
		out[tp] = counts[tp]
	}
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
