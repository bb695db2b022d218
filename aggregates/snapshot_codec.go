package aggregates

// Snapshots are read and written on every checkpoint restore, cache miss,
// checkpoint and eviction: this file holds their fast reader and the text
// of ULIDs both ways (most of a snapshot is its window of 32 ids).

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"unsafe"

	"github.com/oklog/ulid/v2"
)

// snapshotRead is what readSnapshot finds in a snapshot besides the state.
type snapshotRead struct {
	id      []byte // aliases the document
	version int64
	// recent is the window json.Unmarshal's ids make when added one by one
	// to an empty window of the definition's size.
	recent window
}

// readSnapshot reads a snapshot document as json.Unmarshal of a
// snapshotWire would, the state by its plan into the zero value at state,
// and the recent ids straight into a window of max ids, and reports
// whether it could; anything unusual (other keys, escapes, null, a state
// the plan does not read) makes it give up, and the caller uses
// encoding/json. A fuzz test holds it to that.
func readSnapshot(b []byte, p *plan, state unsafe.Pointer, max int, out *snapshotRead) bool {
	if p == nil || !p.decodable || p.kind != reflect.Struct {
		return false
	}
	out.recent = window{max: max}
	r := reader{b: b}
	var seen [4]bool
	r.space()
	if !r.eat('{') {
		return false
	}
	r.space()
	if r.eat('}') {
		return r.end()
	}
	for {
		r.space()
		f := r.snapshotKey()
		if f < 0 || seen[f] {
			return false
		}
		seen[f] = true
		r.space()
		if !r.eat(':') {
			return false
		}
		r.space()
		switch f {
		case 0:
			s, ok := r.plainString()
			if !ok {
				return false
			}
			out.id = s
		case 1:
			v, ok := r.integer()
			if !ok {
				return false
			}
			out.version = v
		case 2:
			if !p.decodeValue(&r, state, 0) {
				return false
			}
		case 3:
			if !r.recent(&out.recent) {
				return false
			}
		}
		r.space()
		if r.eat('}') {
			return r.end()
		}
		if !r.eat(',') {
			return false
		}
	}
}

// snapshotKey reads a key of a snapshot document and returns the field it
// names (0 id, 1 version, 2 state, 3 recent), or -1 for anything else.
// The keys are matched with their quotes, as plainString would read them.
func (r *reader) snapshotKey() int {
	for f, k := range [...]string{`"id"`, `"version"`, `"state"`, `"recent"`} {
		if r.literal(k) {
			return f
		}
	}
	return -1 // another key, or one plainString would read otherwise
}

// recent reads the array of recent command ids into w as adding the ids
// json.Unmarshal reads, one by one, would make it.
func (r *reader) recent(w *window) bool {
	if !r.eat('[') {
		return false
	}
	r.space()
	if r.eat(']') {
		return true
	}
	if w.max > 0 {
		// MarshalSnapshot writes n ids in 29n-1 bytes: size the ring for
		// them at once. Anything else only costs a growth.
		n := len(r.b) - r.i
		if end := bytes.IndexByte(r.b[r.i:], ']'); end >= 0 {
			n = end
		}
		w.ids = make([]ulid.ULID, 0, min(w.max, max(1, (n+1)/(ulid.EncodedSize+3))))
	}
	// The id added last, which add compares each id with: the one read
	// last (add skips only an id equal to it), zero before the first.
	var lastHi, lastLo uint64
	for {
		if r.i < len(r.b) && r.b[r.i] != '"' {
			r.space()
		}
		hi, lo, ok := r.ulid()
		if !ok {
			return false
		}
		if hi != lastHi || lo != lastLo {
			// w.add, inline for the usual ring with room and capacity.
			if n := len(w.ids); n < w.max && n < cap(w.ids) {
				w.ids = w.ids[:n+1]
				binary.BigEndian.PutUint64(w.ids[n][:8], hi)
				binary.BigEndian.PutUint64(w.ids[n][8:], lo)
			} else {
				var id ulid.ULID
				binary.BigEndian.PutUint64(id[:8], hi)
				binary.BigEndian.PutUint64(id[8:], lo)
				w.add(id)
			}
			lastHi, lastLo = hi, lo
		}
		if r.i < len(r.b) && r.b[r.i] == ',' { // as MarshalSnapshot writes them
			r.i++
			continue
		}
		r.space()
		if r.eat(']') {
			return true
		}
		if !r.eat(',') {
			return false
		}
	}
}

// ulid reads a JSON string and decodes it as ulid.ULID.UnmarshalText does
// (which is what encoding/json calls), into its big-endian halves. The
// usual string of 26 Crockford digits is decoded here; anything else
// takes the long way.
func (r *reader) ulid() (hi, lo uint64, ok bool) {
	const n = ulid.EncodedSize
	if b := r.b[r.i:]; len(b) >= n+2 && b[0] == '"' && b[n+1] == '"' {
		if hi, lo, ok = decodeULID((*[n]byte)(b[1 : n+1])); ok {
			r.i += n + 2
			return hi, lo, true
		}
	}
	var id ulid.ULID
	s, ok := r.plainString()
	if !ok || id.UnmarshalText(s) != nil {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:]), true
}

// decodeULID decodes 26 Crockford digits (either case), the first at most
// 7, as ulid.ULID.UnmarshalText does, into the ULID's big-endian halves,
// and reports whether they were such digits. The digits are read in
// groups of eight, 40 bits each, independently of one another; then the
// 130 bits are a<<90 | b<<50 | c<<10 | e, whose top two are zero. A byte
// that is not a digit reads as all ones (0xFF sign-extended), which sets
// the top bit of its group: one test finds them all.
func decodeULID(v *[ulid.EncodedSize]byte) (hi, lo uint64, ok bool) {
	const t = crockfordValue
	d := func(i int) uint64 { return uint64(int8(t[v[i]])) }
	a := (d(0)<<35 | d(1)<<30) | (d(2)<<25 | d(3)<<20) | (d(4)<<15 | d(5)<<10) | (d(6)<<5 | d(7))
	b := (d(8)<<35 | d(9)<<30) | (d(10)<<25 | d(11)<<20) | (d(12)<<15 | d(13)<<10) | (d(14)<<5 | d(15))
	c := (d(16)<<35 | d(17)<<30) | (d(18)<<25 | d(19)<<20) | (d(20)<<15 | d(21)<<10) | (d(22)<<5 | d(23))
	e := d(24)<<5 | d(25)
	if (a|b|c|e)>>40 != 0 || v[0] > '7' {
		return 0, 0, false
	}
	return a<<26 | b>>14, b<<50 | c<<10 | e, true
}

// crockfordValue is the value of each Crockford digit, in either case, and
// 0xFF for any other byte (ulid's own table). A constant, indexed like an
// array.
const crockfordValue = "\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF" +
	"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\xFF\xFF\xFF\xFF\xFF\xFF" +
	"\xFF\x0A\x0B\x0C\x0D\x0E\x0F\x10\x11\xFF\x12\x13\xFF\x14\x15\xFF\x16\x17\x18\x19\x1A\xFF\x1B\x1C\x1D\x1E\x1F\xFF\xFF\xFF\xFF\xFF" +
	"\xFF\x0A\x0B\x0C\x0D\x0E\x0F\x10\x11\xFF\x12\x13\xFF\x14\x15\xFF\x16\x17\x18\x19\x1A\xFF\x1B\x1C\x1D\x1E\x1F\xFF\xFF\xFF\xFF\xFF" +
	"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF" +
	"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF" +
	"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF" +
	"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF"

// encodeULID writes id as ulid.ULID.MarshalTextTo does, eight digits at
// a time: the 130 bits of the text (two leading zeros) are the groups of
// decodeULID.
func encodeULID(dst *[ulid.EncodedSize]byte, id *ulid.ULID) {
	hi, lo := binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:])
	const mask40 = 1<<40 - 1
	binary.LittleEndian.PutUint64(dst[0:], crockford8(hi>>26))
	binary.LittleEndian.PutUint64(dst[8:], crockford8((hi<<14|lo>>50)&mask40))
	binary.LittleEndian.PutUint64(dst[16:], crockford8(lo>>10&mask40))
	dst[24] = ulid.Encoding[lo>>5&31]
	dst[25] = ulid.Encoding[lo&31]
}

// crockford8 returns the eight digits of the 40 bits of g, the first in
// the lowest byte.
func crockford8(g uint64) uint64 {
	const e = ulid.Encoding
	return (uint64(e[g>>35&31]) | uint64(e[g>>30&31])<<8) | (uint64(e[g>>25&31])<<16 | uint64(e[g>>20&31])<<24) |
		(uint64(e[g>>15&31])<<32 | uint64(e[g>>10&31])<<40) | (uint64(e[g>>5&31])<<48 | uint64(e[g&31])<<56)
}
