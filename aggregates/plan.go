package aggregates

import (
	"encoding"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"unsafe"
)

// Command payloads, event payloads and states are plain structs of
// strings, integers, booleans, slices and nested structs in almost every
// domain, and encoding/json spends most of the command path on reflecting
// over them. A plan is compiled once per registered type: the fields' JSON
// names, offsets and kinds. It encodes and decodes such values without
// reflection, and gives up on anything it does not handle exactly as
// encoding/json does — then encoding/json does the work, with its exact
// output and errors:
//
//   - encoding: a type (or a field's type) with MarshalJSON or MarshalText,
//     maps, pointers, interfaces, floats, arrays, embedded fields and the
//     ",string" option make the whole type go through encoding/json.
//   - decoding (which also refuses unknown fields): structs and slices of
//     strings, integers and booleans are planned, and any key that is not
//     exactly a field's name, a repeated key, null, a string with escapes,
//     a number that is not a plain integer in range, or anything after the
//     object makes the call go through encoding/json.
//
// Fuzz tests check that whatever a plan produces or accepts, encoding/json
// produces or reads identically.

// plan encodes (and possibly decodes) values of one type.
type plan struct {
	kind   reflect.Kind
	size   uintptr
	fields []planField // structs
	elem   *plan       // slices
	// elemType is the slice type itself, for growing it.
	elemType reflect.Type
	// firstArray is [4] of the slice's elements: its first backing array.
	firstArray reflect.Type
	// decodable: a flat struct whose fields decode without encoding/json.
	decodable bool
}

type planField struct {
	name      string // JSON name
	prefix    string // `"name":` to write
	offset    uintptr
	omitEmpty bool
	p         *plan
}

var (
	jsonMarshaler   = reflect.TypeFor[json.Marshaler]()
	textMarshaler   = reflect.TypeFor[encoding.TextMarshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// planFor returns the plan of t, or nil when encoding/json must handle it.
func planFor(t reflect.Type) *plan { return compile(t, 0) }

func compile(t reflect.Type, depth int) *plan {
	if depth > 8 || t.Implements(jsonMarshaler) || t.Implements(textMarshaler) ||
		reflect.PointerTo(t).Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return nil
	}
	p := &plan{kind: t.Kind(), size: t.Size()}
	switch t.Kind() {
	case reflect.String, reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return p
	case reflect.Slice:
		p.elemType = t
		if t.Elem().Kind() == reflect.Uint8 {
			return nil // base64
		}
		if p.elem = compile(t.Elem(), depth+1); p.elem == nil {
			return nil
		}
		p.firstArray = reflect.ArrayOf(firstCap, t.Elem())
		p.decodable = p.elem.kind != reflect.Struct && p.elem.kind != reflect.Slice || p.elem.decodable
		return p
	case reflect.Struct:
		p.decodable = !t.Implements(jsonUnmarshaler) && !reflect.PointerTo(t).Implements(jsonUnmarshaler) &&
			!t.Implements(textUnmarshaler) && !reflect.PointerTo(t).Implements(textUnmarshaler)
		names := map[string]bool{}
		for i := range t.NumField() {
			f := t.Field(i)
			if f.Anonymous {
				return nil // embedding: encoding/json's promotion rules
			}
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if name == "" {
				name = f.Name
			}
			omit := false
			for _, o := range strings.Split(opts, ",") {
				switch o {
				case "omitempty":
					omit = true
				case "":
				default:
					return nil // string, omitzero, …
				}
			}
			if !plainName(name) || names[name] {
				return nil
			}
			names[name] = true
			fp := compile(f.Type, depth+1)
			if fp == nil {
				return nil
			}
			if (fp.kind == reflect.Slice || fp.kind == reflect.Struct) && !fp.decodable {
				p.decodable = false
			}
			p.fields = append(p.fields, planField{name: name, prefix: `"` + name + `":`, offset: f.Offset, omitEmpty: omit, p: fp})
		}
		return p
	}
	return nil
}

// plainName reports whether a JSON name needs no escaping and is one
// encoding/json accepts as a tag name as it is.
func plainName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return s != ""
}

// encode appends the JSON of the value at v, as json.Marshal writes it.
func (p *plan) encode(b []byte, v unsafe.Pointer) []byte {
	switch p.kind {
	case reflect.String:
		return appendJSONString(b, *(*string)(v))
	case reflect.Bool:
		if *(*bool)(v) {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(b, p.int(v), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.AppendUint(b, p.uint(v), 10)
	case reflect.Slice:
		h := (*sliceHeader)(v)
		if h.data == nil {
			return append(b, "null"...)
		}
		b = append(b, '[')
		for i := range h.len {
			if i > 0 {
				b = append(b, ',')
			}
			b = p.elem.encode(b, unsafe.Add(h.data, uintptr(i)*p.elem.size))
		}
		return append(b, ']')
	case reflect.Struct:
		b = append(b, '{')
		first := true
		for i := range p.fields {
			f := &p.fields[i]
			fv := unsafe.Add(v, f.offset)
			if f.omitEmpty && f.p.empty(fv) {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = append(b, f.prefix...)
			b = f.p.encode(b, fv)
		}
		return append(b, '}')
	}
	panic("aggregates: unplanned kind " + p.kind.String()) // compile admits no other kind
}

// empty is encoding/json's omitempty test for the kinds plans handle.
func (p *plan) empty(v unsafe.Pointer) bool {
	switch p.kind {
	case reflect.String:
		return len(*(*string)(v)) == 0
	case reflect.Bool:
		return !*(*bool)(v)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return p.int(v) == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return p.uint(v) == 0
	case reflect.Slice:
		return (*sliceHeader)(v).len == 0
	}
	return false // structs are never empty to encoding/json
}

type sliceHeader struct {
	data unsafe.Pointer
	len  int
	cap  int
}

func (p *plan) int(v unsafe.Pointer) int64 {
	switch p.size {
	case 1:
		return int64(*(*int8)(v))
	case 2:
		return int64(*(*int16)(v))
	case 4:
		return int64(*(*int32)(v))
	}
	return *(*int64)(v)
}

func (p *plan) uint(v unsafe.Pointer) uint64 {
	switch p.size {
	case 1:
		return uint64(*(*uint8)(v))
	case 2:
		return uint64(*(*uint16)(v))
	case 4:
		return uint64(*(*uint32)(v))
	}
	return *(*uint64)(v)
}

// decode reads b, a JSON object, into the zero struct at v as a
// json.Decoder with DisallowUnknownFields followed by a check for trailing
// data would, and reports whether it could; on false, v is partly written
// and the caller decodes a fresh value with encoding/json. Where it
// succeeds, json.Unmarshal (which ignores unknown fields) reads b the same
// way, since b has none.
func (p *plan) decode(b []byte, v unsafe.Pointer) bool {
	if !p.decodable || p.kind != reflect.Struct {
		return false
	}
	r := reader{b: b}
	r.space()
	return p.decodeValue(&r, v, 0) && r.end()
}

// decodeValue reads one value into the zero value at v.
func (p *plan) decodeValue(r *reader, v unsafe.Pointer, depth int) bool {
	switch p.kind {
	case reflect.Struct:
		return p.decodeObject(r, v, depth)
	case reflect.Slice:
		return p.decodeArray(r, v, depth)
	}
	return p.decodeScalar(r, v)
}

func (p *plan) decodeObject(r *reader, v unsafe.Pointer, depth int) bool {
	if depth > 100 || len(p.fields) > 64 || !r.eat('{') {
		return false
	}
	var seen uint64
	r.space()
	if r.eat('}') {
		return true
	}
	next := 0 // the field after the last one read: the usual next key
	for {
		r.space()
		i := -1
		switch {
		case next < len(p.fields) && r.word(p.fields[next].prefix):
			i = next // the key and colon as encode writes them (names are plain)
		case next < len(p.fields) && r.word(p.fields[next].prefix[:len(p.fields[next].prefix)-1]):
			i = next // the key, quoted: a plain string
			fallthrough
		default:
			if i < 0 {
				key, ok := r.plainString()
				if !ok {
					return false
				}
				i = p.field(key)
			}
			r.space()
			if !r.eat(':') {
				return false
			}
		}
		if i < 0 || seen&(1<<i) != 0 {
			return false // unknown (encoding/json words the error), other case, or repeated
		}
		seen |= 1 << i
		next = i + 1
		r.space()
		f := &p.fields[i]
		if !f.p.decodeValue(r, unsafe.Add(v, f.offset), depth+1) {
			return false
		}
		if r.i < len(r.b) && r.b[r.i] == ',' { // as encode writes it
			r.i++
			continue
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

// firstCap is the capacity of a decoded slice's first backing array.
const firstCap = 4

// decodeArray reads an array into the nil slice at v; [] makes an empty
// slice, as encoding/json does.
func (p *plan) decodeArray(r *reader, v unsafe.Pointer, depth int) bool {
	if depth > 100 || !r.eat('[') {
		return false
	}
	h := (*sliceHeader)(v)
	r.space()
	if r.eat(']') {
		reflect.NewAt(p.elemType, v).Elem().Set(reflect.MakeSlice(p.elemType, 0, 0))
		return true
	}
	for {
		switch {
		case h.cap == 0:
			// One allocation, typed as the elements' array.
			h.data, h.cap = reflect.New(p.firstArray).UnsafePointer(), firstCap
		case h.len == h.cap:
			// Grow reallocates the slice at v in place: no slice header
			// escapes, nothing is copied twice.
			reflect.NewAt(p.elemType, v).Elem().Grow(h.cap)
		}
		r.space()
		if !p.elem.decodeValue(r, unsafe.Add(h.data, uintptr(h.len)*p.elem.size), depth+1) {
			return false
		}
		h.len++
		r.space()
		if r.eat(']') {
			return true
		}
		if !r.eat(',') {
			return false
		}
	}
}

func (p *plan) field(key []byte) int {
	for i := range p.fields {
		if p.fields[i].name == string(key) {
			return i
		}
	}
	return -1
}

func (p *plan) decodeScalar(r *reader, v unsafe.Pointer) bool {
	switch p.kind {
	case reflect.String:
		s, ok := r.plainString()
		if ok {
			*(*string)(v) = string(s)
		}
		return ok
	case reflect.Bool:
		switch {
		case r.literal("true"):
			*(*bool)(v) = true
		case r.literal("false"):
			*(*bool)(v) = false
		default:
			return false
		}
		return true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := r.integer()
		if !ok {
			return false
		}
		bits := p.size * 8
		if n < -1<<(bits-1) || n > 1<<(bits-1)-1 {
			return false
		}
		switch p.size {
		case 1:
			*(*int8)(v) = int8(n)
		case 2:
			*(*int16)(v) = int16(n)
		case 4:
			*(*int32)(v) = int32(n)
		default:
			*(*int64)(v) = n
		}
		return true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := r.integer()
		if !ok || n < 0 || p.size < 8 && uint64(n) > math.MaxUint64>>(64-p.size*8) {
			return false
		}
		switch p.size {
		case 1:
			*(*uint8)(v) = uint8(n)
		case 2:
			*(*uint16)(v) = uint16(n)
		case 4:
			*(*uint32)(v) = uint32(n)
		default:
			*(*uint64)(v) = uint64(n)
		}
		return true
	}
	return false
}
