package processor

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
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
// the group has not consumed yet (see GroupLag).
func (p *Processor) Lag(ctx context.Context) (map[string]map[int32]int64, error) {
	if p.adm == nil {
		return nil, fmt.Errorf("the processor is not running")
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
