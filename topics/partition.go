package topics

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// EventKey is the record key of an aggregate's event: the aggregate id, "@",
// and the version as 20 zero-padded digits. It is unique per event, so
// compaction never removes history, and it sorts in version order.
func EventKey(aggregateID string, version int64) []byte {
	return fmt.Appendf(make([]byte, 0, len(aggregateID)+21), "%s@%020d", aggregateID, version)
}

// Partitioner places records: records whose Partition is set explicitly
// (events, state and forwarded commands, which must land in their aggregate's
// owner partition) stay there; every other record is placed by the murmur2
// hash of its key, as Kafka's Java client does. Use it with
// kgo.RecordPartitioner, and set Record.Partition to -1 for hashed records.
func Partitioner() kgo.Partitioner { return partitioner{hash: kgo.StickyKeyPartitioner(nil)} }

type partitioner struct{ hash kgo.Partitioner }

func (p partitioner) ForTopic(t string) kgo.TopicPartitioner {
	return topicPartitioner{hash: p.hash.ForTopic(t)}
}

type topicPartitioner struct{ hash kgo.TopicPartitioner }

func (p topicPartitioner) RequiresConsistency(*kgo.Record) bool { return true }

func (p topicPartitioner) Partition(r *kgo.Record, n int) int {
	if r.Partition >= 0 && int(r.Partition) < n {
		return int(r.Partition)
	}
	return p.hash.Partition(r, n)
}

// Owner returns the partition that owns aggregateID among n partitions:
// murmur2(id) mod n, the default of Kafka's Java client and of franz-go.
// It is safe for concurrent use.
type Owner struct{ tp kgo.TopicPartitioner }

// NewOwner returns an Owner.
func NewOwner() Owner { return Owner{tp: kgo.StickyKeyPartitioner(nil).ForTopic("")} }

// Of returns the owner partition of key among n partitions.
func (o Owner) Of(key []byte, n int32) int32 {
	r := kgo.Record{Key: key}
	return int32(o.tp.Partition(&r, int(n)))
}
