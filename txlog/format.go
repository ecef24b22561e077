package txlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strings"
)

// On-disk format, version 1.
//
// A log is a directory of segment files. Each segment is named by the seqno
// of its first record, formatted as 20 decimal digits: 00000000000000000001.seg.
// A segment holds consecutive records back to back and nothing else; the
// records of consecutive segments continue each other without gaps. Only the
// last segment may be empty (a fresh log, a segment just rolled, or a log
// truncated to nothing); its name then says which seqno comes next.
//
// A record is a 64-byte fixed header, a variable part, the payload and a
// trailing checksum. All integers are little-endian.
//
//	off  size  field
//	  0     4  magic "QTXL"
//	  4     1  version (1)
//	  5     3  reserved, zero
//	  8     4  length: bytes of the whole record, header to trailing CRC inclusive
//	 12     4  flags
//	 16     8  seqno
//	 24     8  epoch
//	 32     8  source binlog end position
//	 40     4  source server id
//	 44     4  commit timestamp, Unix seconds
//	 48     4  format-description length (F)
//	 52     2  GTID length (G)
//	 54     2  source file name length (S)
//	 56     2  schema count (N)
//	 58     2  reserved, zero
//	 60     4  header CRC32C over bytes 0..59
//	 64     G  GTID
//	        S  source file name
//	           N times: 2-byte schema name length, schema name
//	        F  raw format-description event
//	        E  raw binlog events (E is whatever remains of length)
//	        4  record CRC32C (Castagnoli) over every preceding byte of the record
//
// The header carries its own CRC so that a damaged length field is recognized
// as damage rather than taken for a record that runs past the end of the file
// (which at the tail of the log would look like a torn write and be cut).

const (
	headerSize    = 64
	crcSize       = 4
	minRecordSize = headerSize + crcSize
	formatVersion = 1

	// MaxRecordSize is the largest encoded record the log accepts: 1 GiB.
	MaxRecordSize = 1 << 30
)

var (
	magic      = [4]byte{'Q', 'T', 'X', 'L'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// Errors returned by the log. Use errors.Is to test for them; the returned
// errors carry more context.
var (
	// ErrClosed is returned by operations on a closed log or reader.
	ErrClosed = errors.New("txlog: log closed")
	// ErrCorrupt is matched by every *CorruptError.
	ErrCorrupt = errors.New("txlog: corrupt log")
	// ErrOutOfSequence is returned by Append when a record's seqno is not
	// exactly one more than the previous record's, or its epoch is lower.
	ErrOutOfSequence = errors.New("txlog: record out of sequence")
	// ErrInvalidRecord is returned by Append for a record that cannot be
	// encoded (a field too long, schemas not sorted).
	ErrInvalidRecord = errors.New("txlog: invalid record")
	// ErrNotFound is returned when a seqno lies beyond the last record.
	ErrNotFound = errors.New("txlog: seqno not in log")
	// ErrPurged is returned when a seqno lies before the first record, that
	// is, it was purged (or never held).
	ErrPurged = errors.New("txlog: seqno purged")
	// ErrTruncated is returned by a Reader that has already returned records
	// that TruncateAfter has since removed. Open a new Reader.
	ErrTruncated = errors.New("txlog: records already read were truncated")
)

// CorruptError reports damaged bytes in a segment file. It matches ErrCorrupt.
type CorruptError struct {
	// Segment is the segment file's path.
	Segment string
	// Offset is the byte offset of the damaged record in the segment.
	Offset int64
	// Seqno is the seqno the record at Offset should have.
	Seqno uint64
	// Reason says what is wrong.
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("txlog: corrupt record: segment %s, offset %d, seqno %d: %s", e.Segment, e.Offset, e.Seqno, e.Reason)
}

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// String returns the flags joined by "|", such as "DDL|MULTI_SCHEMA", or "-"
// for none. Unknown bits are shown in hex.
func (f Flags) String() string {
	if f == 0 {
		return "-"
	}
	var parts []string
	for _, n := range flagNames {
		if f&n.flag != 0 {
			parts = append(parts, n.name)
			f &^= n.flag
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint32(f)))
	}
	return strings.Join(parts, "|")
}

var flagNames = []struct {
	flag Flags
	name string
}{
	{FlagDDL, "DDL"},
	{FlagMultiSchema, "MULTI_SCHEMA"},
	{FlagUnknownSchema, "UNKNOWN_SCHEMA"},
}

// header is the decoded fixed part of a record.
type header struct {
	length    uint32
	flags     Flags
	seqno     uint64
	epoch     uint64
	sourcePos uint64
	serverID  uint32
	timestamp uint32
	fdLen     uint32
	gtidLen   uint16
	fileLen   uint16
	nSchemas  uint16
}

// EncodedSize returns the number of bytes r takes in the log, or an error
// wrapping ErrInvalidRecord if it cannot be encoded.
func (r *Record) EncodedSize() (int, error) {
	if len(r.GTID) > 0xffff {
		return 0, fmt.Errorf("%w: seqno %d: GTID is %d bytes, at most 65535", ErrInvalidRecord, r.Seqno, len(r.GTID))
	}
	if len(r.SourceFile) > 0xffff {
		return 0, fmt.Errorf("%w: seqno %d: source file name is %d bytes, at most 65535", ErrInvalidRecord, r.Seqno, len(r.SourceFile))
	}
	if len(r.Schemas) > 0xffff {
		return 0, fmt.Errorf("%w: seqno %d: %d schemas, at most 65535", ErrInvalidRecord, r.Seqno, len(r.Schemas))
	}
	n := headerSize + len(r.GTID) + len(r.SourceFile) + len(r.FormatDesc) + len(r.Events) + crcSize
	for i, s := range r.Schemas {
		if len(s) > 0xffff {
			return 0, fmt.Errorf("%w: seqno %d: schema %d is %d bytes, at most 65535", ErrInvalidRecord, r.Seqno, i, len(s))
		}
		n += 2 + len(s)
	}
	if n > MaxRecordSize || len(r.FormatDesc) > MaxRecordSize {
		return 0, fmt.Errorf("%w: seqno %d: encoded record would be %d bytes, at most %d", ErrInvalidRecord, r.Seqno, n, MaxRecordSize)
	}
	return n, nil
}

// AppendBinary appends the encoded record, exactly as the log stores it, to
// b. It implements encoding.BinaryAppender.
func (r *Record) AppendBinary(b []byte) ([]byte, error) {
	n, err := r.EncodedSize()
	if err != nil {
		return b, err
	}
	start := len(b)
	if cap(b)-start < n {
		nb := make([]byte, start, start+n)
		copy(nb, b)
		b = nb
	}
	b = b[:start+headerSize]
	h := b[start:]
	copy(h[0:4], magic[:])
	h[4] = formatVersion
	h[5], h[6], h[7] = 0, 0, 0
	binary.LittleEndian.PutUint32(h[8:], uint32(n))
	binary.LittleEndian.PutUint32(h[12:], uint32(r.Flags))
	binary.LittleEndian.PutUint64(h[16:], r.Seqno)
	binary.LittleEndian.PutUint64(h[24:], r.Epoch)
	binary.LittleEndian.PutUint64(h[32:], r.SourcePos)
	binary.LittleEndian.PutUint32(h[40:], r.ServerID)
	binary.LittleEndian.PutUint32(h[44:], r.Timestamp)
	binary.LittleEndian.PutUint32(h[48:], uint32(len(r.FormatDesc)))
	binary.LittleEndian.PutUint16(h[52:], uint16(len(r.GTID)))
	binary.LittleEndian.PutUint16(h[54:], uint16(len(r.SourceFile)))
	binary.LittleEndian.PutUint16(h[56:], uint16(len(r.Schemas)))
	binary.LittleEndian.PutUint16(h[58:], 0)
	binary.LittleEndian.PutUint32(h[60:], crc32.Checksum(h[:60], castagnoli))
	b = append(b, r.GTID...)
	b = append(b, r.SourceFile...)
	for _, s := range r.Schemas {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	b = append(b, r.FormatDesc...)
	b = append(b, r.Events...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
	return b, nil
}

// MarshalBinary returns the encoded record. It implements
// encoding.BinaryMarshaler.
func (r *Record) MarshalBinary() ([]byte, error) {
	return r.AppendBinary(nil)
}

// UnmarshalBinary decodes exactly one encoded record from data, verifying
// both checksums. The record does not retain data. It implements
// encoding.BinaryUnmarshaler.
func (r *Record) UnmarshalBinary(data []byte) error {
	rec, err := decodeRecord(data, true)
	if err != nil {
		return fmt.Errorf("txlog: decode record: %w", err)
	}
	*r = rec
	return nil
}

// parseHeader decodes and checks the fixed header in b, which must hold at
// least headerSize bytes.
func parseHeader(b []byte) (header, error) {
	var h header
	if [4]byte(b[0:4]) != magic {
		return h, fmt.Errorf("bad magic %q", b[0:4])
	}
	if got, want := binary.LittleEndian.Uint32(b[60:]), crc32.Checksum(b[:60], castagnoli); got != want {
		return h, fmt.Errorf("header checksum mismatch: stored %08x, computed %08x", got, want)
	}
	if b[4] != formatVersion {
		return h, fmt.Errorf("unsupported format version %d", b[4])
	}
	if b[5] != 0 || b[6] != 0 || b[7] != 0 || b[58] != 0 || b[59] != 0 {
		return h, errors.New("reserved header bytes are not zero")
	}
	h.length = binary.LittleEndian.Uint32(b[8:])
	h.flags = Flags(binary.LittleEndian.Uint32(b[12:]))
	h.seqno = binary.LittleEndian.Uint64(b[16:])
	h.epoch = binary.LittleEndian.Uint64(b[24:])
	h.sourcePos = binary.LittleEndian.Uint64(b[32:])
	h.serverID = binary.LittleEndian.Uint32(b[40:])
	h.timestamp = binary.LittleEndian.Uint32(b[44:])
	h.fdLen = binary.LittleEndian.Uint32(b[48:])
	h.gtidLen = binary.LittleEndian.Uint16(b[52:])
	h.fileLen = binary.LittleEndian.Uint16(b[54:])
	h.nSchemas = binary.LittleEndian.Uint16(b[56:])
	if h.length < minRecordSize || h.length > MaxRecordSize {
		return h, fmt.Errorf("record length %d out of range [%d, %d]", h.length, minRecordSize, MaxRecordSize)
	}
	// Every variable part must fit; schema lengths are checked when decoding.
	fixed := uint64(minRecordSize) + uint64(h.gtidLen) + uint64(h.fileLen) + 2*uint64(h.nSchemas) + uint64(h.fdLen)
	if fixed > uint64(h.length) {
		return h, fmt.Errorf("record length %d too short for its fields (%d bytes)", h.length, fixed)
	}
	return h, nil
}

// decodeRecord decodes exactly one record from b, verifying both checksums.
// With copyPayload false the returned record's FormatDesc and Events alias b.
func decodeRecord(b []byte, copyPayload bool) (Record, error) {
	if len(b) < headerSize {
		return Record{}, fmt.Errorf("short record: %d bytes, header needs %d", len(b), headerSize)
	}
	h, err := parseHeader(b)
	if err != nil {
		return Record{}, err
	}
	if int64(h.length) != int64(len(b)) {
		return Record{}, fmt.Errorf("record length %d, have %d bytes", h.length, len(b))
	}
	body := b[:len(b)-crcSize]
	if got, want := binary.LittleEndian.Uint32(b[len(body):]), crc32.Checksum(body, castagnoli); got != want {
		return Record{}, fmt.Errorf("record checksum mismatch: stored %08x, computed %08x", got, want)
	}
	rec := Record{
		Seqno:     h.seqno,
		Epoch:     h.epoch,
		SourcePos: h.sourcePos,
		ServerID:  h.serverID,
		Timestamp: h.timestamp,
		Flags:     h.flags,
	}
	p := body[headerSize:]
	rec.GTID = string(p[:h.gtidLen])
	p = p[h.gtidLen:]
	rec.SourceFile = string(p[:h.fileLen])
	p = p[h.fileLen:]
	if h.nSchemas > 0 {
		rec.Schemas = make([]string, h.nSchemas)
		for i := range rec.Schemas {
			if len(p) < 2 {
				return Record{}, fmt.Errorf("schema %d: length runs past the record", i)
			}
			n := int(binary.LittleEndian.Uint16(p))
			p = p[2:]
			if len(p) < n {
				return Record{}, fmt.Errorf("schema %d: %d bytes run past the record", i, n)
			}
			rec.Schemas[i] = string(p[:n])
			p = p[n:]
		}
	}
	if uint64(len(p)) < uint64(h.fdLen) {
		return Record{}, fmt.Errorf("format description of %d bytes runs past the record", h.fdLen)
	}
	if copyPayload {
		p = append([]byte(nil), p...)
	}
	rec.FormatDesc = p[:h.fdLen:h.fdLen]
	rec.Events = p[h.fdLen:]
	if len(rec.FormatDesc) == 0 {
		rec.FormatDesc = nil
	}
	if len(rec.Events) == 0 {
		rec.Events = nil
	}
	return rec, nil
}

// checkSchemas reports whether schemas is sorted and free of duplicates.
func checkSchemas(schemas []string) error {
	for i := 1; i < len(schemas); i++ {
		if schemas[i-1] >= schemas[i] {
			return fmt.Errorf("schemas not sorted without duplicates: %q before %q", schemas[i-1], schemas[i])
		}
	}
	return nil
}
