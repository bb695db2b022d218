package aggregates

import "github.com/oklog/ulid/v2"

// window is a small ring of recent command ids. It allocates lazily and never
// grows past max, so an aggregate costs at most max*16 bytes for it.
type window struct {
	ids  []ulid.ULID
	next int // where the next id goes once the ring is full
	max  int
}

func (w *window) contains(id ulid.ULID) bool {
	for i := range w.ids {
		if w.ids[i] == id {
			return true
		}
	}
	return false
}

// add remembers id. A command's events are consecutive in history, so an id
// already remembered can only be the latest one: comparing with it alone
// keeps replay from scanning the whole ring for every event.
func (w *window) add(id ulid.ULID) {
	if w.max == 0 || w.latest() == id {
		return
	}
	if len(w.ids) < w.max {
		if len(w.ids) == cap(w.ids) { // grow as append would, but never past max
			grown := make([]ulid.ULID, len(w.ids), min(w.max, max(1, 2*cap(w.ids))))
			copy(grown, w.ids)
			w.ids = grown
		}
		w.ids = append(w.ids, id)
		return
	}
	w.ids[w.next] = id
	w.next = (w.next + 1) % w.max
}

// latest returns the id added last, or the zero ULID.
func (w *window) latest() ulid.ULID {
	switch {
	case len(w.ids) == 0:
		return ulid.ULID{}
	case len(w.ids) < w.max:
		return w.ids[len(w.ids)-1]
	default:
		return w.ids[(w.next+w.max-1)%w.max]
	}
}

// ordered returns the ids oldest first.
func (w *window) ordered() []ulid.ULID {
	if len(w.ids) < w.max || w.next == 0 {
		return w.ids
	}
	out := make([]ulid.ULID, 0, len(w.ids))
	out = append(out, w.ids[w.next:]...)
	return append(out, w.ids[:w.next]...)
}
