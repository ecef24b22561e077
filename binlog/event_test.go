package binlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"
)

// Synthetic binlog events in MariaDB 10.11's format, for the pure tests.

// mkEvent builds an event: header, body and (with crc) a CRC32.
func mkEvent(typ replication.EventType, ts, serverID, logPos uint32, flags uint16, body []byte, crc bool) []byte {
	size := headerSize + len(body)
	if crc {
		size += checksumSize
	}
	b := make([]byte, 0, size)
	b = binary.LittleEndian.AppendUint32(b, ts)
	b = append(b, byte(typ))
	b = binary.LittleEndian.AppendUint32(b, serverID)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	b = binary.LittleEndian.AppendUint32(b, logPos)
	b = binary.LittleEndian.AppendUint16(b, flags)
	b = append(b, body...)
	if crc {
		b = binary.LittleEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	}
	return b
}

// fdeBody is a MariaDB 10.11 format-description body announcing CRC32.
func fdeBody(created uint32) []byte {
	b := binary.LittleEndian.AppendUint16(nil, 4)
	ver := make([]byte, 50)
	copy(ver, "10.11.19-MariaDB-log")
	b = append(b, ver...)
	b = binary.LittleEndian.AppendUint32(b, created)
	b = append(b, headerSize)
	lengths := make([]byte, 171) // post-header length of every event type
	lengths[replication.TABLE_MAP_EVENT-1] = 8
	for _, t := range []replication.EventType{replication.WRITE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv1} {
		lengths[t-1] = 8
	}
	lengths[replication.QUERY_EVENT-1] = 13
	b = append(b, lengths...)
	return append(b, byte(replication.BINLOG_CHECKSUM_ALG_CRC32))
}

func gtidBody(seq uint64, domain uint32, flags byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, seq)
	b = binary.LittleEndian.AppendUint32(b, domain)
	b = append(b, flags)
	return append(b, make([]byte, 6)...)
}

func queryBody(db, q string) []byte {
	b := make([]byte, 8)         // thread id, exec time
	b = append(b, byte(len(db))) // db length
	b = append(b, 0, 0)          // error code
	b = append(b, 0, 0)          // status vars length
	b = append(b, db...)
	b = append(b, 0)
	return append(b, q...)
}

func tableMapBody(id uint64, db, table string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, id)[:6]
	b = append(b, 0, 0) // flags
	b = append(b, byte(len(db)))
	b = append(b, db...)
	b = append(b, 0, byte(len(table)))
	b = append(b, table...)
	b = append(b, 0)
	b = append(b, 1, 3) // one column, MYSQL_TYPE_LONG
	b = append(b, 0)    // no metadata
	return append(b, 0) // null bitmap
}

func rowsBody(id uint64) []byte {
	b := binary.LittleEndian.AppendUint64(nil, id)[:6]
	b = binary.LittleEndian.AppendUint16(b, 1) // STMT_END_F
	b = append(b, 1, 0xff)                     // one column, bitmap
	return append(b, 0, 1, 0, 0, 0)            // row: null bitmap, INT 1
}

func rotateBody(pos uint64, file string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, pos), file...)
}

// stream builds a dump's worth of events: fake rotate, format description
// and then the given transactions' events, with consistent positions.
type stream struct {
	pos    uint32
	events [][]byte
}

func newStream(file string) *stream {
	s := &stream{pos: 4}
	s.events = append(s.events, mkEvent(replication.ROTATE_EVENT, 0, 101, 0, flagArtificial, rotateBody(4, file), true))
	s.add(replication.FORMAT_DESCRIPTION_EVENT, 0, fdeBody(1700000000))
	return s
}

func (s *stream) add(typ replication.EventType, flags uint16, body []byte) []byte {
	size := uint32(headerSize + len(body) + checksumSize)
	s.pos += size
	ev := mkEvent(typ, 1700000100, 101, s.pos, flags, body, true)
	s.events = append(s.events, ev)
	return ev
}

// decodeAll decodes raw events with one decoder.
func decodeAll(t *testing.T, raws [][]byte) []*Event {
	t.Helper()
	d := newDecoder(true)
	var out []*Event
	for i, raw := range raws {
		ev, err := d.decode(raw)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		out = append(out, ev)
	}
	return out
}

func TestDecodeStream(t *testing.T) {
	s := newStream("binlog.000007")
	s.add(replication.MARIADB_GTID_EVENT, 0, gtidBody(5, 0, 0))
	s.add(replication.QUERY_EVENT, 0, queryBody("s1", "BEGIN"))
	s.add(replication.TABLE_MAP_EVENT, 0, tableMapBody(42, "s1", "t"))
	s.add(replication.WRITE_ROWS_EVENTv1, 0, rowsBody(42))
	s.add(replication.XID_EVENT, 0, binary.LittleEndian.AppendUint64(nil, 9))
	evs := decodeAll(t, s.events)
	rot, ok := evs[0].Data.(*replication.RotateEvent)
	if !ok || string(rot.NextLogName) != "binlog.000007" || rot.Position != 4 {
		t.Fatalf("fake rotate decoded as %+v (the checksum must not end up in the name)", evs[0].Data)
	}
	if evs[0].File != "" || evs[1].File != "binlog.000007" {
		t.Errorf("files %q, %q", evs[0].File, evs[1].File)
	}
	if tm, ok := evs[4].Data.(*replication.TableMapEvent); !ok || string(tm.Schema) != "s1" {
		t.Errorf("table map decoded as %+v", evs[4].Data)
	}
	if _, ok := evs[5].Data.(*replication.RowsEvent); !ok {
		t.Errorf("rows event decoded as %T", evs[5].Data)
	}
	if !bytes.Equal(evs[6].Raw, s.events[6]) {
		t.Error("raw bytes changed")
	}
}

// TestDecodeChecksum flips a byte of every event in turn and expects
// ErrChecksum: the parser's CRC32 verification is on, and so is ours for
// rotate events.
func TestDecodeChecksum(t *testing.T) {
	s := newStream("binlog.000001")
	s.add(replication.MARIADB_GTID_EVENT, 0, gtidBody(5, 0, 0))
	s.add(replication.QUERY_EVENT, 0, queryBody("s1", "BEGIN"))
	s.add(replication.TABLE_MAP_EVENT, 0, tableMapBody(42, "s1", "t"))
	s.add(replication.WRITE_ROWS_EVENTv1, 0, rowsBody(42))
	s.add(replication.XID_EVENT, 0, binary.LittleEndian.AppendUint64(nil, 9))
	s.add(replication.ROTATE_EVENT, 0, rotateBody(4, "binlog.000002"))
	for victim := range s.events {
		for _, off := range []int{0, headerSize, len(s.events[victim]) - 1} {
			d := newDecoder(true)
			var err error
			for i, raw := range s.events {
				if i == victim {
					raw = bytes.Clone(raw)
					raw[off] ^= 0x40
				}
				if _, err = d.decode(raw); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrChecksum) {
				t.Errorf("event %d byte %d corrupted: error %v, want ErrChecksum", victim, off, err)
			}
		}
	}
}

func TestDecodeRefuses(t *testing.T) {
	s := newStream("binlog.000001")
	d := newDecoder(true)
	for _, raw := range s.events {
		if _, err := d.decode(raw); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		typ  replication.EventType
		want error
	}{
		{replication.MARIADB_QUERY_COMPRESSED_EVENT, ErrCompressed},
		{replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1, ErrCompressed},
		{replication.EventType(170), ErrCompressed},
		{replication.INCIDENT_EVENT, ErrIncident},
	} {
		raw := mkEvent(tc.typ, 1, 101, 1000, 0, []byte{1, 2, 3, 4}, true)
		if _, err := d.decode(raw); !errors.Is(err, tc.want) {
			t.Errorf("%s: error %v, want %v", tc.typ, err, tc.want)
		}
	}
	short := mkEvent(replication.XID_EVENT, 1, 101, 1000, 0, make([]byte, 8), true)
	if _, err := d.decode(short[:len(short)-1]); !errors.Is(err, ErrProtocol) {
		t.Errorf("truncated event: error %v, want ErrProtocol", err)
	}
}

// TestNormalizeFDE checks that the two forms mariadbd sends (from offset
// 4: real log_pos and "created"; from later: both 0) normalize to the same
// bytes with a valid checksum.
func TestNormalizeFDE(t *testing.T) {
	size := uint32(headerSize + len(fdeBody(0)) + checksumSize)
	fromStart := mkEvent(replication.FORMAT_DESCRIPTION_EVENT, 1700000000, 101, 4+size, flagBinlogInUse, fdeBody(1700000000), true)
	later := mkEvent(replication.FORMAT_DESCRIPTION_EVENT, 1700000000, 101, 0, 0, fdeBody(0), true)
	a, b := normalizeFDE(fromStart, true), normalizeFDE(later, true)
	if !bytes.Equal(a, b) {
		t.Fatalf("normalized forms differ:\n%x\n%x", a, b)
	}
	if !bytes.Equal(b, later) {
		t.Errorf("normalizing the mid-dump form changed it")
	}
	if err := verifyCRC(a); err != nil {
		t.Errorf("normalized event: %v", err)
	}
	if bytes.Equal(a, fromStart) {
		t.Error("normalizing did not change the from-start form")
	}
}
