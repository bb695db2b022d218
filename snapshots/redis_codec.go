package snapshots

import (
	"encoding/binary"
	"hash/crc32"
	"math"
	"time"
)

// Value encoding in Redis.
//
// Each snapshot and checkpoint is one Redis string in a small binary format,
// so the aggregate's own encoding (usually JSON) is stored as it is, with no
// base64 or JSON wrapping:
//
//	byte  0      format: 0x91 snapshot v1, 0x92 checkpoint v1
//	bytes 1..8   ordering field, big-endian uint64(n) XOR 1<<63:
//	             the snapshot's Version, the checkpoint's Offset
//	bytes 9..16  big-endian int64: the snapshot's Offset, the checkpoint's
//	             Time in Unix nanoseconds (math.MinInt64 for the zero time)
//	uvarint      length of Stamp, then Stamp
//	...          snapshot: Data, to the checksum; checkpoint: nothing
//	last 4       CRC-32C (Castagnoli) of every byte before it, big-endian
//
// The ordering field sits at a fixed place and flipping its sign bit makes
// its bytes compare like the signed number, so the Save script decides
// "newer or not" with GETRANGE key 0 8 and a byte comparison: no decoding,
// no Lua number precision limits (Lua numbers are doubles). The format bytes
// are invalid as the first byte of UTF-8, so no text value is ever mistaken
// for a snapshot. The checksum catches truncation and bit flips that the
// structure alone would let through to the aggregate's decoder.
const (
	formatSnapshot   byte = 0x91
	formatCheckpoint byte = 0x92

	// orderEnd is the end of the header part the Save script compares
	// (format byte and ordering field): GETRANGE key 0 orderEnd-1.
	orderEnd = 9
	// fixedHeader is the format byte and both 8-byte fields.
	fixedHeader = 17
	crcSize     = 4
)

// checksum is the CRC-32C of b. MakeTable returns a table computed once by
// hash/crc32, so calling it per value costs nothing.
func checksum(b []byte) uint32 {
	return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
}

// encodeSnapshot returns s in the snapshot format. AggregateID is not stored:
// it is part of the key.
func encodeSnapshot(s Snapshot) []byte {
	n := fixedHeader + binary.MaxVarintLen64 + len(s.Stamp) + len(s.Data) + crcSize
	b := make([]byte, 0, n)
	b = append(b, formatSnapshot)
	b = binary.BigEndian.AppendUint64(b, orderKey(s.Version))
	b = binary.BigEndian.AppendUint64(b, uint64(s.Offset))
	b = binary.AppendUvarint(b, uint64(len(s.Stamp)))
	b = append(b, s.Stamp...)
	b = append(b, s.Data...)
	return binary.BigEndian.AppendUint32(b, checksum(b))
}

// encodeCheckpoint returns cp in the checkpoint format.
func encodeCheckpoint(cp Checkpoint) []byte {
	n := fixedHeader + binary.MaxVarintLen64 + len(cp.Stamp) + crcSize
	b := make([]byte, 0, n)
	b = append(b, formatCheckpoint)
	b = binary.BigEndian.AppendUint64(b, orderKey(cp.Offset))
	nanos := int64(math.MinInt64)
	if !cp.Time.IsZero() {
		nanos = cp.Time.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(nanos))
	b = binary.AppendUvarint(b, uint64(len(cp.Stamp)))
	b = append(b, cp.Stamp...)
	return binary.BigEndian.AppendUint32(b, checksum(b))
}

// decodeSnapshot parses a value written by encodeSnapshot. The returned
// Data aliases b. On failure it returns a reason for a CorruptError.
func decodeSnapshot(b []byte) (Snapshot, string) {
	body, stamp, rest, reason := decodeCommon(b, formatSnapshot)
	if reason != "" {
		return Snapshot{}, reason
	}
	return Snapshot{
		Version: fromOrderKey(binary.BigEndian.Uint64(body[1:9])),
		Offset:  int64(binary.BigEndian.Uint64(body[9:17])),
		Stamp:   stamp,
		Data:    rest[:len(rest):len(rest)],
	}, ""
}

// decodeCheckpoint parses a value written by encodeCheckpoint.
func decodeCheckpoint(b []byte) (Checkpoint, string) {
	body, stamp, rest, reason := decodeCommon(b, formatCheckpoint)
	if reason != "" {
		return Checkpoint{}, reason
	}
	if len(rest) != 0 {
		return Checkpoint{}, "checkpoint has trailing bytes"
	}
	cp := Checkpoint{
		Offset: fromOrderKey(binary.BigEndian.Uint64(body[1:9])),
		Stamp:  stamp,
	}
	if nanos := int64(binary.BigEndian.Uint64(body[9:17])); nanos != math.MinInt64 {
		cp.Time = time.Unix(0, nanos).UTC()
	}
	return cp, ""
}

// decodeCommon checks the format byte and checksum and splits off the stamp.
// body is b without the checksum; rest is what follows the stamp.
func decodeCommon(b []byte, format byte) (body []byte, stamp string, rest []byte, reason string) {
	if len(b) < fixedHeader+1+crcSize {
		return nil, "", nil, "value too short to be a snapshot or checkpoint"
	}
	if b[0] != format {
		return nil, "", nil, "unknown format byte (not written by this package, or by a newer version)"
	}
	body = b[:len(b)-crcSize]
	if checksum(body) != binary.BigEndian.Uint32(b[len(b)-crcSize:]) {
		return nil, "", nil, "checksum mismatch (value truncated or modified)"
	}
	n, size := binary.Uvarint(body[fixedHeader:])
	if size <= 0 {
		return nil, "", nil, "bad stamp length"
	}
	start := fixedHeader + size
	if n > uint64(len(body)-start) {
		return nil, "", nil, "stamp length beyond the end of the value"
	}
	end := start + int(n)
	return body, string(body[start:end]), body[end:], ""
}

// orderKey maps a signed number to an unsigned one whose big-endian bytes
// compare like the signed numbers do.
func orderKey(n int64) uint64 { return uint64(n) ^ (1 << 63) }

// fromOrderKey inverts orderKey.
func fromOrderKey(u uint64) int64 { return int64(u ^ (1 << 63)) }
