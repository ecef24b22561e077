package binlog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/quire-ha/quire/txlog"
)

// step is one synthetic event.
type step struct {
	typ   replication.EventType
	body  []byte
	flags uint16
}

func gtid(seq uint64, flags byte) step {
	return step{typ: replication.MARIADB_GTID_EVENT, body: gtidBody(seq, 0, flags)}
}
func query(db, q string) step { return step{typ: replication.QUERY_EVENT, body: queryBody(db, q)} }
func tmap(id uint64, db string) step {
	return step{typ: replication.TABLE_MAP_EVENT, body: tableMapBody(id, db, "t")}
}
func rows(id uint64) step { return step{typ: replication.WRITE_ROWS_EVENTv1, body: rowsBody(id)} }
func xid() step {
	return step{typ: replication.XID_EVENT, body: binary.LittleEndian.AppendUint64(nil, 1)}
}
func other(typ replication.EventType, body []byte) step { return step{typ: typ, body: body} }

const (
	standalone = replication.BINLOG_MARIADB_FL_STANDALONE
	flDDL      = replication.BINLOG_MARIADB_FL_DDL
)

// wantRec is the part of a record a case checks; events lists the indexes
// (into the case's steps) of the events the record must hold.
type wantRec struct {
	gtid    string
	schemas []string
	flags   txlog.Flags
	events  []int
}

func TestAssembler(t *testing.T) {
	const ddl, multi, unknown = txlog.FlagDDL, txlog.FlagMultiSchema, txlog.FlagUnknownSchema
	annotate := other(replication.MARIADB_ANNOTATE_ROWS_EVENT, []byte("INSERT INTO t VALUES (1)"))
	heartbeat := other(replication.HEARTBEAT_EVENT, []byte("binlog.000001"))
	checkpoint := other(replication.MARIADB_BINLOG_CHECKPOINT_EVENT, append([]byte{13, 0, 0, 0}, "binlog.000001"...))
	intvar := other(replication.INTVAR_EVENT, append([]byte{2}, make([]byte, 8)...))
	tests := []struct {
		name  string
		steps []step
		want  []wantRec
	}{
		{"row transaction",
			[]step{gtid(1, 0), query("s1", "BEGIN"), tmap(1, "s1"), rows(1), xid()},
			[]wantRec{{"0-101-1", []string{"s1"}, 0, []int{0, 1, 2, 3, 4}}}},
		{"two schemas",
			[]step{gtid(1, 0), query("", "BEGIN"), tmap(1, "s2"), rows(1), tmap(2, "s1"), rows(2), tmap(3, "s2"), rows(3), xid()},
			[]wantRec{{"0-101-1", []string{"s1", "s2"}, multi, []int{0, 1, 2, 3, 4, 5, 6, 7, 8}}}},
		{"non-transactional engine ends with COMMIT",
			[]step{gtid(1, 0), query("s1", "BEGIN"), tmap(1, "s1"), rows(1), query("s1", "COMMIT")},
			[]wantRec{{"0-101-1", []string{"s1"}, 0, []int{0, 1, 2, 3, 4}}}},
		{"rolled back with non-transactional changes",
			[]step{gtid(1, 0), query("s1", "BEGIN"), tmap(1, "s1"), rows(1), query("s1", "ROLLBACK")},
			[]wantRec{{"0-101-1", []string{"s1"}, 0, []int{0, 1, 2, 3, 4}}}},
		{"savepoints are not DDL",
			[]step{gtid(1, 0), query("s1", "BEGIN"), query("s1", "SAVEPOINT `a`"), tmap(1, "s1"), rows(1), query("s1", "ROLLBACK TO `a`"), xid()},
			[]wantRec{{"0-101-1", []string{"s1"}, 0, []int{0, 1, 2, 3, 4, 5, 6}}}},
		{"standalone DDL in its schema",
			[]step{gtid(1, standalone|flDDL), query("s1", "CREATE TABLE t (id INT)")},
			[]wantRec{{"0-101-1", []string{"s1"}, ddl, []int{0, 1}}}},
		{"standalone DDL naming another schema",
			[]step{gtid(1, standalone|flDDL), query("s1", "CREATE TABLE s2.t (id INT)")},
			[]wantRec{{"0-101-1", []string{"s1"}, ddl | unknown, []int{0, 1}}}},
		{"standalone DDL without default database",
			[]step{gtid(1, standalone|flDDL), query("", "DROP TABLE s1.t")},
			[]wantRec{{"0-101-1", nil, ddl | unknown, []int{0, 1}}}},
		{"standalone statement with context events",
			[]step{gtid(1, standalone), intvar, query("s1", "CREATE TABLE t2 SELECT 1")},
			[]wantRec{{"0-101-1", []string{"s1"}, ddl, []int{0, 1, 2}}}},
		{"statement inside a transaction",
			[]step{gtid(1, 0), query("s1", "BEGIN"), query("s1", "INSERT INTO t VALUES (1)"), xid()},
			[]wantRec{{"0-101-1", []string{"s1"}, ddl, []int{0, 1, 2, 3}}}},
		{"DDL flag from the GTID event",
			[]step{gtid(1, flDDL), query("s1", "BEGIN"), tmap(1, "s1"), rows(1), xid()},
			[]wantRec{{"0-101-1", []string{"s1"}, ddl, []int{0, 1, 2, 3, 4}}}},
		{"events between transactions are skipped, annotate rows dropped",
			[]step{heartbeat, checkpoint, gtid(1, 0), query("s1", "BEGIN"), annotate, tmap(1, "s1"), rows(1), xid(), heartbeat, gtid(2, standalone), query("s2", "DROP TABLE t")},
			[]wantRec{{"0-101-1", []string{"s1"}, 0, []int{2, 3, 5, 6, 7}}, {"0-101-2", []string{"s2"}, ddl, []int{9, 10}}}},
		{"XA prepare and commit",
			[]step{gtid(1, gtidFlagPreparedXA), query("s1", "XA START X'31',X'',1"), tmap(1, "s1"), rows(1), query("s1", "XA END X'31',X'',1"),
				other(replication.XA_PREPARE_LOG_EVENT, make([]byte, 12)),
				gtid(2, gtidFlagCompletedXA|standalone), query("s1", "XA COMMIT X'31',X'',1")},
			[]wantRec{{"0-101-1", []string{"s1"}, unknown, []int{0, 1, 2, 3, 4, 5}}, {"0-101-2", nil, unknown, []int{6, 7}}}},
		{"unknown event type inside a transaction",
			[]step{gtid(1, 0), query("s1", "BEGIN"), other(replication.EventType(150), []byte{1}), tmap(1, "s1"), rows(1), xid()},
			[]wantRec{{"0-101-1", []string{"s1"}, unknown, []int{0, 1, 2, 3, 4, 5}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream("binlog.000003")
			base := len(s.events)
			var raws [][]byte
			for _, st := range tc.steps {
				raws = append(raws, s.add(st.typ, st.flags, st.body))
			}
			evs := decodeAll(t, s.events)
			a := newAssembler(1 << 20)
			var got []*txlog.Record
			var ends []int
			for i, ev := range evs {
				rec, err := a.add(ev)
				if err != nil {
					t.Fatalf("event %d (%s): %v", i, ev.Header.EventType, err)
				}
				if rec != nil {
					got = append(got, rec)
					ends = append(ends, i-base)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d records, want %d", len(got), len(tc.want))
			}
			for i, w := range tc.want {
				r := got[i]
				var events []byte
				for _, j := range w.events {
					events = append(events, raws[j]...)
				}
				last := evs[base+ends[i]]
				if r.GTID != w.gtid || !reflect.DeepEqual(r.Schemas, w.schemas) && len(r.Schemas)+len(w.schemas) > 0 || r.Flags != w.flags {
					t.Errorf("record %d: %s schemas=%v flags=%s; want %s %v %s", i, r.GTID, r.Schemas, flagString(r.Flags), w.gtid, w.schemas, flagString(w.flags))
				}
				if !bytes.Equal(r.Events, events) {
					t.Errorf("record %d: events are not events %v", i, w.events)
				}
				if r.SourceFile != "binlog.000003" || r.SourcePos != uint64(last.Header.LogPos) || r.ServerID != 101 || r.Timestamp != last.Header.Timestamp {
					t.Errorf("record %d: source %s:%d server %d ts %d", i, r.SourceFile, r.SourcePos, r.ServerID, r.Timestamp)
				}
				if !bytes.Equal(r.FormatDesc, normalizeFDE(s.events[1], true)) {
					t.Errorf("record %d: format description is not the stream's", i)
				}
				if r.Seqno != 0 || r.Epoch != 0 {
					t.Errorf("record %d: the assembler numbered it", i)
				}
			}
		})
	}
}

func TestAssemblerErrors(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
		max   int64
		want  error
		text  string
	}{
		{"rows outside a transaction", []step{tmap(1, "s1"), rows(1)}, 1 << 20, ErrProtocol, "outside a transaction"},
		{"commit missing", []step{gtid(1, 0), query("s1", "BEGIN"), gtid(2, 0)}, 1 << 20, ErrProtocol, "no commit event"},
		{"too large", []step{gtid(1, 0), query("s1", "BEGIN"), tmap(1, "s1"), rows(1), tmap(1, "s1"), rows(1), xid()}, 200, ErrTxTooLarge, "Config.MaxTxSize"},
		{"rotate inside a transaction", []step{gtid(1, 0), query("s1", "BEGIN"), other(replication.ROTATE_EVENT, rotateBody(4, "binlog.000004"))}, 1 << 20, ErrProtocol, "inside transaction"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream("binlog.000001")
			for _, st := range tc.steps {
				s.add(st.typ, st.flags, st.body)
			}
			a := newAssembler(tc.max)
			var err error
			for _, ev := range decodeAll(t, s.events) {
				if _, err = a.add(ev); err != nil {
					break
				}
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %v, want %v mentioning %q", err, tc.want, tc.text)
			}
		})
	}
}

// TestAssemblerReset checks that a transaction cut by a broken dump is
// forgotten: the next dump's copy is the only one in the record.
func TestAssemblerReset(t *testing.T) {
	s1 := newStream("binlog.000001")
	s1.add(replication.MARIADB_GTID_EVENT, 0, gtidBody(1, 0, 0))
	s1.add(replication.QUERY_EVENT, 0, queryBody("s1", "BEGIN"))
	s2 := newStream("binlog.000001")
	g := s2.add(replication.MARIADB_GTID_EVENT, 0, gtidBody(1, 0, 0))
	b := s2.add(replication.QUERY_EVENT, 0, queryBody("s1", "BEGIN"))
	x := s2.add(replication.XID_EVENT, 0, binary.LittleEndian.AppendUint64(nil, 1))
	a := newAssembler(1 << 20)
	for _, ev := range decodeAll(t, s1.events) {
		if _, err := a.add(ev); err != nil {
			t.Fatal(err)
		}
	}
	a.reset()
	var rec *txlog.Record
	for _, ev := range decodeAll(t, s2.events) {
		r, err := a.add(ev)
		if err != nil {
			t.Fatal(err)
		}
		if r != nil {
			rec = r
		}
	}
	if rec == nil || !bytes.Equal(rec.Events, bytes.Join([][]byte{g, b, x}, nil)) {
		t.Fatalf("record after reset: %+v", rec)
	}
}
