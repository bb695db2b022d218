package processor

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// fill takes n records and n values of size bytes from a, writing marker
// into each, and returns them.
func fill(a *arena, n, size int, marker byte) ([]*kgo.Record, [][]byte) {
	var recs []*kgo.Record
	var vals [][]byte
	for range n {
		r := a.record()
		b := a.start()
		for range size {
			b = append(b, marker)
		}
		r.Value = a.done(b)
		r.Offset = 42
		recs, vals = append(recs, r), append(vals, r.Value)
	}
	return recs, vals
}

func TestArenaReusesBlocksOnlyAfterRelease(t *testing.T) {
	var a arena
	recs, vals := fill(&a, 3*arenaRecords, 300, 'a') // several blocks of each kind
	// More records before any release: none may share memory with the
	// first ones, which the client may still hold.
	more, moreVals := fill(&a, 3*arenaRecords, 300, 'b')
	for i := range vals {
		for _, v := range vals[i] {
			if v != 'a' {
				t.Fatalf("value %d was overwritten before release: %q", i, vals[i])
			}
		}
	}
	old := map[*kgo.Record]bool{}
	for _, r := range append(recs, more...) {
		old[r] = true
		// What handle and the client set on a record.
		r.Topic, r.Key, r.Headers = "t", []byte("k"), []kgo.RecordHeader{{Key: "h"}}
	}
	_ = moreVals

	a.release()
	again, _ := fill(&a, arenaRecords, 300, 'c')
	reused := 0
	for _, r := range again {
		if old[r] {
			reused++
		}
	}
	if reused == 0 {
		t.Fatal("release made no record block available again")
	}
	// A reused record comes back zero, apart from what fill set.
	for _, r := range again {
		if r.Offset != 42 || r.Topic != "" || r.Key != nil || r.Headers != nil {
			t.Fatalf("a reused record was not zeroed: %+v", r)
		}
	}

	// After drop, the blocks handed out since the release are never
	// handed out again.
	dropped := map[*kgo.Record]bool{}
	recsD, valsD := fill(&a, 2*arenaRecords, 300, 'd')
	for _, r := range recsD {
		dropped[r] = true
	}
	a.drop()
	a.release() // releases nothing dropped
	after, _ := fill(&a, 4*arenaRecords, 300, 'e')
	for _, r := range after {
		if dropped[r] {
			t.Fatal("a record handed out before drop was handed out again")
		}
	}
	for i := range valsD {
		for _, v := range valsD[i] {
			if v != 'd' {
				t.Fatalf("value %d, dropped, was overwritten: %q", i, valsD[i])
			}
		}
	}
}

func TestArenaKeepsABoundedFreeList(t *testing.T) {
	var a arena
	fill(&a, (arenaKeep+10)*arenaRecords, 1000, 'x')
	a.release()
	if len(a.freeRecs) > arenaKeep || len(a.freeBufs) > arenaKeep {
		t.Fatalf("free lists hold %d record blocks and %d byte blocks, more than %d", len(a.freeRecs), len(a.freeBufs), arenaKeep)
	}
}
