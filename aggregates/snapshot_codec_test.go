package aggregates

import (
	"encoding/binary"
	"testing"

	"github.com/oklog/ulid/v2"
)

// TestDecodeULIDIsUnmarshalText also holds parseULID and parseULIDString
// to ulid.ParseStrict.
func TestDecodeULIDIsUnmarshalText(t *testing.T) {
	for _, s := range []string{"01M85NJVJ8ADV53Z55R5C1W1KX", "7ZZZZZZZZZZZZZZZZZZZZZZZZZ", "00000000000000000000000000",
		"01m85njvj8adv53z55r5c1w1kx", "0123456789abcdefghjkmnpqrs", "0TVWXYZABCDEFGHJKMNPQRS999"} {
		// Each byte value in each position: the digits decode as ulid
		// does, anything else is refused (and left to ulid itself).
		for pos := range ulid.EncodedSize {
			for c := range 256 {
				text := []byte(s)
				text[pos] = byte(c)
				var got, want ulid.ULID
				hi, lo, ok := decodeULID((*[ulid.EncodedSize]byte)(text))
				binary.BigEndian.PutUint64(got[:8], hi)
				binary.BigEndian.PutUint64(got[8:], lo)
				strict, err := ulid.ParseStrict(string(text))
				if ok != (err == nil) {
					t.Fatalf("decodeULID(%q) = %v, ulid.ParseStrict: %v", text, ok, err)
				}
				// The envelope's parsers are ParseStrict, error included.
				p1, err1 := parseULID(text)
				p2, err2 := parseULIDString(string(text))
				if err1 != err || err2 != err || p1 != strict || p2 != strict {
					t.Fatalf("parseULID(%q) = %x, %v and parseULIDString = %x, %v; ulid.ParseStrict: %x, %v", text, p1[:], err1, p2[:], err2, strict[:], err)
				}
				if !ok {
					continue
				}
				if err := want.UnmarshalText(text); err != nil || got != want || got != strict {
					t.Fatalf("decodeULID(%q) = %x, UnmarshalText: %x (%v)", text, got[:], want[:], err)
				}
				var back, wantBack [ulid.EncodedSize]byte
				encodeULID(&back, &got)
				_ = got.MarshalTextTo(wantBack[:])
				if back != wantBack {
					t.Fatalf("encodeULID(%x) = %s, MarshalTextTo: %s", got[:], back[:], wantBack[:])
				}
			}
		}
	}
}

func BenchmarkULIDText(b *testing.B) {
	text := []byte("01M85NJVJ8ADV53Z55R5C1W1KX")
	var id ulid.ULID
	b.Run("decodeULID", func(b *testing.B) {
		for b.Loop() {
			hi, lo, _ := decodeULID((*[ulid.EncodedSize]byte)(text))
			binary.BigEndian.PutUint64(id[:8], hi)
			binary.BigEndian.PutUint64(id[8:], lo)
		}
	})
	b.Run("encodeULID", func(b *testing.B) {
		var dst [ulid.EncodedSize]byte
		for b.Loop() {
			encodeULID(&dst, &id)
		}
	})
	b.Run("MarshalTextTo", func(b *testing.B) {
		var dst [ulid.EncodedSize]byte
		for b.Loop() {
			_ = id.MarshalTextTo(dst[:])
		}
	})
	b.Run("UnmarshalText", func(b *testing.B) {
		for b.Loop() {
			_ = id.UnmarshalText(text)
		}
	})
}
