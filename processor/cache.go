package processor

import (
	"container/list"

	"github.com/chronicle-es/chronicle/aggregates"
)

// entry is one cached aggregate.
type entry struct {
	agg aggregates.Aggregate
	// offset is the events-topic offset of the aggregate's last committed
	// event (-1: unknown or none), stored with its snapshot.
	offset int64
	// stored is the version of the aggregate's snapshot the store
	// acknowledged (-1: none needed, the aggregate has no events; -2:
	// unknown); queued the version last handed to the writer.
	stored, queued int64
	elem           *list.Element
}

// cache holds a partition's aggregates, least recently used last. It is not
// safe for concurrent use: only the partition's worker touches it.
type cache struct {
	entries map[string]*entry
	order   list.List // of string ids, most recent first
}

func newCache() *cache { return &cache{entries: map[string]*entry{}} }

// get returns the entry of id and marks it most recently used.
func (c *cache) get(id string) *entry {
	e := c.entries[id]
	if e != nil {
		c.order.MoveToFront(e.elem)
	}
	return e
}

// getKey is get of the id key (a record key), without converting it.
func (c *cache) getKey(key []byte) *entry {
	e := c.entries[string(key)]
	if e != nil {
		c.order.MoveToFront(e.elem)
	}
	return e
}

// put adds an aggregate as the most recently used.
func (c *cache) put(agg aggregates.Aggregate, offset int64) *entry {
	e := &entry{agg: agg, offset: offset, stored: -2, queued: -2}
	e.elem = c.order.PushFront(agg.ID())
	c.entries[agg.ID()] = e
	return e
}

// len returns how many aggregates are cached.
func (c *cache) len() int { return len(c.entries) }

// oldest returns the least recently used entry, or nil.
func (c *cache) oldest() *entry {
	back := c.order.Back()
	if back == nil {
		return nil
	}
	return c.entries[back.Value.(string)]
}

// remove drops id.
func (c *cache) remove(id string) {
	if e := c.entries[id]; e != nil {
		c.order.Remove(e.elem)
		delete(c.entries, id)
	}
}
