package client

import (
	"strconv"
	"testing"

	"github.com/chronicle-es/chronicle/topics"
)

// Event keys come from the topic, so from anyone who can write to it.
func FuzzAggregateOfKey(f *testing.F) {
	f.Add([]byte("order-1@00000000000000000003"))
	f.Add([]byte("a@b@00000000000000000000"))
	f.Add([]byte("@00000000000000000000"))
	f.Add([]byte("x@0000000000000000000x"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, key []byte) {
		id, ok := aggregateOfKey(key)
		if !ok {
			return
		}
		digits := key[len(id)+1:]
		if len(id) == 0 || key[len(id)] != '@' || len(digits) != 20 {
			t.Fatalf("%q: accepted with id %q and version digits %q", key, id, digits)
		}
		// Twenty digits may overflow an int64; the key is still well
		// formed for routing, which is all the reader needs.
		if v, err := strconv.ParseInt(string(digits), 10, 64); err == nil {
			if back := topics.EventKey(string(id), int64(v)); string(back) != string(key) {
				t.Fatalf("%q: id %q version %d encode to %q", key, id, v, back)
			}
		}
	})
}

func TestAggregateOfKeyRoundTrips(t *testing.T) {
	for _, id := range []string{"o", "order-1", "a@b", "a@00000000000000000001"} {
		for _, v := range []int64{0, 7, 1 << 40} {
			got, ok := aggregateOfKey(topics.EventKey(id, v))
			if !ok || string(got) != id {
				t.Errorf("EventKey(%q, %d): got %q, %v", id, v, got, ok)
			}
		}
	}
	for _, bad := range []string{"", "order-1", "order-1@1", "order-1#00000000000000000001", "@00000000000000000001"} {
		if id, ok := aggregateOfKey([]byte(bad)); ok {
			t.Errorf("%q: accepted as key of %q", bad, id)
		}
	}
}
