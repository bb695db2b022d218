package topics

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// EventKey is the record key of an aggregate's event: the aggregate id, "@",
// and the version as 20 zero-padded digits. It is unique per event, so
// compaction never removes history, and it sorts in version order.
func EventKey(aggregateID string, version int64) []byte {
	return AppendEventKey(make([]byte, 0, len(aggregateID)+21), aggregateID, version)
}

// AppendEventKey appends EventKey(aggregateID, version) to b.
func AppendEventKey(b []byte, aggregateID string, version int64) []byte {
	if version < 0 {
		return fmt.Appendf(b, "%s@%020d", aggregateID, version) // never written; kept exact
	}
	b = append(b, aggregateID...)
	b = append(b, '@')
	var digits [20]byte
	for i := len(digits) - 1; i >= 0; i-- {
		digits[i] = byte('0' + version%10)
		version /= 10
	}
	return append(b, digits[:]...)
}

// EventKeyAggregate returns the aggregate id of an event key (EventKey of
// a version >= 0: a non-empty id, "@" and 20 digits), sharing key's memory,
// and whether key is one. Keys come from the topic, so from anyone who can
// write to it: twenty digits may overflow an int64, and such a key is still
// well formed for routing.
func EventKeyAggregate(key []byte) ([]byte, bool) {
	const tail = 21 // "@" and the digits
	if len(key) <= tail || key[len(key)-tail] != '@' {
		return nil, false
	}
	for _, c := range key[len(key)-tail+1:] {
		if c < '0' || c > '9' {
			return nil, false
		}
	}
	return key[:len(key)-tail], true
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
	if len(key) > 0 {
		// What the partitioner computes for a keyed record (kgo.KafkaHasher
		// of murmur2), without building one.
		return int32(int(murmur2(key)&0x7fffffff) % int(n))
	}
	r := kgo.Record{Key: key}
	return int32(o.tp.Partition(&r, int(n)))
}

// murmur2 is Kafka's murmur2 hash, as franz-go and the Java client compute
// it.
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := uint32(b[3])<<24 + uint32(b[2])<<16 + uint32(b[1])<<8 + uint32(b[0])
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
