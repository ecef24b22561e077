package apply

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/txlog"
)

// binlogFiles lists an instance's binlog files in order.
func binlogFiles(t testing.TB, in *mariadbtest.Instance) []string {
	t.Helper()
	rows, err := in.DB.Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var files []string
	for rows.Next() {
		vals := make([]any, len(cols))
		var name string
		vals[0] = &name
		for i := 1; i < len(vals); i++ {
			vals[i] = new(sql.RawBytes)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		files = append(files, filepath.Join(in.DataDir(), name))
	}
	return files
}

// binlogRecords reads an instance's binlog files and groups their events
// into transaction-log records, seqno from 1, the way the extractor does:
// GTID event to XID (or COMMIT, or the statement of a standalone group).
func binlogRecords(t testing.TB, in *mariadbtest.Instance) []txlog.Record {
	t.Helper()
	var recs []txlog.Record
	for _, file := range binlogFiles(t, in) {
		recs = append(recs, fileRecords(t, file, uint64(len(recs)))...)
	}
	return recs
}

func fileRecords(t testing.TB, file string, after uint64) []txlog.Record {
	t.Helper()
	var (
		recs  []txlog.Record
		fde   []byte
		f     *format
		cur   *txlog.Record
		flags byte
		seen  map[string]bool
	)
	finish := func(h *replication.EventHeader) {
		cur.SourcePos = uint64(h.LogPos)
		cur.Timestamp = h.Timestamp
		sort.Strings(cur.Schemas)
		cur.Schemas = slices.Compact(cur.Schemas)
		if len(cur.Schemas) > 1 {
			cur.Flags |= txlog.FlagMultiSchema
		}
		recs = append(recs, *cur)
		cur = nil
	}
	p := replication.NewBinlogParser()
	p.SetFlavor("mariadb")
	p.SetRawMode(true)
	err := p.ParseFile(file, 4, func(e *replication.BinlogEvent) error {
		raw := append([]byte(nil), e.RawData...)
		h := e.Header
		if h.EventType == replication.FORMAT_DESCRIPTION_EVENT {
			fde = raw
			var err error
			f, err = parseFormat(fde)
			return err
		}
		ev := rawEvent{typ: h.EventType, serverID: h.ServerID, ts: h.Timestamp, raw: raw}
		ev.body = raw[eventHeaderLen : len(raw)-checksumLen]
		if h.EventType == replication.MARIADB_GTID_EVENT {
			g, err := parseGTIDEvent(ev)
			if err != nil {
				return err
			}
			if cur != nil {
				return fmt.Errorf("GTID %v inside an open group", g)
			}
			flags = g.flags
			seen = map[string]bool{}
			cur = &txlog.Record{
				Seqno: after + uint64(len(recs)) + 1, Epoch: 1,
				GTID: fmt.Sprintf("%d-%d-%d", g.domain, g.server, g.seq), SourceFile: filepath.Base(file),
				ServerID: h.ServerID, FormatDesc: fde,
			}
			if g.flags&gtidDDL != 0 {
				cur.Flags |= txlog.FlagDDL
			}
			cur.Events = append(cur.Events, raw...)
			return nil
		}
		if cur == nil {
			return nil // FDE, GTID list, checkpoint, rotate, stop
		}
		cur.Events = append(cur.Events, raw...)
		if h.EventType == replication.MARIADB_QUERY_COMPRESSED_EVENT {
			cur.Flags |= txlog.FlagUnknownSchema
			if flags&gtidStandalone != 0 {
				finish(h)
			}
			return nil
		}
		switch h.EventType {
		case replication.TABLE_MAP_EVENT:
			schema, _, err := tableMapSchema(ev, f)
			if err != nil {
				return err
			}
			if !seen[schema] {
				seen[schema] = true
				cur.Schemas = append(cur.Schemas, schema)
			}
		case replication.QUERY_EVENT:
			db, q, err := queryText(ev)
			if err != nil {
				return err
			}
			switch {
			case q == "COMMIT":
				finish(h)
			case q == "BEGIN":
			default:
				if db == "" || cur.Flags&txlog.FlagDDL == 0 {
					cur.Flags |= txlog.FlagUnknownSchema
				} else if !seen[db] {
					seen[db] = true
					cur.Schemas = append(cur.Schemas, db)
				}
				if flags&gtidStandalone != 0 {
					finish(h)
				}
			}
		case replication.XID_EVENT:
			finish(h)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read binlog %s: %v", file, err)
	}
	if cur != nil {
		t.Fatalf("binlog %s ends inside GTID %s", file, cur.GTID)
	}
	return recs
}

// binlogGTIDs lists the GTIDs of the event groups an instance's binlog
// holds, in order. A group counts only when it is complete: a GTID event
// and its events up to the XID, the COMMIT or (standalone groups) the
// statement. See scanBinlog for what a kill -9 leaves behind.
func binlogGTIDs(t testing.TB, in *mariadbtest.Instance) []string {
	t.Helper()
	var out []string
	for _, g := range scanBinlog(t, in, true).groups {
		if g.ended {
			out = append(out, g.gtid)
		}
	}
	return out
}

// binlogGroup is one event group of a binlog file, as read from disk.
type binlogGroup struct {
	gtid  string
	file  string
	pos   int      // offset of the GTID event
	end   int      // offset after the group's last event in the file
	kinds []string // the types of the group's events after the GTID event
	// ended: the group's last event (XID, COMMIT, or the statement of a
	// standalone group) is in the file.
	ended bool
}

func (g binlogGroup) String() string {
	state := "complete"
	if !g.ended {
		state = "INCOMPLETE"
	}
	return fmt.Sprintf("%s at %s:%d (%s: %v)", g.gtid, g.file, g.pos, state, g.kinds)
}

// binlogScan is what scanBinlog found.
type binlogScan struct {
	groups []binlogGroup
	// cut lists the files that end inside an event group or inside an
	// event: what a kill -9 of mariadbd leaves in the binlog file it was
	// writing (see scanBinlog).
	cut []string
}

// scanBinlog reads an instance's binlog files from disk and cuts them into
// event groups (scanBinlogFiles); it fails the test on anything a kill
// cannot explain.
func scanBinlog(t testing.TB, in *mariadbtest.Instance, settled bool) binlogScan {
	t.Helper()
	scan, err := scanBinlogFiles(binlogFiles(t, in), settled)
	if err != nil {
		t.Fatal(err)
	}
	return scan
}

// scanBinlogFiles reads binlog files, in order, and cuts them into event
// groups.
//
// A kill -9 of mariadbd can leave the binlog file it was writing cut short:
// the group commit's events reach the file in one write(), which the
// kernel cuts at a page boundary when the writer gets SIGKILL while copying
// (it checks for a fatal signal between pages, and sleeps killably there
// when dirty-page throttling holds it). The cut falls inside an event or,
// more rarely, exactly between two events: after a GTID event and part of
// its group, before its XID. Crash recovery rolls that transaction back
// (its XID is not in the binlog; @@gtid_binlog_pos leaves the group out),
// leaves the cut file as it is and starts a new one; the applier then
// applies the transaction again, and its GTID is in the binlog twice: once
// cut off, once complete. So a cut is accepted at the end of any file but
// the last (the one the restarted server writes), only complete groups
// count, and anything else is an error. Unless settled, the last file may
// end inside a group too: a leftover session of a cancelled run may be
// writing to it.
func scanBinlogFiles(files []string, settled bool) (binlogScan, error) {
	var scan binlogScan
	for i, file := range files {
		last := i == len(files)-1
		name := filepath.Base(file)
		b, err := os.ReadFile(file)
		if err != nil {
			return scan, err
		}
		if len(b) < 4 || string(b[:4]) != "\xfebin" {
			return scan, fmt.Errorf("binlog %s: not a binlog file", name)
		}
		var (
			f          *format
			cur        *binlogGroup
			standalone bool
			cut        string
		)
		for off := 4; off < len(b); {
			if len(b)-off < eventHeaderLen || int(binary.LittleEndian.Uint32(b[off+9:])) > len(b)-off {
				cut = fmt.Sprintf("%s is cut inside an event at offset %d (%d bytes left)", name, off, len(b)-off)
				break
			}
			size := int(binary.LittleEndian.Uint32(b[off+9:]))
			raw := b[off : off+size]
			typ := replication.EventType(raw[4])
			if typ == replication.FORMAT_DESCRIPTION_EVENT {
				if f, err = parseFormat(raw); err != nil {
					return scan, fmt.Errorf("binlog %s at %d: %w", name, off, err)
				}
				off += size
				continue
			}
			if f == nil {
				return scan, fmt.Errorf("binlog %s: %v event at %d before the format description", name, typ, off)
			}
			evs, err := splitEvents(raw, f)
			if err != nil {
				return scan, fmt.Errorf("binlog %s at %d: %w", name, off, err)
			}
			ev := evs[0]
			switch {
			case typ == replication.MARIADB_GTID_EVENT:
				if cur != nil && !cur.ended {
					return scan, fmt.Errorf("binlog %s: group %v is followed by another group at %d", name, *cur, off)
				}
				g, err := parseGTIDEvent(ev)
				if err != nil {
					return scan, fmt.Errorf("binlog %s at %d: %w", name, off, err)
				}
				scan.groups = append(scan.groups, binlogGroup{gtid: gtid{g.domain, g.server, g.seq}.String(), file: name, pos: off})
				cur = &scan.groups[len(scan.groups)-1]
				cur.end = off + size
				standalone = g.flags&gtidStandalone != 0
			case cur == nil || cur.ended:
				// Events between groups: GTID list, checkpoint, rotate, stop.
			default:
				cur.kinds = append(cur.kinds, typ.String())
				cur.end = off + size
				switch typ {
				case replication.XID_EVENT:
					cur.ended = true
				case replication.QUERY_EVENT:
					_, q, err := queryText(ev)
					if err != nil {
						return scan, fmt.Errorf("binlog %s at %d: %w", name, off, err)
					}
					cur.ended = q == "COMMIT" || standalone && q != "BEGIN"
				}
			}
			off += size
		}
		if cut == "" && cur != nil && !cur.ended {
			cut = fmt.Sprintf("%s ends inside the group of %v", name, *cur)
		}
		switch {
		case cut == "":
		case !last:
			scan.cut = append(scan.cut, cut)
		case settled:
			return scan, fmt.Errorf("binlog %s: the last binlog file is cut short: %s", name, cut)
		}
	}
	return scan, nil
}

// memSource serves records from memory, as the transaction log would.
type memSource struct{ recs []txlog.Record }

type memReader struct {
	recs []txlog.Record
	next uint64
}

func (m *memSource) NewReader(from uint64) (Reader, error) {
	if from < 1 {
		return nil, fmt.Errorf("reader from %d", from)
	}
	return &memReader{recs: m.recs, next: from}, nil
}

func (r *memReader) Next(ctx context.Context) (txlog.Record, error) {
	if r.next > uint64(len(r.recs)) {
		<-ctx.Done()
		return txlog.Record{}, ctx.Err()
	}
	rec := r.recs[r.next-1]
	r.next++
	return rec, nil
}

// committedIndex is a commit index at n.
func committedIndex(n uint64) *Watermark {
	w := &Watermark{}
	w.Set(n)
	return w
}

// tables lists the user tables of an instance, "schema.table", sorted.
func tables(t testing.TB, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query("SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES " +
		"WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys', 'quire') ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// sameData fails the test unless both instances hold the same tables with
// equal definitions and CHECKSUM TABLE results.
func sameData(t testing.TB, src, rep *sql.DB) {
	t.Helper()
	for _, d := range dataDiffs(t, src, rep) {
		t.Error(d)
	}
}

// dataDiffs compares every user table's checksum and definition.
func dataDiffs(t testing.TB, src, rep *sql.DB) []string {
	t.Helper()
	st, rt := tables(t, src), tables(t, rep)
	if !slices.Equal(st, rt) {
		return []string{fmt.Sprintf("tables differ:\nsource  %v\nreplica %v", st, rt)}
	}
	if len(st) == 0 {
		t.Fatal("no tables to compare")
	}
	var diffs []string
	for _, tbl := range st {
		parts := strings.SplitN(tbl, ".", 2)
		q := quoteIdent(parts[0]) + "." + quoteIdent(parts[1])
		var name string
		var sc, rc sql.NullInt64
		if err := src.QueryRow("CHECKSUM TABLE "+q+" EXTENDED").Scan(&name, &sc); err != nil {
			t.Fatal(err)
		}
		if err := rep.QueryRow("CHECKSUM TABLE "+q+" EXTENDED").Scan(&name, &rc); err != nil {
			t.Fatal(err)
		}
		if sc != rc {
			diffs = append(diffs, fmt.Sprintf("table %s: checksum source %v, replica %v", tbl, sc.Int64, rc.Int64))
		}
		var sd, rd string
		if err := src.QueryRow("SHOW CREATE TABLE "+q).Scan(&name, &sd); err != nil {
			t.Fatal(err)
		}
		if err := rep.QueryRow("SHOW CREATE TABLE "+q).Scan(&name, &rd); err != nil {
			t.Fatal(err)
		}
		if sd != rd {
			diffs = append(diffs, fmt.Sprintf("table %s: definitions differ:\nsource  %s\nreplica %s", tbl, sd, rd))
		}
	}
	return diffs
}

// runApplier runs a until it applied up to seqno, then stops it.
func runApplier(t testing.TB, a *Applier, src Source, upTo uint64, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = a.Run(ctx, src, committedIndex(upTo))
		cancel() // a run that ends by itself failed: stop waiting
	}()
	go func() {
		// Fail fast when a channel stops: nothing else will un-stop it.
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			st := a.Status()
			for _, c := range append(st.Channels, st.Serial) {
				if c.Stopped != nil {
					t.Errorf("stopped: %v", c.Stopped)
					cancel()
					return
				}
			}
		}
	}()
	werr := a.WaitApplied(ctx, upTo)
	cancel()
	wg.Wait()
	if werr != nil {
		t.Fatalf("applied %d of %d: %v (run: %v); status %+v", a.Applied(), upTo, werr, runErr, a.Status())
	}
}

// testLogger logs to the test.
func testLogger(t testing.TB) *slogTestWriter { return &slogTestWriter{t: t} }

type slogTestWriter struct{ t testing.TB }

func (w *slogTestWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startInstances starts n instances one after the other, each with its own
// tmpdir: mariadbd deletes every #sql* file in its tmpdir at start-up, so
// instances sharing /tmp break each other's mariadb-install-db (see the
// report to the harness owner).
func startInstances(t testing.TB, n int, base uint32, settings ...string) []*mariadbtest.Instance {
	t.Helper()
	var out []*mariadbtest.Instance
	for i := range n {
		s := append([]string{"tmpdir=" + t.TempDir()}, settings...)
		out = append(out, mariadbtest.Start(t, 1, mariadbtest.Options{ServerIDBase: base + uint32(i), Settings: s, Quiet: true})...)
	}
	return out
}
