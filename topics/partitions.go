package topics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrPartitionsChanged is matched (errors.Is) by a *PartitionsChangedError.
var ErrPartitionsChanged = errors.New("the partition count of the topics changed")

// PartitionsChangedError says that the commands, events or state topic no
// longer has the partition count the processor started with.
type PartitionsChangedError struct {
	// Prefix is the aggregate type's topic prefix.
	Prefix string
	// Want is the partition count the processor started with.
	Want int32
	// Got is each changed topic's partition count now.
	Got map[string]int32
}

// Error says which topics changed, why that forks history, and how to
// recover.
func (e *PartitionsChangedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "the topics of %q changed under the processor, which started with %d partitions:", e.Prefix, e.Want)
	for _, t := range slices.Sorted(maps.Keys(e.Got)) {
		fmt.Fprintf(&b, " %s now has %d;", t, e.Got[t])
	}
	fmt.Fprintf(&b, " an aggregate lives in partition murmur2(id) mod the partition count, so with another count most aggregates would move to a partition without their events"+
		" and be decided on from an empty history, forking it (a second event at versions that already exist). Processing of %q stops. "+
		"Kafka cannot remove partitions, so this cannot be undone in place: stop every processor and producer of %q, then recreate its topics with %d partitions and copy every record of partition p of the old events and state topics to partition p of the new ones (or restore them from a backup), re-send the commands of the added partitions, and restart. "+
		"Never run kafka-topics --alter --partitions on Chronicle topics that hold data",
		e.Prefix, e.Prefix, e.Want)
	return b.String()
}

// Is reports whether target is ErrPartitionsChanged.
func (e *PartitionsChangedError) Is(target error) bool { return target == ErrPartitionsChanged }

// CheckPartitions returns a *PartitionsChangedError (errors.Is
// ErrPartitionsChanged) if the commands, events or state topic of n no
// longer has want partitions (someone ran kafka-topics --alter). Call it
// with the count Ensure returned, on every assignment and periodically. It
// asks the brokers directly, not the client's metadata cache, so a change
// is seen at once. A topic the brokers do not report (deleted, or metadata
// not yet propagated after a broker restart) gives a plain error, not a
// *PartitionsChangedError: it may be transient, so retry it.
func CheckPartitions(ctx context.Context, cl *kgo.Client, n Names, want int32) error {
	counts, err := partitionCounts(ctx, cl, []string{n.Commands, n.Events, n.State})
	if err != nil {
		return fmt.Errorf("checking the partition counts of %q: %w (check that the brokers are reachable)", n.Prefix, err)
	}
	got := map[string]int32{}
	for _, t := range []string{n.Commands, n.Events, n.State} {
		c, ok := counts[t]
		if !ok {
			return fmt.Errorf("checking the partition count of %s: the brokers do not report the topic (if it was deleted, stop the processors of %q and restore it from a backup; a freshly restarted broker may also not know it yet)", t, n.Prefix)
		}
		if c != want {
			got[t] = c
		}
	}
	if len(got) > 0 {
		return &PartitionsChangedError{Prefix: n.Prefix, Want: want, Got: got}
	}
	return nil
}
