package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

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
	var (
		out  []aggregates.Event
		derr error // a record of the aggregate that is not history
	)
	events := topics.For(prefix).Events
	_, err := ScanEvents(ctx, k, EventScan{Prefix: prefix, AggregateIDs: []string{aggregateID}}, func(recs []EventRecord) error {
		for _, r := range recs {
			e, err := dec.DecodeEvent(r.Value)
			if err != nil {
				derr = fmt.Errorf("reading history of %q: event at %s/%d offset %d: %w", aggregateID, events, r.Partition, r.Offset, err)
				return derr
			}
			if e.Subject != aggregateID {
				derr = fmt.Errorf("reading history of %q: event at %s/%d offset %d is keyed %q but its subject is %q: the events topic is corrupt", aggregateID, events, r.Partition, r.Offset, r.AggregateID, e.Subject)
				return derr
			}
			out = append(out, e)
		}
		return nil
	})
	if derr != nil {
		return nil, derr
	}
	if err != nil {
		return nil, fmt.Errorf("reading history of %q: %w", aggregateID, err)
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
	got, ok := topics.EventKeyAggregate(key)
	return ok && string(got) == id
}
