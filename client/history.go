package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/chronicle-es/chronicle/aggregates"
	"github.com/chronicle-es/chronicle/topics"
)

// ReadHistory returns the committed events of one aggregate, in version
// order, as they stand when it is called: the input of aggregates.Rebuild for
// time travel (`chronicle history`).
//
// It reads only the aggregate's owner partition of "<prefix>.events"
// (murmur2 of the id modulo the topic's partition count, as the processor
// places events), with read_committed, from the start up to the partition's
// last stable offset listed at the call. Records of other aggregates are
// skipped by their key without being decoded. An aggregate without events
// yields an empty history and no error. Should a transaction be open on the
// partition, ReadHistory may wait for it to end (at most the processor's
// transaction timeout); ctx bounds the wait.
//
// A record of the aggregate that dec cannot decode is an error: history with
// a hole would rebuild a wrong state. When the same version appears twice,
// the first copy is kept, as the processor does on restore.
func ReadHistory(ctx context.Context, k Kafka, dec EventDecoder, prefix, aggregateID string) ([]aggregates.Event, error) {
	var problems []error
	if err := k.Validate(); err != nil {
		problems = append(problems, err)
	}
	if dec == nil {
		problems = append(problems, errors.New("no decoder: pass the aggregates.Kind of the aggregate"))
	}
	if prefix == "" {
		problems = append(problems, errors.New("empty topic prefix: pass the prefix the processor serves, e.g. \"orders\""))
	}
	if aggregateID == "" {
		problems = append(problems, errors.New("empty aggregate id"))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("reading history: %w", errors.Join(problems...))
	}
	topic := topics.For(prefix).Events
	cl, err := k.newClient(kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return nil, err
	}
	defer cl.Close()

	stable, err := partitionOffsets(ctx, kadm.NewClient(cl).ListCommittedOffsets, topic)
	if err != nil {
		return nil, fmt.Errorf("reading history of %q: %w", aggregateID, err)
	}
	part := topics.NewOwner().Of([]byte(aggregateID), int32(len(stable)))
	end, ok := stable[part]
	if !ok {
		return nil, fmt.Errorf("reading history of %q: topic %s lists no partition %d of %d: partitions must be numbered 0..n-1", aggregateID, topic, part, len(stable))
	}
	if end <= 0 {
		return nil, nil
	}
	cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{topic: {part: kgo.NewOffset().AtStart()}})

	var out []aggregates.Event
	// Every offset below end is decided, and the records that remain
	// visible (data, and control markers thanks to KeepControlRecords)
	// include one at or past end-1 once the consumer has passed end-1.
	// Aborted data is dropped by the client, but its abort marker follows
	// it.
	for done := false; !done; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("reading history of %q from %s/%d (up to offset %d): %w", aggregateID, topic, part, end, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			var ke *kerr.Error
			if errors.As(err, &ke) && !ke.Retriable {
				ferr = errors.Join(ferr, err)
			}
		})
		if ferr != nil {
			return nil, fmt.Errorf("reading history of %q from %s/%d: %w", aggregateID, topic, part, ferr)
		}
		var derr error
		fs.EachRecord(func(r *kgo.Record) {
			if done || derr != nil {
				return
			}
			if r.Offset >= end-1 {
				done = true
			}
			if r.Offset >= end || r.Attrs.IsControl() || !isKeyOf(r.Key, aggregateID) {
				return
			}
			e, err := dec.DecodeEvent(r.Value)
			if err != nil {
				derr = fmt.Errorf("reading history of %q: event at %s/%d offset %d: %w", aggregateID, r.Topic, r.Partition, r.Offset, err)
				return
			}
			if e.Subject != aggregateID {
				derr = fmt.Errorf("reading history of %q: event at %s/%d offset %d is keyed %q but its subject is %q: the events topic is corrupt", aggregateID, r.Topic, r.Partition, r.Offset, r.Key, e.Subject)
				return
			}
			out = append(out, e)
		})
		if derr != nil {
			return nil, derr
		}
	}
	slices.SortStableFunc(out, func(a, b aggregates.Event) int {
		switch {
		case a.Version < b.Version:
			return -1
		case a.Version > b.Version:
			return 1
		}
		return 0
	})
	out = slices.CompactFunc(out, func(a, b aggregates.Event) bool { return a.Version == b.Version })
	return out, nil
}

// isKeyOf reports whether key is topics.EventKey(id, v) for some v.
func isKeyOf(key []byte, id string) bool {
	got, ok := aggregateOfKey(key)
	return ok && string(got) == id
}
