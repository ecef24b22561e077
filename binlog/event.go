package binlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"

	"github.com/go-mysql-org/go-mysql/replication"
)

// Sizes and offsets of the binlog v4 event header.
const (
	headerSize   = replication.EventHeaderSize // 19
	checksumSize = replication.BinlogChecksumLength
	logPosOffset = 13
	flagsOffset  = 17
	// fdeCreatedOffset is where the format-description event's "created"
	// timestamp is: after the header, the binlog version (2 bytes) and the
	// server version (50 bytes).
	fdeCreatedOffset = headerSize + 2 + 50
	// fdeOffset is where the format-description event starts in every
	// binlog file, after the 4-byte magic number.
	fdeOffset = 4
)

// Header flags (log_event.h).
const (
	flagBinlogInUse = 0x0001 // LOG_EVENT_BINLOG_IN_USE_F
	flagArtificial  = replication.LOG_EVENT_ARTIFICIAL_F
)

// Event is one binlog event as the source sent it.
type Event struct {
	// Header is the decoded common header.
	Header replication.EventHeader
	// Raw is the event exactly as received: header, body and checksum.
	Raw []byte
	// Data is the body decoded by go-mysql's parser. Rows events are
	// decoded only up to their table id and flags, not row by row;
	// rotate events are a *replication.RotateEvent decoded here.
	Data replication.Event
	// File is the binlog file the event is in; for a rotate event it is
	// the file before the rotation ("" for the artificial rotate that
	// starts a dump).
	File string
	// NeedAck is set when the source asked for a semi-sync reply to this
	// event (it ends a transaction a client is waiting for).
	NeedAck bool
}

// Pos returns the end position of the event in its binlog file.
func (e *Event) Pos() Position { return Position{File: e.File, Pos: uint64(e.Header.LogPos)} }

// compressedTypes are MariaDB's log_bin_compress event types.
var compressedTypes = map[replication.EventType]bool{
	replication.MARIADB_QUERY_COMPRESSED_EVENT:          true,
	replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:  true,
	replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1: true,
	replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1: true,
	// The compressed forms of the v2 rows events (169..171) have no
	// go-mysql names.
	replication.EventType(169): true,
	replication.EventType(170): true,
	replication.EventType(171): true,
}

// decoder turns raw events into Events. It wraps go-mysql's BinlogParser
// with CRC32 verification on, and handles what the parser gets wrong on a
// dump connection: rotate events (the artificial one that starts a dump
// carries a checksum before any format description tells the parser so).
type decoder struct {
	parser *replication.BinlogParser
	// connCRC is whether artificial events carry a CRC32 (the checksum the
	// reader announced with @master_binlog_checksum).
	connCRC bool
	// fileCRC is whether events of the current file carry a CRC32, from the
	// file's format-description event.
	fileCRC bool
	sawFDE  bool
	file    string
}

func newDecoder(connCRC bool) *decoder {
	p := replication.NewBinlogParser()
	p.SetFlavor("mariadb")
	p.SetVerifyChecksum(true)
	p.SetRawMode(false)
	// Decode rows events only up to the table id and flags: the reader
	// needs the statement-end flag (the parser then forgets table maps),
	// never the row values.
	p.SetRowsEventDecodeFunc(func(e *replication.RowsEvent, data []byte) error {
		_, err := e.DecodeHeader(data)
		return err
	})
	return &decoder{parser: p, connCRC: connCRC}
}

// decode checks and decodes one raw event. raw must not be modified later.
func (d *decoder) decode(raw []byte) (ev *Event, err error) {
	if len(raw) < headerSize {
		return nil, fmt.Errorf("%w: event of %d bytes is shorter than the %d-byte header", ErrProtocol, len(raw), headerSize)
	}
	ev = &Event{Raw: raw, File: d.file}
	if err := ev.Header.Decode(raw); err != nil {
		return nil, fmt.Errorf("%w: event header: %v", ErrProtocol, err)
	}
	h := &ev.Header
	if int(h.EventSize) != len(raw) {
		return nil, fmt.Errorf("%w: %s event at %s says it has %d bytes but %d arrived", ErrProtocol, h.EventType, ev.Pos(), h.EventSize, len(raw))
	}
	switch {
	case compressedTypes[h.EventType]:
		return nil, fmt.Errorf("binlog: %s event (type %d) ending at %s, written while log_bin_compress was ON; events already compressed cannot be shipped, extraction must resume after them: %w",
			h.EventType, byte(h.EventType), ev.Pos(), ErrCompressed)
	case h.EventType == replication.INCIDENT_EVENT:
		return nil, fmt.Errorf("binlog: event ending at %s: %w", ev.Pos(), ErrIncident)
	case h.EventType == replication.ROTATE_EVENT:
		if err := d.decodeRotate(ev); err != nil {
			return nil, err
		}
		return ev, nil
	}
	defer func() {
		// go-mysql's decoders index into the body without bounds checks.
		if r := recover(); r != nil {
			ev, err = nil, fmt.Errorf("%w: decode %s event ending at %s: %v", ErrProtocol, h.EventType, Position{d.file, uint64(h.LogPos)}, r)
		}
	}()
	be, err := d.parser.Parse(raw)
	if err != nil {
		if strings.Contains(err.Error(), replication.ErrChecksumMismatch.Error()) {
			return nil, fmt.Errorf("binlog: %s event ending at %s: %w", h.EventType, ev.Pos(), ErrChecksum)
		}
		return nil, fmt.Errorf("%w: decode %s event ending at %s: %v", ErrProtocol, h.EventType, ev.Pos(), err)
	}
	ev.Data = be.Event
	if fde, ok := be.Event.(*replication.FormatDescriptionEvent); ok {
		d.sawFDE = true
		d.fileCRC = fde.ChecksumAlgorithm == replication.BINLOG_CHECKSUM_ALG_CRC32
	}
	return ev, nil
}

// decodeRotate verifies and decodes a rotate event and moves to its file.
func (d *decoder) decodeRotate(ev *Event) error {
	raw := ev.Raw
	crc := d.fileCRC
	if ev.Header.Flags&flagArtificial != 0 || !d.sawFDE {
		crc = d.connCRC
	}
	body := raw[headerSize:]
	if crc {
		if err := verifyCRC(raw); err != nil {
			return fmt.Errorf("binlog: rotate event after %s: %w", Position{d.file, uint64(ev.Header.LogPos)}, err)
		}
		body = body[:len(body)-checksumSize]
	}
	if len(body) < 9 {
		return fmt.Errorf("%w: rotate event of %d bytes has no file name", ErrProtocol, len(raw))
	}
	r := &replication.RotateEvent{Position: binary.LittleEndian.Uint64(body), NextLogName: body[8:]}
	next := string(r.NextLogName)
	if err := (Position{File: next, Pos: max(r.Position, fdeOffset)}).validate(); err != nil {
		return fmt.Errorf("%w: rotate event names %q: %v", ErrProtocol, next, err)
	}
	ev.Data = r
	d.file = next
	return nil
}

// verifyCRC checks the CRC32 in the last four bytes of an event.
func verifyCRC(raw []byte) error {
	if len(raw) < headerSize+checksumSize {
		return fmt.Errorf("%w: event of %d bytes has no room for a checksum", ErrProtocol, len(raw))
	}
	n := len(raw) - checksumSize
	if crc32.ChecksumIEEE(raw[:n]) != binary.LittleEndian.Uint32(raw[n:]) {
		return ErrChecksum
	}
	return nil
}

// normalizeFDE returns a copy of a format-description event in the form
// the source sends when a dump starts past it: log_pos 0, "created"
// timestamp 0 (non-zero tells a replica that the source restarted and its
// temporary tables are gone), no in-use flag, and a recomputed CRC32 (when
// the event has one). The source sends the file's own values when a dump
// starts at offset 4; normalizing makes the bytes independent of where a
// dump started, and an applier replaying the event never drops its
// session's temporary tables because of it.
func normalizeFDE(raw []byte, hasCRC bool) []byte {
	out := append([]byte(nil), raw...)
	binary.LittleEndian.PutUint32(out[logPosOffset:], 0)
	flags := binary.LittleEndian.Uint16(out[flagsOffset:])
	binary.LittleEndian.PutUint16(out[flagsOffset:], flags&^flagBinlogInUse)
	if len(out) >= fdeCreatedOffset+4 {
		binary.LittleEndian.PutUint32(out[fdeCreatedOffset:], 0)
	}
	if hasCRC && len(out) >= headerSize+checksumSize {
		n := len(out) - checksumSize
		binary.LittleEndian.PutUint32(out[n:], crc32.ChecksumIEEE(out[:n]))
	}
	return out
}
