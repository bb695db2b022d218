package topics

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestOwnerIsWhatTheKeyPartitionerChooses(t *testing.T) {
	tp := kgo.StickyKeyPartitioner(nil).ForTopic("x")
	o := NewOwner()
	for i := range 5000 {
		key := []byte("order-" + strconv.Itoa(i*7919) + string(rune('a'+i%26)))[:1+i%12]
		for _, n := range []int{1, 2, 3, 6, 7, 64} {
			if got, want := o.Of(key, int32(n)), tp.Partition(&kgo.Record{Key: key}, n); int(got) != want {
				t.Fatalf("Of(%q, %d) = %d, the partitioner chooses %d", key, n, got, want)
			}
		}
	}
}

func TestEventKeysAreZeroPaddedVersions(t *testing.T) {
	for _, v := range []int64{0, 7, 1234567890, 1<<63 - 1, -1} {
		if got, want := string(EventKey("o-1", v)), fmt.Sprintf("o-1@%020d", v); got != want {
			t.Errorf("EventKey(o-1, %d) = %q, want %q", v, got, want)
		}
	}
}

// Event keys come from the topic, so from anyone who can write to it.
func FuzzEventKeyAggregate(f *testing.F) {
	f.Add([]byte("order-1@00000000000000000003"))
	f.Add([]byte("a@b@00000000000000000000"))
	f.Add([]byte("@00000000000000000000"))
	f.Add([]byte("x@0000000000000000000x"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, key []byte) {
		id, ok := EventKeyAggregate(key)
		if !ok {
			return
		}
		digits := key[len(id)+1:]
		if len(id) == 0 || key[len(id)] != '@' || len(digits) != 20 {
			t.Fatalf("%q: accepted with id %q and version digits %q", key, id, digits)
		}
		// Twenty digits may overflow an int64; the key is still well
		// formed for routing, which is all a reader needs.
		if v, err := strconv.ParseInt(string(digits), 10, 64); err == nil {
			if back := EventKey(string(id), v); string(back) != string(key) {
				t.Fatalf("%q: id %q version %d encode to %q", key, id, v, back)
			}
		}
	})
}

func TestEventKeyAggregateRoundTrips(t *testing.T) {
	for _, id := range []string{"o", "order-1", "a@b", "a@00000000000000000001"} {
		for _, v := range []int64{0, 7, 1 << 40, 1<<63 - 1} {
			got, ok := EventKeyAggregate(EventKey(id, v))
			if !ok || string(got) != id {
				t.Errorf("EventKey(%q, %d): got %q, %v", id, v, got, ok)
			}
		}
	}
	for _, bad := range []string{"", "order-1", "order-1@1", "order-1#00000000000000000001", "@00000000000000000001",
		"o-1@0000000000000000001x", "o-1@000000000000000000001", string(EventKey("o-1", -1))} {
		if id, ok := EventKeyAggregate([]byte(bad)); ok {
			t.Errorf("%q: accepted as key of %q", bad, id)
		}
	}
}
