package aggregates

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/oklog/ulid/v2"
)

type planName string

// planFlat has every kind a decoding plan handles.
type planFlat struct {
	S   string   `json:"s"`
	N   planName `json:"n,omitempty"`
	I   int      `json:"i"`
	I8  int8     `json:"i8,omitempty"`
	I16 int16    `json:"i16"`
	I32 int32    `json:"i32"`
	I64 int64    `json:"i64"`
	U   uint     `json:"u"`
	U8  uint8    `json:"u8"`
	U16 uint16   `json:"u16"`
	U32 uint32   `json:"u32,omitempty"`
	U64 uint64   `json:"u64"`
	B   bool     `json:"b,omitempty"`
	Raw string   // no tag: the field name
	Not string   `json:"-"`
	low string
}

type planLine struct {
	P int64 `json:"p"`
	Q int64 `json:"q,omitempty"`
}

// planNested has what only encoding plans handle.
type planNested struct {
	Name  string     `json:"name"`
	Lines []planLine `json:"lines,omitempty"`
	Tags  []string   `json:"tags"`
	Inner planFlat   `json:"inner"`
	Empty []bool     `json:"empty,omitempty"`
}

// planRefused are types no plan handles.
type (
	planTime  struct{ T time.Time }
	planFloat struct{ F float64 }
	planMap   struct{ M map[string]int }
	planPtr   struct{ P *int }
	planEmbed struct{ planLine }
	planOpt   struct {
		N int `json:"n,string"`
	}
	planBytes struct{ B []byte }
	planSelf  struct{ Kids []planSelf }
	planText  struct{ S textual }
)

type textual string

func (t textual) MarshalText() ([]byte, error) { return []byte("x" + t), nil }

func TestPlansCoverPlainTypesAndRefuseTheRest(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeFor[planFlat](), reflect.TypeFor[planNested](), reflect.TypeFor[[]planLine]()} {
		if planFor(typ) == nil {
			t.Errorf("%v: no plan", typ)
		}
	}
	if p := planFor(reflect.TypeFor[planFlat]()); !p.decodable {
		t.Error("planFlat does not decode by plan")
	}
	if p := planFor(reflect.TypeFor[planNested]()); !p.decodable {
		t.Error("planNested does not decode by plan")
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[planTime](), reflect.TypeFor[planFloat](), reflect.TypeFor[planMap](), reflect.TypeFor[planPtr](),
		reflect.TypeFor[planEmbed](), reflect.TypeFor[planOpt](), reflect.TypeFor[planBytes](), reflect.TypeFor[planSelf](), reflect.TypeFor[planText]()} {
		if planFor(typ) != nil {
			t.Errorf("%v has a plan", typ)
		}
	}
}

// decodeReference is what Handle's decoder does without a plan.
func decodeReference[C any](raw []byte) (C, error) {
	var c C
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, err
	}
	if dec.More() {
		return c, errors.New("trailing data after the JSON object")
	}
	return c, nil
}

func FuzzPlanDecode(f *testing.F) {
	f.Add([]byte(`{"s":"a","n":"b","i":-1,"i8":-128,"i16":32767,"i32":1,"i64":-9223372036854775808,"u":1,"u8":255,"u16":65535,"u32":4294967295,"u64":9223372036854775807,"b":true,"Raw":"r"}`))
	f.Add([]byte(` { "s" : "ü" , "b" : false } `))
	f.Add([]byte(`{"i8":128}`))
	f.Add([]byte(`{"u8":-1}`))
	f.Add([]byte(`{"S":"case"}`))
	f.Add([]byte(`{"s":"a","s":"b"}`))
	f.Add([]byte(`{"s":null}`))
	f.Add([]byte(`{"s":"a\"b"}`))
	f.Add([]byte(`{"i":1.0}`))
	f.Add([]byte(`{"i":01}`))
	f.Add([]byte(`{"x":1}`))
	f.Add([]byte(`{"Not":"x"}`))
	f.Add([]byte(`{"low":"x"}`))
	f.Add([]byte(`{}{}`))
	f.Add([]byte(`{"b":truex}`))
	f.Add([]byte(`{"s":"\xff"}`))
	p := planFor(reflect.TypeFor[planFlat]())
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast planFlat
		if !p.decode(b, unsafe.Pointer(&fast)) {
			return
		}
		slow, err := decodeReference[planFlat](b)
		if err != nil {
			t.Fatalf("plan accepted what encoding/json refuses (%v):\n%q", err, b)
		}
		if fast != slow {
			t.Fatalf("plan read\n%+v\nencoding/json read\n%+v\nfrom %q", fast, slow, b)
		}
	})
}

func FuzzPlanEncode(f *testing.F) {
	f.Add("a", "b<>&\u2028", int64(-1), uint64(1), true, 3)
	f.Add("", "", int64(math.MinInt64), uint64(math.MaxUint64), false, 0)
	f.Add("\xff\x01", "ü", int64(math.MaxInt64), uint64(0), false, -1)
	p := planFor(reflect.TypeFor[planNested]())
	f.Fuzz(func(t *testing.T, s1, s2 string, i int64, u uint64, b bool, n int) {
		v := planNested{Name: s1, Inner: planFlat{S: s2, N: planName(s1), I: int(i), I8: int8(i), I16: int16(i), I32: int32(i), I64: i,
			U: uint(u), U8: uint8(u), U16: uint16(u), U32: uint32(u), U64: u, B: b, Raw: s2, Not: s1, low: s1}}
		switch {
		case n > 0:
			for k := range min(n, 5) {
				v.Lines = append(v.Lines, planLine{P: i + int64(k), Q: int64(k)})
				v.Tags = append(v.Tags, s2)
			}
			v.Empty = []bool{}
		case n < 0:
			v.Tags = []string{}
		}
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.encode(nil, unsafe.Pointer(&v)); !bytes.Equal(got, want) {
			t.Fatalf("plan wrote\n%s\njson.Marshal wrote\n%s", got, want)
		}
	})
}

func FuzzPlanDecodeNested(f *testing.F) {
	f.Add([]byte(`{"name":"n","lines":[{"p":1,"q":2},{"p":3}],"tags":["a","b"],"inner":{"s":"x","i":1},"empty":[]}`))
	f.Add([]byte(`{"lines":[],"tags":null}`))
	f.Add([]byte(`{"lines":[{"p":1},]}`))
	f.Add([]byte(`{"lines":[{"x":1}]}`))
	f.Add([]byte(`{"tags":["a",1]}`))
	f.Add([]byte(`{"empty":[true,false,true,true,false]}`))
	f.Add([]byte(`{"inner":{"inner":{}}}`))
	p := planFor(reflect.TypeFor[planNested]())
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast planNested
		if !p.decode(b, unsafe.Pointer(&fast)) {
			return
		}
		slow, err := decodeReference[planNested](b)
		if err != nil {
			t.Fatalf("plan accepted what encoding/json refuses (%v):\n%q", err, b)
		}
		var lenient planNested
		if err := json.Unmarshal(b, &lenient); err != nil || !reflect.DeepEqual(lenient, slow) {
			t.Fatalf("json.Unmarshal reads %q otherwise: %+v (%v)", b, lenient, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("plan read\n%#v\nencoding/json read\n%#v\nfrom %q", fast, slow, b)
		}
	})
}

func FuzzSnapshotReader(f *testing.F) {
	f.Add([]byte(`{"id":"o-1","version":3,"state":{"name":"n","lines":[{"p":1}],"tags":[]},"recent":["01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","01jdq6w3z8v0q3x4m0s1y2k5ta"]}`), uint8(32))
	f.Add([]byte(`{"id":"o-1","version":-1,"state":{},"recent":[]}`), uint8(32))
	f.Add([]byte(`{"recent":["nope"]}`), uint8(32))
	f.Add([]byte(`{"state":null}`), uint8(32))
	f.Add([]byte(`{"recent":["00000000000000000000000000","00000000000000000000000000","01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","7ZZZZZZZZZZZZZZZZZZZZZZZZZ"]}`), uint8(2))
	f.Add([]byte(`{"recent":[ "01JDQ6W3Z8V0Q3X4M0S1Y2K5TB" , "0!JDQ6W3Z8V0Q3X4M0S1Y2K5TB","8ZZZZZZZZZZZZZZZZZZZZZZZZZ"]}`), uint8(0))
	// A zero id first and a command's id repeated: add skips both.
	f.Add([]byte(`{"recent":["00000000000000000000000000","01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","01jdq6w3z8v0q3x4m0s1y2k5tb","01JDQ6W3Z8V0Q3X4M0S1Y2K5TC"]}`), uint8(32))
	p := planFor(reflect.TypeFor[planNested]())
	f.Fuzz(func(t *testing.T, b []byte, max uint8) {
		var fast snapshotRead
		var state planNested
		if !readSnapshot(b, p, unsafe.Pointer(&state), int(max), &fast) {
			return
		}
		var slow snapshotWire[planNested]
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("fast reader accepted what encoding/json refuses (%v):\n%q", err, b)
		}
		if string(fast.id) != slow.ID || fast.version != slow.Version || !reflect.DeepEqual(state, slow.State) {
			t.Fatalf("fast reader read\n%q %d %#v\nencoding/json read\n%q %d %#v\nfrom %q", fast.id, fast.version, state, slow.ID, slow.Version, slow.State, b)
		}
		want := window{max: int(max)}
		for _, id := range slow.Recent {
			want.add(id)
		}
		got := fast.recent
		if !slices.Equal(got.ordered(), want.ordered()) || got.next != want.next || got.max != want.max || len(got.ids) > got.max {
			t.Fatalf("fast reader's window %+v, adding encoding/json's ids makes %+v, from %q", got, want, b)
		}
	})
}

// FuzzUnmarshalSnapshot holds UnmarshalSnapshot to what decoding with
// encoding/json and adding the ids one by one does: the same aggregate, or
// the same error, and the aggregate unchanged then.
func FuzzUnmarshalSnapshot(f *testing.F) {
	f.Add([]byte(`{"id":"o-1","version":3,"state":{"name":"n","lines":[{"p":1}],"tags":[]},"recent":["01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","01jdq6w3z8v0q3x4m0s1y2k5ta"]}`), uint8(32))
	f.Add([]byte(`{"id":"o-2","version":3,"state":{}}`), uint8(32))
	f.Add([]byte(`{"id":"o-1","version":-2,"state":{}}`), uint8(32))
	f.Add([]byte(`{"id":"o-1","version":1,"state":{"name":"x"},"recent":["01JDQ6W3Z8V0Q3X4M0S1Y2K5TB","01JDQ6W3Z8V0Q3X4M0S1Y2K5TA","01JDQ6W3Z8V0Q3X4M0S1Y2K5T9"]}`), uint8(2))
	f.Add([]byte(`{"id":"o-1","version":1,"state":{},"recent":["01JDQ6W3Z8V0Q3X4M0S1Y2K5TB"]}`), uint8(0))
	f.Add([]byte(`{"id":"o-1","version":99999999999999999999,"state":{}}`), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, max uint8) {
		d := MustDefine("snap",
			When("Named", func(s *planNested, e planLine) { s.Lines = append(s.Lines, e) }),
			Handle("Add", func(s planNested, c planLine) ([]any, error) { return []any{c}, nil }),
			Window[planNested](int(max)))
		if d.statePlan == nil {
			t.Fatal("planNested has no plan")
		}
		before := d.New("o-1")
		before.recent.add(ulid.ULID{15: 1})
		got := *before
		err := got.UnmarshalSnapshot(b)

		want := *before
		var w snapshotWire[planNested]
		var wantErr error
		if jerr := json.Unmarshal(b, &w); jerr != nil {
			wantErr = &DecodeError{What: "snapshot", Type: d.name, Err: jerr}
		} else if w.ID != want.id {
			wantErr = wrongSnapshot(w.ID, want.id)
		} else if w.Version < -1 {
			wantErr = badSnapshotVersion(d.name, w.Version)
		} else {
			want.version, want.state, want.recent = w.Version, w.State, window{max: d.window}
			for _, id := range w.Recent {
				want.recent.add(id)
			}
		}
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("UnmarshalSnapshot: %v, encoding/json: %v, from %q", err, wantErr, b)
		}
		if got.version != want.version || !reflect.DeepEqual(got.state, want.state) ||
			!slices.Equal(got.recent.ordered(), want.recent.ordered()) || got.recent.next != want.recent.next ||
			got.recent.max != want.recent.max || len(got.recent.ids) > got.recent.max && got.recent.max > 0 {
			t.Fatalf("UnmarshalSnapshot made\n%+v\nencoding/json makes\n%+v\nfrom %q", got, want, b)
		}
		// And what it read is written back as json.Marshal writes it.
		again, err := got.MarshalSnapshot()
		wantAgain, jerr := json.Marshal(snapshotWire[planNested]{ID: got.id, Version: got.version, State: got.state, Recent: got.recent.ordered()})
		if err != nil || jerr != nil || string(again) != string(wantAgain) {
			t.Fatalf("MarshalSnapshot wrote\n%s (%v)\njson.Marshal writes\n%s (%v)", again, err, wantAgain, jerr)
		}
	})
}

func TestSnapshotsAreWhatJSONMarshalWrites(t *testing.T) {
	type state struct {
		Name  string     `json:"name"`
		Lines []planLine `json:"lines,omitempty"`
	}
	// Windows that hold every id, that have wrapped around, and none.
	for _, size := range []int{DefaultWindow, 3, 0} {
		d := MustDefine("snap",
			When("Named", func(s *state, e planLine) { s.Lines = append(s.Lines, e) }),
			Handle("Add", func(s state, c planLine) ([]any, error) { return []any{c}, nil }),
			Window[state](size))
		r := d.New("s-1")
		for i := range 5 {
			cmd, err := d.NewCommand("s-1", planLine{P: int64(i)}, Metadata{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Execute(&cmd, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		got, err := r.MarshalSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(snapshotWire[state]{ID: r.id, Version: r.version, State: r.state, Recent: r.recent.ordered()})
		if string(got) != string(want) {
			t.Fatalf("window %d: MarshalSnapshot wrote\n%s\njson.Marshal writes\n%s", size, got, want)
		}
		back := d.New("s-1")
		if err := back.UnmarshalSnapshot(got); err != nil || !reflect.DeepEqual(back.state, r.state) || back.version != r.version ||
			!reflect.DeepEqual(back.recent.ordered(), r.recent.ordered()) {
			t.Fatalf("window %d: read back %+v %v", size, back, err)
		}
		var w snapshotRead
		var s state
		if !readSnapshot(got, d.statePlan, unsafe.Pointer(&s), d.window, &w) {
			t.Fatalf("window %d: the fast reader gave up on a snapshot MarshalSnapshot wrote", size)
		}
	}
}
