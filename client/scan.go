package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/topics"
)

// EventRecord is one record of an events topic, not decoded: what
// ScanEvents hands out.
type EventRecord struct {
	// AggregateID is read from the record key (topics.EventKey); it is
	// empty when the key is not an event key.
	AggregateID string
	Partition   int32
	Offset      int64
	// Value is the CloudEvents document; decode it with the aggregate's
	// Kind.
	Value []byte
}

// EventScan selects what ScanEvents reads.
type EventScan struct {
	// Prefix names the topics: "<Prefix>.events" is read.
	Prefix string
	// AggregateIDs, when not empty, limits the scan to these aggregates:
	// only their owner partitions are read, and only their records are
	// handed out. Empty reads every partition and hands out every record.
	AggregateIDs []string
}

// ScannedEvents says what ScanEvents read.
type ScannedEvents struct {
	// Partitions is the events topic's partition count, which places an
	// aggregate: topics.NewOwner().Of(id, Partitions) is its partition.
	Partitions int32
	// End is, per partition read, the offset it was read up to
	// (exclusive): the partition's last stable offset when the scan began.
	End map[int32]int64
}

// ScanEvents hands the committed records of an events topic to fn, in
// batches, each partition's in offset order (partitions interleave). It
// reads with read_committed from the start of each partition up to its last
// stable offset listed at the call, so it ends even while a processor keeps
// writing; aborted records and transaction markers are not handed out.
// Should a transaction be open on a partition, ScanEvents may wait for it to
// end (at most the processor's transaction timeout); ctx bounds the wait.
//
// fn's batch is reused after fn returns; an error from fn ends the scan and
// is returned. ReadHistory is ScanEvents of one aggregate, decoded; tools
// that read a whole topic (snapshot verification) use ScanEvents directly.
func ScanEvents(ctx context.Context, k Kafka, s EventScan, fn func([]EventRecord) error) (ScannedEvents, error) {
	var problems []error
	if err := k.Validate(); err != nil {
		problems = append(problems, err)
	}
	if s.Prefix == "" {
		problems = append(problems, errors.New("empty topic prefix: pass the prefix the processor serves, e.g. \"orders\""))
	}
	if slices.Contains(s.AggregateIDs, "") {
		problems = append(problems, errors.New("empty aggregate id"))
	}
	if fn == nil {
		problems = append(problems, errors.New("no function to hand the records to"))
	}
	if len(problems) > 0 {
		return ScannedEvents{}, fmt.Errorf("scanning events: %w", errors.Join(problems...))
	}
	topic := topics.For(s.Prefix).Events
	cl, err := k.newClient(kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return ScannedEvents{}, err
	}
	defer cl.Close()

	stable, err := partitionOffsets(ctx, kadm.NewClient(cl).ListCommittedOffsets, topic)
	if err != nil {
		return ScannedEvents{}, fmt.Errorf("scanning %s: %w", topic, err)
	}
	n := int32(len(stable))
	scanned := ScannedEvents{Partitions: n, End: map[int32]int64{}}
	var want map[string]bool // nil: every aggregate
	parts := map[int32]bool{}
	if len(s.AggregateIDs) > 0 {
		want = make(map[string]bool, len(s.AggregateIDs))
		owner := topics.NewOwner()
		for _, id := range s.AggregateIDs {
			want[id] = true
			parts[owner.Of([]byte(id), n)] = true
		}
	} else {
		for p := range stable {
			parts[p] = true
		}
	}
	consume := map[int32]kgo.Offset{}
	for p := range parts {
		end, ok := stable[p]
		if !ok {
			return scanned, fmt.Errorf("scanning %s: it lists no partition %d of %d: partitions must be numbered 0..n-1", topic, p, n)
		}
		scanned.End[p] = end
		if end > 0 {
			consume[p] = kgo.NewOffset().AtStart()
		}
	}
	if len(consume) == 0 {
		return scanned, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: consume})

	// Every offset below a partition's end is decided, and the records
	// that remain visible (data, and control markers thanks to
	// KeepControlRecords) include one at or past end-1 once the consumer
	// has passed end-1. Aborted data is dropped by the client, but its
	// abort marker follows it.
	batch := make([]EventRecord, 0, 512)
	for len(consume) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return scanned, fmt.Errorf("scanning %s (partitions %v): %w", topic, slices.Sorted(maps.Keys(consume)), err)
		}
		var ferr error
		fs.EachError(func(_ string, p int32, err error) {
			var ke *kerr.Error
			if errors.As(err, &ke) && !ke.Retriable {
				ferr = errors.Join(ferr, fmt.Errorf("partition %d: %w", p, err))
			}
		})
		if ferr != nil {
			return scanned, fmt.Errorf("scanning %s: %w", topic, ferr)
		}
		batch = batch[:0]
		fs.EachRecord(func(r *kgo.Record) {
			if _, reading := consume[r.Partition]; !reading {
				return
			}
			end := scanned.End[r.Partition]
			if r.Offset >= end-1 {
				delete(consume, r.Partition)
			}
			if r.Offset >= end || r.Attrs.IsControl() {
				return
			}
			id, _ := topics.EventKeyAggregate(r.Key)
			if want != nil && !want[string(id)] {
				return
			}
			batch = append(batch, EventRecord{AggregateID: string(id), Partition: r.Partition, Offset: r.Offset, Value: r.Value})
		})
		if len(batch) > 0 {
			if err := fn(batch); err != nil {
				return scanned, err
			}
		}
	}
	return scanned, nil
}
