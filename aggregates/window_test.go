package aggregates

import (
	"slices"
	"testing"

	"github.com/oklog/ulid/v2"
)

func TestWindowKeepsTheNewestIDsInOrder(t *testing.T) {
	id := func(n byte) ulid.ULID { return ulid.ULID{15: n} }
	w := window{max: 3}
	for _, n := range []byte{1, 1, 1, 2, 3, 3, 4, 5} { // a command's events repeat its id
		w.add(id(n))
	}
	if got, want := w.ordered(), []ulid.ULID{id(3), id(4), id(5)}; !slices.Equal(got, want) {
		t.Fatalf("ordered() = %v, want %v", got, want)
	}
	if w.contains(id(2)) || !w.contains(id(3)) || !w.contains(id(5)) {
		t.Fatal("contains() disagrees with ordered()")
	}
	if len(w.ids) != 3 {
		t.Fatalf("ring grew to %d", len(w.ids))
	}
	off := window{}
	off.add(id(1))
	if off.contains(id(1)) || off.ids != nil {
		t.Fatal("a window of 0 remembered an id")
	}
	big := window{max: 10}
	for n := range 12 {
		big.add(id(byte(n + 1)))
		if cap(big.ids) > big.max {
			t.Fatalf("after %d ids the ring has room for %d, more than its %d", n+1, cap(big.ids), big.max)
		}
	}
}
