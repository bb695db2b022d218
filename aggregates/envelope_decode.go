package aggregates

import (
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// Reading the CloudEvents envelope is most of the cost of a restore, and
// encoding/json spends it on reflection and on validating the document in a
// separate pass. readEnvelope reads the envelopes Chronicle writes (the
// lower-case attribute names, each once, plain strings, integer versions)
// in one pass and without reflection. Anything else — escapes in strings,
// unknown or differently cased attributes, repeated attributes, malformed
// input — makes it give up, and encoding/json reads the document instead,
// with its exact semantics and errors. A fuzz test checks that whatever the
// fast reader accepts, encoding/json reads identically.

// envelopeFields are the attributes of eventWire, by JSON name.
const (
	fSpecVersion = iota
	fID
	fType
	fSource
	fSubject
	fTime
	fDataContentType
	fAggregateType
	fVersion
	fSchemaVersion
	fCausationID
	fCorrelationID
	fActor
	fTraceParent
	fData
	nFields
)

func envelopeField(key []byte) int {
	switch string(key) { // does not allocate
	case "specversion":
		return fSpecVersion
	case "id":
		return fID
	case "type":
		return fType
	case "source":
		return fSource
	case "subject":
		return fSubject
	case "time":
		return fTime
	case "datacontenttype":
		return fDataContentType
	case "aggregatetype":
		return fAggregateType
	case "aggregateversion":
		return fVersion
	case "schemaversion":
		return fSchemaVersion
	case "causationid":
		return fCausationID
	case "correlationid":
		return fCorrelationID
	case "actor":
		return fActor
	case "traceparent":
		return fTraceParent
	case "data":
		return fData
	}
	return -1
}

// readEnvelope fills w from b as json.Unmarshal would (but for the
// aggregate version, which it sets in w.version and w.hasVersion), and
// reports whether it could. On false, w is partly filled and must be discarded. w.Data
// aliases b.
func readEnvelope(b []byte, w *eventWire, intern map[string]string) bool {
	r := reader{b: b, intern: intern}
	r.space()
	if !r.eat('{') {
		return false
	}
	var seen [nFields]bool
	r.space()
	if r.eat('}') {
		return r.end()
	}
	for {
		r.space()
		key, ok := r.plainString()
		if !ok {
			return false
		}
		f := envelopeField(key)
		if f < 0 || seen[f] {
			return false // unknown, differently cased or repeated: let encoding/json decide
		}
		seen[f] = true
		r.space()
		if !r.eat(':') {
			return false
		}
		r.space()
		if !r.value(f, w) {
			return false
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

type reader struct {
	b      []byte
	i      int
	intern map[string]string // common strings, kept once (may be nil)
}

func (r *reader) space() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

func (r *reader) eat(c byte) bool {
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

func (r *reader) end() bool {
	r.space()
	return r.i == len(r.b)
}

func (r *reader) literal(s string) bool {
	if len(r.b)-r.i >= len(s) && string(r.b[r.i:r.i+len(s)]) == s {
		r.i += len(s)
		return true
	}
	return false
}

// word is literal for the attribute names of readReplayLayout: it compares
// eight bytes at a time inline, which for these short strings is cheaper
// than the runtime's comparison.
func (r *reader) word(s string) bool {
	b := r.b[r.i:]
	if len(b) < len(s) {
		return false
	}
	i := 0
	for ; i+8 <= len(s); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) != le64(s[i:]) {
			return false
		}
	}
	for ; i < len(s); i++ {
		if b[i] != s[i] {
			return false
		}
	}
	r.i += len(s)
	return true
}

// le64 is binary.LittleEndian.Uint64 of the first eight bytes of s.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// plainString reads a string without escapes and returns its contents:
// exactly the bytes encoding/json would produce, valid UTF-8 included.
func (r *reader) plainString() ([]byte, bool) {
	if !r.eat('"') {
		return nil, false
	}
	start, ascii := r.i, true
	b := r.b
	i := r.i
	// Eight bytes at a time while none is special; the loop below reads
	// the rest, and the eight bytes that hold a special one.
	for ; i+8 <= len(b); i += 8 {
		if plain8(binary.LittleEndian.Uint64(b[i:])) {
			continue
		}
		break
	}
	for ; i < len(b); i++ {
		switch strClass[b[i]] {
		case 0:
		case 1:
			s := b[start:i]
			r.i = i + 1
			return s, ascii || utf8.Valid(s)
		case 2:
			return nil, false
		default:
			ascii = false
		}
	}
	return nil, false
}

// plain8 reports whether the eight bytes of x are all plain in a string:
// printable ASCII but the quote and the backslash. It may report false for
// plain bytes, never true for others (the tests of zero bytes have false
// positives only).
func plain8(x uint64) bool {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	q, bs := x^(lo*'"'), x^(lo*'\\')
	return ((q-lo)&^q|(bs-lo)&^bs|(x-lo*0x20)&^x|x)&hi == 0
}

// strClass classifies the bytes of a JSON string for plainString: 0 plain,
// 1 the closing quote, 2 a backslash or a control character (give up), 3
// not ASCII (check UTF-8). A constant, indexed like an array.
const strClass = "\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02\x02" +
	"\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" +
	"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00" +
	"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00" +
	"\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03" +
	"\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03" +
	"\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03" +
	"\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03\x03"

// integer reads a JSON number that is an integer without fraction or
// exponent and fits an int64.
func (r *reader) integer() (int64, bool) {
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	digits := r.i
	var v int64 // the digits' value while it cannot overflow
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		v = v*10 + int64(r.b[r.i]-'0')
		r.i++
	}
	n := r.i - digits
	if n == 0 || n > 1 && r.b[digits] == '0' { // JSON allows no leading zeros
		return 0, false
	}
	if r.i < len(r.b) && (r.b[r.i] == '.' || r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		return 0, false
	}
	if n <= 18 { // below 10^18: v is exact
		if digits > start {
			v = -v
		}
		return v, true
	}
	v, err := strconv.ParseInt(string(r.b[start:r.i]), 10, 64)
	return v, err == nil
}

// common reads a string attribute that usually is one of r.intern, kept
// once.
func (r *reader) common(dst *string) bool {
	if r.literal("null") {
		return true
	}
	s, ok := r.plainString()
	if !ok {
		return false
	}
	if v, ok := r.intern[string(s)]; ok {
		*dst = v
	} else {
		*dst = string(s)
	}
	return true
}

// str reads a string attribute. null leaves it unchanged, as encoding/json
// does.
func (r *reader) str(dst *string, known string) bool {
	if r.literal("null") {
		return true
	}
	s, ok := r.plainString()
	if !ok {
		return false
	}
	if string(s) == known {
		*dst = known // the usual value: no allocation
	} else {
		*dst = string(s)
	}
	return true
}

func (r *reader) value(f int, w *eventWire) bool {
	switch f {
	case fSpecVersion:
		return r.str(&w.SpecVersion, SpecVersion)
	case fID:
		if r.literal("null") {
			return true
		}
		s, ok := r.plainString()
		w.idText = s
		return ok
	case fType:
		return r.common(&w.Type)
	case fSource:
		return r.common(&w.Source)
	case fSubject:
		return r.str(&w.Subject, "")
	case fDataContentType:
		return r.str(&w.DataContentType, "application/json")
	case fAggregateType:
		return r.common(&w.AggregateType)
	case fCausationID:
		return r.str(&w.CausationID, "")
	case fCorrelationID:
		return r.str(&w.CorrelationID, w.CausationID) // usually the same
	case fActor:
		return r.str(&w.Actor, "")
	case fTraceParent:
		return r.str(&w.TraceParent, "")
	case fTime:
		if r.literal("null") {
			return true
		}
		start := r.i
		if _, ok := r.plainString(); !ok {
			return false
		}
		return w.Time.UnmarshalJSON(r.b[start:r.i]) == nil // encoding/json calls the same method
	case fVersion:
		if r.literal("null") {
			w.hasVersion = false
			return true
		}
		v, ok := r.integer()
		w.version, w.hasVersion = v, true // not w.Version: a pointer would put it on the heap
		return ok
	case fSchemaVersion:
		if r.literal("null") {
			return true
		}
		v, ok := r.integer()
		w.SchemaVersion = int(v)
		return ok && int64(int(v)) == v
	case fData:
		start := r.i
		if !r.valid(0) {
			return false
		}
		w.Data = r.b[start:r.i:r.i]
		return true
	}
	return false
}

// valid passes over one JSON value, as json.Valid would judge it: true
// exactly when json.Valid accepts the value (a fuzz test holds it to that),
// nesting included (at most maxDepth levels).
func (r *reader) valid(depth int) bool {
	if r.i >= len(r.b) {
		return false
	}
	switch c := r.b[r.i]; c {
	case '"':
		return r.validString()
	case '{', '[':
		if depth >= maxDepth {
			return false
		}
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		r.i++
		r.space()
		if r.eat(closing) {
			return true
		}
		for {
			r.space()
			if c == '{' {
				if r.i >= len(r.b) || r.b[r.i] != '"' || !r.validString() {
					return false
				}
				r.space()
				if !r.eat(':') {
					return false
				}
				r.space()
			}
			if !r.valid(depth + 1) {
				return false
			}
			r.space()
			if r.eat(closing) {
				return true
			}
			if !r.eat(',') {
				return false
			}
		}
	case 't':
		return r.literal("true")
	case 'f':
		return r.literal("false")
	case 'n':
		return r.literal("null")
	}
	return r.validNumber()
}

// maxDepth is encoding/json's bound on nesting.
const maxDepth = 10000

// validString passes over a string (r.b[r.i] is its quote): any byte but
// control characters, and the escapes JSON has.
func (r *reader) validString() bool {
	r.i++
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			r.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			r.i++
			if r.i >= len(r.b) {
				return false
			}
			switch r.b[r.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(r.b)-r.i < 5 {
					return false
				}
				for _, h := range r.b[r.i+1 : r.i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				r.i += 4
			default:
				return false
			}
		}
		r.i++
	}
	return false
}

// validNumber passes over a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (r *reader) validNumber() bool {
	b := r.b
	i := r.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return false
		}
	}
	r.i = i
	return true
}

// decodeWire reads the envelope into w, fast when it can. The aggregate
// version is in w.version and w.hasVersion, not w.Version.
func decodeWire(b []byte, w *eventWire, intern map[string]string) error {
	if readEnvelope(b, w, intern) {
		return nil
	}
	var slow eventWire // a variable of its own, so that w stays on the stack
	if err := json.Unmarshal(b, &slow); err != nil {
		return err
	}
	*w = slow
	if slow.Version != nil {
		w.version, w.hasVersion = *slow.Version, true
	}
	return nil
}

// readCommand fills w from a command document as json.Unmarshal would,
// except for the id, which it returns as text (aliasing b) instead of
// setting w.ID, and reports whether it could. Like readEnvelope it gives
// up on anything unusual (escapes, other keys, repeated keys), and
// encoding/json reads the document instead. w.Data aliases b; the other
// strings share one allocation.
func readCommand(b []byte, w *commandWire) (id []byte, ok bool) {
	r := reader{b: b}
	var (
		seen                             [6]bool
		typ, agg, corr, actor, tp, stamp []byte
		hasStamp                         bool
	)
	r.space()
	if !r.eat('{') {
		return nil, false
	}
	r.space()
	if !r.eat('}') {
		for {
			r.space()
			key, ok := r.plainString()
			if !ok {
				return nil, false
			}
			f := -1
			switch string(key) {
			case "id":
				f = 0
			case "type":
				f = 1
			case "aggregate_id":
				f = 2
			case "expected_version":
				f = 3
			case "data":
				f = 4
			case "metadata":
				f = 5
			}
			if f < 0 || seen[f] {
				return nil, false
			}
			seen[f] = true
			r.space()
			if !r.eat(':') {
				return nil, false
			}
			r.space()
			switch f {
			case 0:
				ok = r.optString(&id)
			case 1:
				ok = r.optString(&typ)
			case 2:
				ok = r.optString(&agg)
			case 3:
				if r.literal("null") {
					w.ExpectedVersion, ok = nil, true
				} else {
					var v int64
					v, ok = r.integer()
					w.ExpectedVersion = &v
				}
			case 4:
				start := r.i
				if ok = r.valid(0); ok {
					w.Data = b[start:r.i:r.i]
				}
			case 5:
				ok = r.metadata(&corr, &actor, &tp, &stamp, &hasStamp)
			}
			if !ok {
				return nil, false
			}
			r.space()
			if r.eat('}') {
				break
			}
			if !r.eat(',') {
				return nil, false
			}
		}
	}
	if !r.end() {
		return nil, false
	}
	if hasStamp && w.Metadata.Timestamp.UnmarshalJSON(stamp) != nil {
		return nil, false
	}
	// One allocation for every string of the envelope.
	var sb strings.Builder
	sb.Grow(len(typ) + len(agg) + len(corr) + len(actor) + len(tp))
	for _, s := range [...][]byte{typ, agg, corr, actor, tp} {
		sb.Write(s)
	}
	all := sb.String()
	next := func(s []byte) string {
		v := all[:len(s)]
		all = all[len(s):]
		return v
	}
	w.Type, w.AggregateID = next(typ), next(agg)
	w.Metadata.CorrelationID, w.Metadata.Actor, w.Metadata.TraceParent = next(corr), next(actor), next(tp)
	return id, true
}

// optString reads a string without escapes, or null (leaving *dst).
func (r *reader) optString(dst *[]byte) bool {
	if r.literal("null") {
		return true
	}
	s, ok := r.plainString()
	if ok {
		*dst = s
	}
	return ok
}

// metadata reads the metadata object: its strings, and the timestamp's
// JSON text (with its quotes) for time.Time.UnmarshalJSON.
func (r *reader) metadata(corr, actor, tp, stamp *[]byte, hasStamp *bool) bool {
	if r.literal("null") {
		return true
	}
	if !r.eat('{') {
		return false
	}
	var seen [4]bool
	r.space()
	if r.eat('}') {
		return true
	}
	for {
		r.space()
		key, ok := r.plainString()
		if !ok {
			return false
		}
		f := -1
		switch string(key) {
		case "correlation_id":
			f = 0
		case "actor":
			f = 1
		case "traceparent":
			f = 2
		case "timestamp":
			f = 3
		}
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
			ok = r.optString(corr)
		case 1:
			ok = r.optString(actor)
		case 2:
			ok = r.optString(tp)
		case 3:
			if r.literal("null") {
				ok = true
				break
			}
			start := r.i
			if _, ok = r.plainString(); ok {
				*stamp, *hasStamp = r.b[start:r.i], true
			}
		}
		if !ok {
			return false
		}
		r.space()
		if r.eat('}') {
			return true
		}
		if !r.eat(',') {
			return false
		}
	}
}

// parseULID is ulid.ParseStrict of text without converting it to a
// string: 26 Crockford digits are decoded here (decodeULID accepts
// exactly what ParseStrict does); anything else takes ParseStrict itself,
// for its exact error.
func parseULID(text []byte) (ulid.ULID, error) {
	if len(text) == ulid.EncodedSize {
		if hi, lo, ok := decodeULID((*[ulid.EncodedSize]byte)(text)); ok {
			return ulidOf(hi, lo), nil
		}
	}
	return ulid.ParseStrict(string(text))
}

// parseULIDString is parseULID of a string.
func parseULIDString(s string) (ulid.ULID, error) {
	if len(s) == ulid.EncodedSize {
		var v [ulid.EncodedSize]byte
		copy(v[:], s)
		if hi, lo, ok := decodeULID(&v); ok {
			return ulidOf(hi, lo), nil
		}
	}
	return ulid.ParseStrict(s)
}

// ulidOf is the ULID of big-endian halves hi and lo.
func ulidOf(hi, lo uint64) (id ulid.ULID) {
	binary.BigEndian.PutUint64(id[:8], hi)
	binary.BigEndian.PutUint64(id[8:], lo)
	return id
}

// crockford reports whether c is a digit of ULID's base32 alphabet, in
// either case, as ulid's strict parser accepts.
func crockford(c byte) bool {
	switch {
	case c >= '0' && c <= '9':
		return true
	case c >= 'a' && c <= 'z':
		c -= 'a' - 'A'
	}
	return c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U'
}

// replayWire is what a replay needs of an event document, as readReplay
// finds it: every slice aliases the document.
type replayWire struct {
	typ, subject, causation, data []byte
	version, schema               int64
	// unchecked: data was not read as a JSON value, only found as the
	// rest of the document; decoding it checks it.
	unchecked bool
}

// readReplay reads from b what replaying the event needs (its type,
// subject, version, schema version, causation id and data) and checks the
// rest no further than DecodeEvent's verdict requires, without converting
// or parsing what replay does not use. It reports whether b is an event
// DecodeEvent accepts, as far as the envelope goes (the type and the data
// are the caller's to check); on anything it is not sure of (escapes,
// other or repeated attributes, null where a value is required, a time
// not written as Encode writes it) it returns false and the caller
// decodes b with DecodeEvent, whose verdict and errors stand. A fuzz test
// holds it to that.
func readReplay(b []byte, w *replayWire) bool {
	if readReplayLayout(b, w) {
		return true
	}
	*w = replayWire{}
	r := reader{b: b}
	var seen [nFields]bool
	r.space()
	if !r.eat('{') {
		return false
	}
	r.space()
	if r.eat('}') {
		return false // no type, id, subject or version: an error
	}
	for {
		r.space()
		key, ok := r.plainString()
		if !ok {
			return false
		}
		f := envelopeField(key)
		if f < 0 || seen[f] {
			return false
		}
		seen[f] = true
		r.space()
		if !r.eat(':') {
			return false
		}
		r.space()
		if !r.replayValue(f, w) {
			return false
		}
		r.space()
		if r.eat('}') {
			break
		}
		if !r.eat(',') {
			return false
		}
	}
	return r.end() && seen[fSpecVersion] && seen[fID] && seen[fType] && seen[fSubject] && seen[fVersion]
}

func (r *reader) replayValue(f int, w *replayWire) bool {
	switch f {
	case fSpecVersion:
		s, ok := r.plainString()
		return ok && string(s) == SpecVersion
	case fID:
		s, ok := r.plainString()
		return ok && strictULID(s)
	case fType:
		s, ok := r.plainString()
		w.typ = s
		return ok
	case fSubject:
		s, ok := r.plainString()
		w.subject = s
		return ok && len(s) > 0
	case fCausationID:
		if r.literal("null") {
			return true
		}
		s, ok := r.plainString()
		w.causation = s
		return ok
	case fSource, fDataContentType, fAggregateType, fCorrelationID, fActor, fTraceParent:
		if r.literal("null") {
			return true
		}
		_, ok := r.plainString()
		return ok
	case fTime:
		if r.literal("null") {
			return true
		}
		s, ok := r.plainString()
		return ok && canonicalTime(s)
	case fVersion:
		v, ok := r.integer()
		w.version = v
		return ok && v >= 0
	case fSchemaVersion:
		if r.literal("null") {
			return true
		}
		v, ok := r.integer()
		w.schema = v
		return ok && v >= 0 && int64(int(v)) == v
	case fData:
		start := r.i
		if !r.valid(0) {
			return false
		}
		w.data = r.b[start:r.i:r.i]
		return true
	}
	return false
}

// strictULID reports whether ulid.ParseStrict accepts text: 26 digits of
// Crockford's base32, the first at most 7.
func strictULID(text []byte) bool {
	if len(text) != ulid.EncodedSize || text[0] > '7' {
		return false
	}
	for _, c := range text {
		if !crockford(c) {
			return false
		}
	}
	return true
}

// canonicalTime reports whether s is a time as Encode writes it, in UTC:
// YYYY-MM-DDTHH:MM:SS, an optional fraction of 1 to 9 digits, and Z. Such
// a time is one time.Time.UnmarshalJSON reads and whose year is in
// 0000-9999. Other forms, valid or not, are left to DecodeEvent.
func canonicalTime(s []byte) bool {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[len(s)-1] != 'Z' {
		return false
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range s[i : i+n] {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	if year < 0 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		num(11, 2) < 0 || num(11, 2) > 23 || num(14, 2) < 0 || num(14, 2) > 59 || num(17, 2) < 0 || num(17, 2) > 59 {
		return false
	}
	frac := s[19 : len(s)-1]
	if len(frac) == 0 {
		return true
	}
	return frac[0] == '.' && len(frac) >= 2 && len(frac) <= 10 && num(20, len(frac)-1) >= 0
}

// daysIn is the number of days of month in year (proleptic Gregorian).
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// readReplayLayout is readReplay for the layout Encode writes: the
// attributes in its order, without white space, the optional ones present
// or not. It matches the attribute names as one literal each and reads
// only the values; it accepts a subset of what the general loop accepts,
// with the same checks of every value, and gives up on anything else.
func readReplayLayout(b []byte, w *replayWire) bool {
	r := reader{b: b}
	if !r.word(`{"specversion":"1.0","id":"`) || len(b)-r.i < ulid.EncodedSize+1 {
		return false
	}
	r.i-- // the id's opening quote
	id, ok := r.plainString()
	if !ok || !strictULID(id) || !r.word(`,"type":`) {
		return false
	}
	if w.typ, ok = r.plainString(); !ok || !r.word(`,"source":`) {
		return false
	}
	if _, ok = r.plainString(); !ok || !r.word(`,"subject":`) {
		return false
	}
	if w.subject, ok = r.plainString(); !ok || len(w.subject) == 0 || !r.word(`,"time":`) {
		return false
	}
	t, ok := r.plainString()
	if !ok || !canonicalTime(t) || !r.word(`,"datacontenttype":"application/json","aggregatetype":`) {
		return false
	}
	if _, ok = r.plainString(); !ok || !r.word(`,"aggregateversion":`) {
		return false
	}
	if w.version, ok = r.digits(); !ok || !r.word(`,"schemaversion":`) {
		return false
	}
	if w.schema, ok = r.digits(); !ok {
		return false
	}
	if r.word(`,"causationid":`) {
		if w.causation, ok = r.plainString(); !ok {
			return false
		}
	}
	for _, name := range [...]string{`,"correlationid":`, `,"actor":`, `,"traceparent":`} {
		if r.word(name) {
			if _, ok = r.plainString(); !ok {
				return false
			}
		}
	}
	if !r.word(`,"data":`) || len(b)-r.i < 2 || b[len(b)-1] != '}' {
		return false
	}
	// The data is the rest of the document, but its closing brace: the
	// caller's decoding of it reads it as a JSON value, or gives up.
	w.data, w.unchecked = b[r.i:len(b)-1:len(b)-1], true
	return true
}

// digits reads a non-negative integer of at most 18 digits without a
// leading zero (so it fits an int64, and an int), as JSON and
// strconv.ParseInt read it.
func (r *reader) digits() (int64, bool) {
	var v int64
	start := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		v = v*10 + int64(r.b[r.i]-'0')
		r.i++
	}
	n := r.i - start
	if n == 0 || n > 18 || n > 1 && r.b[start] == '0' {
		return 0, false
	}
	if r.i < len(r.b) && (r.b[r.i] == '.' || r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		return 0, false
	}
	return v, true
}
