package snapshots

import (
	"bytes"
	"cmp"
	"math"
	"testing"
	"time"
)

func FuzzSnapshotRoundTrip(f *testing.F) {
	f.Add(int64(0), int64(0), "", []byte(nil))
	f.Add(int64(-1), int64(-1), "order/v1", []byte(`{"a":1}`))
	f.Add(int64(math.MaxInt64), int64(math.MinInt64), "ü", []byte{0, 0xff, 0x91})
	f.Fuzz(func(t *testing.T, version, offset int64, stamp string, data []byte) {
		in := Snapshot{Version: version, Offset: offset, Stamp: stamp, Data: data}
		got, reason := decodeSnapshot(encodeSnapshot(in))
		if reason != "" {
			t.Fatalf("decoding what was encoded: %s", reason)
		}
		if got.Version != in.Version || got.Offset != in.Offset || got.Stamp != in.Stamp || !bytes.Equal(got.Data, in.Data) {
			t.Fatalf("round trip %+v -> %+v", in, got)
		}
	})
}

func FuzzCheckpointRoundTrip(f *testing.F) {
	f.Add(int64(0), "", int64(math.MinInt64))
	f.Add(int64(42), "order/v1", time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano())
	f.Fuzz(func(t *testing.T, offset int64, stamp string, nanos int64) {
		in := Checkpoint{Offset: offset, Stamp: stamp}
		if nanos != math.MinInt64 {
			in.Time = time.Unix(0, nanos)
		}
		got, reason := decodeCheckpoint(encodeCheckpoint(in))
		if reason != "" {
			t.Fatalf("decoding what was encoded: %s", reason)
		}
		if got.Offset != in.Offset || got.Stamp != in.Stamp || !got.Time.Equal(in.Time) {
			t.Fatalf("round trip %+v -> %+v", in, got)
		}
	})
}

// Stored values come from outside (anyone can write to Redis): decoding
// arbitrary bytes must never panic, and whatever decodes must be canonical
// enough to encode back to a value that decodes the same.
func FuzzDecode(f *testing.F) {
	f.Add(encodeSnapshot(Snapshot{Version: 3, Offset: 9, Stamp: "order/v1", Data: []byte("data")}))
	f.Add(encodeCheckpoint(Checkpoint{Offset: 7, Stamp: "s", Time: time.Unix(5, 0)}))
	f.Add([]byte("not a snapshot"))
	f.Add([]byte{})
	f.Add([]byte{formatSnapshot, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, reason := decodeSnapshot(b); reason == "" {
			again, reason := decodeSnapshot(encodeSnapshot(s))
			if reason != "" || again.Version != s.Version || again.Offset != s.Offset || again.Stamp != s.Stamp || !bytes.Equal(again.Data, s.Data) {
				t.Fatalf("decoded %+v but re-encoding gives %+v (%s)", s, again, reason)
			}
		}
		if cp, reason := decodeCheckpoint(b); reason == "" {
			again, reason := decodeCheckpoint(encodeCheckpoint(cp))
			if reason != "" || again.Offset != cp.Offset || again.Stamp != cp.Stamp || !again.Time.Equal(cp.Time) {
				t.Fatalf("decoded %+v but re-encoding gives %+v (%s)", cp, again, reason)
			}
		}
	})
}

// The Save script compares the ordering field's bytes; they must order like
// the numbers.
func FuzzOrderBytes(f *testing.F) {
	f.Add(int64(255), int64(256))
	f.Add(int64(-1), int64(0))
	f.Add(int64(math.MinInt64), int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, a, b int64) {
		ea := encodeSnapshot(Snapshot{Version: a})[1:orderEnd]
		eb := encodeSnapshot(Snapshot{Version: b})[1:orderEnd]
		if got, want := bytes.Compare(ea, eb), cmp.Compare(a, b); got != want {
			t.Fatalf("bytes of %d and %d compare %d, the numbers %d", a, b, got, want)
		}
	})
}

func TestDecodeRejects(t *testing.T) {
	good := encodeSnapshot(Snapshot{Version: 1, Stamp: "order/v1", Data: []byte("payload")})
	withStamp := func(n byte) []byte { // a stamp length past the end, checksum fixed up
		b := bytes.Clone(good[:len(good)-crcSize])
		b[fixedHeader] = n
		return append(b, checksumBytes(b)...)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"nothing", nil},
		{"shorter than a header", good[:fixedHeader]},
		{"another format", append([]byte{0x7b}, good[1:]...)},
		{"a checkpoint", encodeCheckpoint(Checkpoint{Offset: 1})},
		{"a bad checksum", append(bytes.Clone(good[:len(good)-1]), good[len(good)-1]^1)},
		{"a stamp longer than the value", withStamp(0x7f)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, reason := decodeSnapshot(tt.b); reason == "" {
				t.Fatalf("decoded %+v from a bad value", s)
			}
		})
	}
	cp := encodeCheckpoint(Checkpoint{Offset: 1})
	body := append(bytes.Clone(cp[:len(cp)-crcSize]), 'x')
	if got, reason := decodeCheckpoint(append(body, checksumBytes(body)...)); reason == "" {
		t.Fatalf("decoded checkpoint %+v with trailing bytes", got)
	}
}

func checksumBytes(b []byte) []byte {
	c := checksum(b)
	return []byte{byte(c >> 24), byte(c >> 16), byte(c >> 8), byte(c)}
}
