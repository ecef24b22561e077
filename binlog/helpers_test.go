package binlog

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/txlog"
)

// testConfig is a reader configuration for instance in.
func testConfig(t testing.TB, in *mariadbtest.Instance, semiSync bool) Config {
	return Config{
		Addr: in.Addr(), User: in.User, Password: in.Password,
		ServerID: 9000 + in.ServerID, ReportHost: "quire-test", SemiSync: semiSync,
		HeartbeatPeriod: 250 * time.Millisecond, ConnectTimeout: 3 * time.Second,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond,
		Epoch: 1, Logger: testLogger(t),
	}
}

// firstPosition is the start of in's first binlog file.
func firstPosition(t testing.TB, in *mariadbtest.Instance) Position {
	t.Helper()
	rows, err := in.DB.Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		t.Fatalf("SHOW BINARY LOGS: no files (%v)", rows.Err())
	}
	vals := make([]any, len(cols))
	var name string
	vals[0] = &name
	for i := 1; i < len(vals); i++ {
		vals[i] = new(sql.RawBytes)
	}
	if err := rows.Scan(vals...); err != nil {
		t.Fatal(err)
	}
	return Position{File: name, Pos: 4}
}

// reader runs Next in a goroutine and hands records over a channel; with
// ack set it acknowledges every record as soon as it arrives (a sync set
// that holds everything at once).
type reader struct {
	src  *Source
	recs chan txlog.Record
	errs chan error
	stop context.CancelFunc
}

func startReader(t testing.TB, src *Source, ack bool) *reader {
	ctx, cancel := context.WithCancel(context.Background())
	r := &reader{src: src, recs: make(chan txlog.Record, 1000), errs: make(chan error, 1), stop: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rec, err := src.Next(ctx)
			if err != nil {
				r.errs <- err
				return
			}
			if ack {
				if err := src.Ack(rec.SourceFile, rec.SourcePos); err != nil {
					r.errs <- err
					return
				}
			}
			r.recs <- rec
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// take waits for n records.
func (r *reader) take(t testing.TB, n int, timeout time.Duration) []txlog.Record {
	t.Helper()
	var out []txlog.Record
	deadline := time.After(timeout)
	for len(out) < n {
		select {
		case rec := <-r.recs:
			out = append(out, rec)
		case err := <-r.errs:
			t.Fatalf("reader stopped after %d of %d records: %v", len(out), n, err)
		case <-deadline:
			t.Fatalf("got %d of %d records in %s", len(out), n, timeout)
		}
	}
	return out
}

// expectNone checks that no record arrives within d.
func (r *reader) expectNone(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case rec := <-r.recs:
		t.Fatalf("unexpected record %d %s", rec.Seqno, rec.GTID)
	case err := <-r.errs:
		t.Fatalf("reader stopped: %v", err)
	case <-time.After(d):
	}
}

// exec runs statements on one connection of in (default database db).
func run(t testing.TB, in *mariadbtest.Instance, db string, stmts ...string) {
	t.Helper()
	conn, err := sql.Open("mysql", in.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetMaxOpenConns(1)
	for _, q := range stmts {
		if _, err := conn.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// binlogGTIDs lists the GTIDs of in's binlog files in order, as
// mariadb-binlog prints them.
func binlogGTIDs(t testing.TB, in *mariadbtest.Instance) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(in.DataDir(), "binlog.[0-9]*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no binlog files in %s (%v)", in.DataDir(), err)
	}
	out, err := exec.Command("mariadb-binlog", files...).CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-binlog: %v\n%s", err, out)
	}
	re := regexp.MustCompile(`(?m)^#.*\bGTID (\d+-\d+-\d+)`)
	var gtids []string
	for _, m := range re.FindAllStringSubmatch(string(out), -1) {
		gtids = append(gtids, m[1])
	}
	return gtids
}

// fileEvents rebuilds a record's Events from the binlog file on disk: the
// events from its GTID event to its end position, without annotate-rows
// events.
func fileEvents(t testing.TB, in *mariadbtest.Instance, rec txlog.Record) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(in.DataDir(), rec.SourceFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Events) < headerSize {
		t.Fatalf("record %d has no events", rec.Seqno)
	}
	gtidEnd := binary.LittleEndian.Uint32(rec.Events[logPosOffset:])
	gtidSize := binary.LittleEndian.Uint32(rec.Events[9:])
	var out []byte
	for pos := uint64(gtidEnd - gtidSize); pos < rec.SourcePos; {
		if pos+headerSize > uint64(len(data)) {
			t.Fatalf("record %d: binlog %s ends at %d inside the transaction", rec.Seqno, rec.SourceFile, len(data))
		}
		size := uint64(binary.LittleEndian.Uint32(data[pos+9:]))
		if replication.EventType(data[pos+4]) != replication.MARIADB_ANNOTATE_ROWS_EVENT {
			out = append(out, data[pos:pos+size]...)
		}
		pos += size
	}
	return out
}

// fileFDE returns the format-description event of a binlog file on disk.
func fileFDE(t testing.TB, in *mariadbtest.Instance, file string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(in.DataDir(), file))
	if err != nil {
		t.Fatal(err)
	}
	size := binary.LittleEndian.Uint32(data[fdeOffset+9:])
	return data[fdeOffset : fdeOffset+size]
}

// sameFDE compares two format-description events ignoring what the
// source rewrites when it sends one (log_pos, "created", in-use flag, and
// the checksum over them).
func sameFDE(a, b []byte) bool {
	if len(a) != len(b) || len(a) < headerSize+checksumSize {
		return false
	}
	a, b = bytes.Clone(a), bytes.Clone(b)
	for _, e := range [][]byte{a, b} {
		copy(e[logPosOffset:], []byte{0, 0, 0, 0})
		e[flagsOffset] &^= flagBinlogInUse
		copy(e[fdeCreatedOffset:], []byte{0, 0, 0, 0})
		copy(e[len(e)-checksumSize:], []byte{0, 0, 0, 0})
	}
	return bytes.Equal(a, b)
}

// status reads one SHOW GLOBAL STATUS value.
func status(t testing.TB, in *mariadbtest.Instance, name string) string {
	t.Helper()
	var n, v string
	if err := in.DB.QueryRow("SHOW GLOBAL STATUS LIKE '"+name+"'").Scan(&n, &v); err != nil {
		t.Fatalf("SHOW GLOBAL STATUS LIKE %q: %v", name, err)
	}
	return v
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// gtidBinlogPos reads @@gtid_binlog_pos.
func gtidBinlogPos(t testing.TB, in *mariadbtest.Instance) string {
	t.Helper()
	var s string
	if err := in.DB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// describe prints a record for failure messages.
func describe(r txlog.Record) string {
	return fmt.Sprintf("#%d %s %s:%d schemas=%v flags=%s events=%dB", r.Seqno, r.GTID, r.SourceFile, r.SourcePos, r.Schemas, flagString(r.Flags), len(r.Events))
}

func flagString(f txlog.Flags) string {
	var s []string
	for _, x := range []struct {
		f    txlog.Flags
		name string
	}{{txlog.FlagDDL, "DDL"}, {txlog.FlagMultiSchema, "Multi"}, {txlog.FlagUnknownSchema, "Unknown"}} {
		if f&x.f != 0 {
			s = append(s, x.name)
		}
	}
	return strings.Join(s, "|")
}

// recordDiff names the fields in which two records differ.
func recordDiff(a, b txlog.Record) string {
	var d []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := range va.NumField() {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			d = append(d, fmt.Sprintf("%s: %v != %v", va.Type().Field(i).Name, short(va.Field(i).Interface()), short(vb.Field(i).Interface())))
		}
	}
	return strings.Join(d, "; ")
}

func short(v any) string {
	if b, ok := v.([]byte); ok {
		if len(b) > 300 {
			return fmt.Sprintf("%x…(%d bytes)", b[:64], len(b))
		}
		return fmt.Sprintf("%x", b)
	}
	return fmt.Sprint(v)
}
