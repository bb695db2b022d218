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
