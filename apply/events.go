package apply

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/go-mysql-org/go-mysql/replication"
)

// Binlog layout constants this package relies on (MariaDB 10.11).
const (
	eventHeaderLen = replication.EventHeaderSize // 19
	checksumLen    = replication.BinlogChecksumLength

	// Gtid_log_event flags (MariaDB log_event.h).
	gtidStandalone    = replication.BINLOG_MARIADB_FL_STANDALONE
	gtidTransactional = replication.BINLOG_MARIADB_FL_TRANSACTIONAL
	gtidDDL           = replication.BINLOG_MARIADB_FL_DDL
	gtidPreparedXA    = 64
	gtidCompletedXA   = 128

	// rowsStmtEnd is the rows event flag that ends a statement; the server
	// forgets its table maps after it.
	rowsStmtEnd = 0x0001
)

// format is what the applier needs to know of a format-description event.
type format struct {
	raw         []byte
	replay      []byte // raw without the in-use flag, as the BINLOG statement gets it
	checksum    bool   // events end in a CRC32
	tableIDSize int    // 4 or 6 bytes in TABLE_MAP and rows post-headers
}

// parseFormat decodes a raw format-description event with go-mysql's parser
// and checks its CRC32. The server computes that CRC with the in-use flag
// cleared (the flag is cleared in place when the binlog file is closed).
func parseFormat(raw []byte) (*format, error) {
	if len(raw) < eventHeaderLen {
		return nil, fmt.Errorf("format description event too short (%d bytes)", len(raw))
	}
	if t := replication.EventType(raw[4]); t != replication.FORMAT_DESCRIPTION_EVENT {
		return nil, fmt.Errorf("format description event has type %v", t)
	}
	if size := binary.LittleEndian.Uint32(raw[9:]); int(size) != len(raw) {
		return nil, fmt.Errorf("format description event: size %d in its header, %d bytes given", size, len(raw))
	}
	p := replication.NewBinlogParser()
	p.SetFlavor("mariadb")
	ev, err := p.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parse format description event: %w", err)
	}
	fd := ev.Event.(*replication.FormatDescriptionEvent)
	f := &format{raw: raw, tableIDSize: 6}
	switch fd.ChecksumAlgorithm {
	case replication.BINLOG_CHECKSUM_ALG_CRC32:
		f.checksum = true
	case replication.BINLOG_CHECKSUM_ALG_OFF, replication.BINLOG_CHECKSUM_ALG_UNDEF:
	default:
		return nil, fmt.Errorf("format description event: unsupported checksum algorithm %d", fd.ChecksumAlgorithm)
	}
	f.replay = append([]byte(nil), raw...)
	fl := binary.LittleEndian.Uint16(f.replay[17:]) &^ replication.LOG_EVENT_BINLOG_IN_USE_F
	binary.LittleEndian.PutUint16(f.replay[17:], fl)
	if f.checksum {
		n := len(raw) - checksumLen
		want := binary.LittleEndian.Uint32(raw[n:])
		if crc32.ChecksumIEEE(raw[:n]) != want && crc32.ChecksumIEEE(f.replay[:n]) != want {
			return nil, errors.New("format description event: CRC32 mismatch")
		}
		binary.LittleEndian.PutUint32(f.replay[n:], crc32.ChecksumIEEE(f.replay[:n]))
	}
	if i := int(replication.TABLE_MAP_EVENT) - 1; i < len(fd.EventTypeHeaderLengths) && fd.EventTypeHeaderLengths[i] == 6 {
		f.tableIDSize = 4
	}
	return f, nil
}

// rawEvent is one event of a record, sliced out of Record.Events.
type rawEvent struct {
	typ      replication.EventType
	flags    uint16 // header flags
	serverID uint32
	ts       uint32
	raw      []byte // header, body and checksum
	body     []byte // without header and checksum
}

// splitEvents cuts a record's concatenated events apart, checking sizes and,
// when the format says so, each event's CRC32.
func splitEvents(b []byte, f *format) ([]rawEvent, error) {
	var evs []rawEvent
	for off := 0; off < len(b); {
		if len(b)-off < eventHeaderLen {
			return nil, fmt.Errorf("event at offset %d: %d bytes left, shorter than an event header", off, len(b)-off)
		}
		size := int(binary.LittleEndian.Uint32(b[off+9:]))
		min := eventHeaderLen
		if f.checksum {
			min += checksumLen
		}
		if size < min || size > len(b)-off {
			return nil, fmt.Errorf("event at offset %d: bad event size %d (%d bytes left)", off, size, len(b)-off)
		}
		raw := b[off : off+size]
		body := raw[eventHeaderLen:]
		if f.checksum {
			body = body[:len(body)-checksumLen]
			want := binary.LittleEndian.Uint32(raw[size-checksumLen:])
			if got := crc32.ChecksumIEEE(raw[:size-checksumLen]); got != want {
				return nil, fmt.Errorf("event at offset %d (%v): CRC32 mismatch", off, replication.EventType(raw[4]))
			}
		}
		evs = append(evs, rawEvent{
			typ:      replication.EventType(raw[4]),
			flags:    binary.LittleEndian.Uint16(raw[17:]),
			serverID: binary.LittleEndian.Uint32(raw[5:]),
			ts:       binary.LittleEndian.Uint32(raw[0:]),
			raw:      raw,
			body:     body,
		})
		off += size
	}
	return evs, nil
}

// isRowsEvent reports whether t is an uncompressed rows event the BINLOG
// statement can replay.
func isRowsEvent(t replication.EventType) bool {
	switch t {
	case replication.WRITE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv1,
		replication.WRITE_ROWS_EVENTv2, replication.UPDATE_ROWS_EVENTv2, replication.DELETE_ROWS_EVENTv2:
		return true
	}
	return false
}

// isCompressed reports whether t is a compressed event, which the BINLOG
// statement rejects.
func isCompressed(t replication.EventType) bool {
	switch t {
	case replication.MARIADB_QUERY_COMPRESSED_EVENT,
		replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1,
		replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1,
		replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1,
		169, 170, 171, // WRITE/UPDATE/DELETE_ROWS_COMPRESSED_EVENT (v0)
		replication.TRANSACTION_PAYLOAD_EVENT:
		return true
	}
	return false
}

// rowsFlags returns the flags of a rows event.
func rowsFlags(ev rawEvent, f *format) (uint16, error) {
	if len(ev.body) < f.tableIDSize+2 {
		return 0, fmt.Errorf("%v event too short", ev.typ)
	}
	return binary.LittleEndian.Uint16(ev.body[f.tableIDSize:]), nil
}

// tableMapSchema returns the schema and table a TABLE_MAP event maps.
func tableMapSchema(ev rawEvent, f *format) (schema, table string, err error) {
	b := ev.body
	p := f.tableIDSize + 2
	if len(b) < p+1 {
		return "", "", errors.New("TABLE_MAP event too short")
	}
	n := int(b[p])
	p++
	if len(b) < p+n+2 {
		return "", "", errors.New("TABLE_MAP event too short for its schema name")
	}
	schema = string(b[p : p+n])
	p += n + 1 // name and its NUL
	m := int(b[p])
	p++
	if len(b) < p+m {
		return "", "", errors.New("TABLE_MAP event too short for its table name")
	}
	return schema, string(b[p : p+m]), nil
}

// gtidEvent is the decoded head of a MariaDB GTID event.
type gtidEvent struct {
	domain, server uint32
	seq            uint64
	flags          byte
}

// parseGTIDEvent decodes a MariaDB GTID event body.
func parseGTIDEvent(ev rawEvent) (gtidEvent, error) {
	if len(ev.body) < 13 {
		return gtidEvent{}, errors.New("GTID event too short")
	}
	return gtidEvent{
		seq:    binary.LittleEndian.Uint64(ev.body),
		domain: binary.LittleEndian.Uint32(ev.body[8:]),
		flags:  ev.body[12],
		server: ev.serverID,
	}, nil
}

// queryText returns the default database and statement text of a QUERY event.
func queryText(ev rawEvent) (db, query string, err error) {
	b := ev.body
	if len(b) < 13 {
		return "", "", errors.New("QUERY event too short")
	}
	dbLen := int(b[8])
	varsLen := int(binary.LittleEndian.Uint16(b[11:]))
	p := 13 + varsLen
	if len(b) < p+dbLen+1 {
		return "", "", errors.New("QUERY event too short for its status variables and database")
	}
	return string(b[p : p+dbLen]), string(b[p+dbLen+1:]), nil
}

// summary is what classification needs to know of a record's events.
type summary struct {
	gtid       gtidEvent
	statements int      // QUERY events other than BEGIN/COMMIT
	tables     []string // schemas named by TABLE_MAP events, in order, may repeat
	committed  bool     // the last event is an XID or a COMMIT
}

// summarize walks a record's events without decoding rows.
func summarize(fde, events []byte) (*summary, error) {
	f, err := parseFormat(fde)
	if err != nil {
		return nil, err
	}
	evs, err := splitEvents(events, f)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 || evs[0].typ != replication.MARIADB_GTID_EVENT {
		return nil, errors.New("events do not start with a MariaDB GTID event")
	}
	s := &summary{}
	if s.gtid, err = parseGTIDEvent(evs[0]); err != nil {
		return nil, err
	}
	for i, ev := range evs[1:] {
		last := i == len(evs)-2
		switch ev.typ {
		case replication.XID_EVENT:
			s.committed = last
		case replication.TABLE_MAP_EVENT:
			schema, _, err := tableMapSchema(ev, f)
			if err != nil {
				return nil, err
			}
			s.tables = append(s.tables, schema)
		case replication.QUERY_EVENT:
			_, q, err := queryText(ev)
			if err != nil {
				return nil, err
			}
			if q == "COMMIT" {
				s.committed = last
			} else if q != "BEGIN" {
				s.statements++
			}
		}
	}
	return s, nil
}
