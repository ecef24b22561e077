package txlog

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Dump writes the records with seqnos from through to (inclusive) to w, one
// line each, in the spirit of mariadb-binlog's event headers:
//
//	#42 epoch=3 gtid=0-1-42 source=mariadb-bin.000003:1234 server_id=1 time=2026-01-02T03:04:05Z schemas=app,billing flags=MULTI_SCHEMA size=1300 events=1180
//
// With asJSON it writes one JSON object per line instead (see DumpEntry).
// from 0 means the first record, to 0 the last; the range is clipped to what
// the log holds. Dump does not wait for new records.
func Dump(w io.Writer, l *Log, from, to uint64, asJSON bool) error {
	first, last := l.FirstSeqno(), l.LastSeqno()
	from = max(from, first)
	if to == 0 || to > last {
		to = last
	}
	if from > to {
		return nil
	}
	r, err := l.NewReader(from)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for seqno := from; seqno <= to; seqno++ {
		rec, ok, err := r.TryNext()
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("txlog: dump: seqno %d disappeared while dumping", seqno)
		}
		e := NewDumpEntry(&rec)
		if asJSON {
			err = enc.Encode(e)
		} else {
			_, err = fmt.Fprintln(bw, e.String())
		}
		if err != nil {
			return fmt.Errorf("txlog: dump: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("txlog: dump: %w", err)
	}
	return nil
}

// DumpEntry is the summary of a record that Dump prints.
type DumpEntry struct {
	Seqno       uint64   `json:"seqno"`
	Epoch       uint64   `json:"epoch"`
	GTID        string   `json:"gtid"`
	SourceFile  string   `json:"source_file"`
	SourcePos   uint64   `json:"source_pos"`
	ServerID    uint32   `json:"server_id"`
	Timestamp   uint32   `json:"timestamp"`
	Time        string   `json:"time"`
	Schemas     []string `json:"schemas"`
	Flags       []string `json:"flags"`
	Size        int      `json:"size"`         // encoded record bytes in the log
	EventsBytes int      `json:"events_bytes"` // raw binlog event bytes
}

// NewDumpEntry summarizes rec.
func NewDumpEntry(rec *Record) DumpEntry {
	size, _ := rec.EncodedSize()
	e := DumpEntry{
		Seqno:       rec.Seqno,
		Epoch:       rec.Epoch,
		GTID:        rec.GTID,
		SourceFile:  rec.SourceFile,
		SourcePos:   rec.SourcePos,
		ServerID:    rec.ServerID,
		Timestamp:   rec.Timestamp,
		Time:        time.Unix(int64(rec.Timestamp), 0).UTC().Format(time.RFC3339),
		Schemas:     rec.Schemas,
		Flags:       []string{},
		Size:        size,
		EventsBytes: len(rec.Events),
	}
	if e.Schemas == nil {
		e.Schemas = []string{}
	}
	if rec.Flags != 0 {
		e.Flags = strings.Split(rec.Flags.String(), "|")
	}
	return e
}

// String formats the entry as one line of Dump's text output.
func (e DumpEntry) String() string {
	schemas := strings.Join(e.Schemas, ",")
	if schemas == "" {
		schemas = "-"
	}
	flags := strings.Join(e.Flags, "|")
	if flags == "" {
		flags = "-"
	}
	return fmt.Sprintf("#%d epoch=%d gtid=%s source=%s:%d server_id=%d time=%s schemas=%s flags=%s size=%d events=%d",
		e.Seqno, e.Epoch, orDash(e.GTID), orDash(e.SourceFile), e.SourcePos, e.ServerID, e.Time, schemas, flags, e.Size, e.EventsBytes)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
