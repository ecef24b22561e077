package apply

import (
	"encoding/base64"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/quire-ha/quire/txlog"
)

func TestParseGTID(t *testing.T) {
	g, err := parseGTID("3-101-18446744073709551615")
	if err != nil || g != (gtid{3, 101, 18446744073709551615}) || g.String() != "3-101-18446744073709551615" {
		t.Fatalf("%v %v", g, err)
	}
	for _, bad := range []string{"", "1-2", "1-2-3-4", "a-1-2", "1-2-x", "4294967296-1-1"} {
		if _, err := parseGTID(bad); err == nil {
			t.Errorf("parseGTID(%q) accepted", bad)
		}
	}
	pos, err := parseGTIDPos("0-101-5, 3-7-9")
	if err != nil || pos[0] != (gtid{0, 101, 5}) || pos[3] != (gtid{3, 7, 9}) || len(pos) != 2 {
		t.Fatalf("%v %v", pos, err)
	}
	if pos, err := parseGTIDPos(""); err != nil || len(pos) != 0 {
		t.Fatalf("empty: %v %v", pos, err)
	}
}

func TestParseStatusVars(t *testing.T) {
	// Taken from a MariaDB 10.11.19 CREATE TABLE event.
	real, _ := hex.DecodeString("00000000400100002054000000000603737464042d002d000800811000000000000000")
	v, err := parseStatusVars(real)
	if err != nil {
		t.Fatal(err)
	}
	if !v.hasFlags2 || v.flags2 != 0x40000000 || v.sqlMode != 1411383296 || !v.hasCharset ||
		v.charset != [3]uint16{45, 45, 8} || v.hasTimeZone || v.hasUsec {
		t.Fatalf("%+v", v)
	}
	for _, tc := range []struct {
		name string
		hex  string
		err  bool
		chk  func(statusVars) bool
	}{
		{"time zone", "05062b30313a3030", false, func(v statusVars) bool { return v.timeZone == "+01:00" }},
		{"hrnow", "80a08601", false, func(v statusVars) bool { return v.usec == 100000 && v.hasUsec }},
		{"auto inc", "0302000100", false, func(v statusVars) bool { return v.autoIncInc == 2 && v.autoIncOff == 1 }},
		{"lc and db collation", "070100082100", false, func(v statusVars) bool { return v.lcTimeNames == 1 && v.collationDB == 33 }},
		{"invoker", "0b04726f6f74096c6f63616c686f7374", false, func(v statusVars) bool { return true }},
		{"old catalog", "020373746400", false, func(v statusVars) bool { return true }},
		{"flags3 commit alter", "8204" + "0100000000000000", false, func(v statusVars) bool { return v.flags3 == 4 }},
		{"unknown code stops", "c8ffff", false, func(v statusVars) bool { return !v.hasFlags2 }},
		{"truncated flags2", "0000", true, nil},
		{"truncated tz", "050a2b30", true, nil},
		{"truncated hrnow", "8001", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := hex.DecodeString(tc.hex)
			v, err := parseStatusVars(b)
			if (err != nil) != tc.err {
				t.Fatalf("err %v", err)
			}
			if err == nil && !tc.chk(v) {
				t.Fatalf("%+v", v)
			}
		})
	}
}

func TestQueryContext(t *testing.T) {
	status, _ := hex.DecodeString("00" + "00c0001c" + "01" + "0000205400000000" + "04" + "2d002d000800" + "05062b30313a3030" + "80a08601")
	raw := synthQuery("we`ird", "ALTER TABLE t ADD c INT", status)
	f, err := parseFormat(synthFDE())
	if err != nil {
		t.Fatal(err)
	}
	evs, err := splitEvents(raw, f)
	if err != nil {
		t.Fatal(err)
	}
	p := replication.NewBinlogParser()
	if _, err := p.Parse(f.raw); err != nil {
		t.Fatal(err)
	}
	e, err := p.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := queryContext(evs[0], e.Event.(*replication.QueryEvent), []string{"INSERT_ID=5"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"USE `we``ird`;\n",
		"SET TIMESTAMP=1700000000.100000, @@session.pseudo_thread_id=99",
		"@@session.foreign_key_checks=0", "@@session.sql_auto_is_null=1", "@@session.unique_checks=0",
		"@@session.check_constraint_checks=0", "@@session.sql_if_exists=1", "@@session.explicit_defaults_for_timestamp=0",
		"@@session.system_versioning_insert_history=0", "@@session.sql_mode=1411383296",
		"SET @@session.collation_connection=45;\n",
		"@@session.character_set_client=@@session.character_set_connection, @@session.collation_connection=45, @@session.collation_server=8",
		"@@session.time_zone=_utf8mb4 X'2b30313a3030'", "@@session.collation_database=DEFAULT", "INSERT_ID=5",
	} {
		if !strings.Contains(ctx, want) {
			t.Errorf("context lacks %q:\n%s", want, ctx)
		}
	}
	// Two-phase ALTER is refused.
	status2, _ := hex.DecodeString("8202")
	e2, _ := p.Parse(synthQuery("", "ALTER TABLE t ADD d INT", status2))
	if _, err := queryContext(evs[0], e2.Event.(*replication.QueryEvent), nil); err == nil || !strings.Contains(err.Error(), "two-phase ALTER") {
		t.Fatalf("two-phase ALTER: %v", err)
	}
}

func TestTranslate(t *testing.T) {
	f, err := parseFormat(synthFDE())
	if err != nil {
		t.Fatal(err)
	}
	rec := func(seq uint64, evs ...[]byte) *txlog.Record {
		return &txlog.Record{Seqno: seq, GTID: "0-7-" + strconv.FormatUint(seq, 10), Schemas: []string{"s1"}, FormatDesc: f.raw, Events: concat(evs...)}
	}
	trx := byte(gtidTransactional | 8)
	for _, tc := range []struct {
		name   string
		rec    *txlog.Record
		err    string
		atomic bool
		kinds  string // r rows, q query, c commit
		parts  int
	}{
		{name: "row transaction", rec: rec(1, synthGTID(1, trx), synthTableMap(1, "s1", "t"), synthRows(1, false), synthRows(1, true), synthXID()),
			atomic: true, kinds: "r", parts: 1},
		{name: "BEGIN query ignored", rec: rec(1, synthGTID(1, trx), synthQuery("", "BEGIN", nil), synthTableMap(1, "s1", "t"), synthRows(1, true), synthXID()),
			atomic: true, kinds: "r", parts: 1},
		{name: "statement inside", rec: rec(1, synthGTID(1, trx), synthQuery("s1", "INSERT INTO t VALUES (1)", nil), synthTableMap(1, "s1", "t"), synthRows(1, true), synthXID()),
			atomic: true, kinds: "qr", parts: 1},
		{name: "ddl", rec: rec(2, synthGTID(2, gtidStandalone|gtidDDL|8), synthQuery("s1", "CREATE TABLE t (id INT)", nil)),
			kinds: "q", parts: 1},
		{name: "create select", rec: rec(3, synthGTID(3, gtidDDL|8), synthQuery("", "CREATE TABLE s1.c (id INT)", nil), synthTableMap(1, "s1", "c"), synthRows(1, true), synthXID()),
			kinds: "qrc", parts: 2},
		{name: "non-transactional", rec: rec(4, synthGTID(4, 8), synthTableMap(1, "s1", "m"), synthRows(1, true), synthQuery("", "COMMIT", nil)),
			kinds: "rc", parts: 1},
		{name: "no commit", rec: rec(1, synthGTID(1, trx), synthTableMap(1, "s1", "t"), synthRows(1, true)),
			err: "does not end in a commit"},
		{name: "events after commit", rec: rec(1, synthGTID(1, trx), synthXID(), synthTableMap(1, "s1", "t"), synthRows(1, true)),
			err: "continues after its commit"},
		{name: "gtid mismatch", rec: rec(1, synthGTID(2, trx), synthXID()), err: "differs from its GTID event"},
		{name: "no gtid event", rec: rec(1, synthTableMap(1, "s1", "t"), synthRows(1, true), synthXID()), err: "do not start with a MariaDB GTID event"},
		{name: "own schema table", rec: rec(1, synthGTID(1, trx), synthTableMap(1, "quire", "apply_channel"), synthRows(1, true), synthXID()),
			err: "schema quire"},
		{name: "own schema statement", rec: rec(1, synthGTID(1, trx), synthQuery("quire", "DELETE FROM apply_channel", nil), synthXID()),
			err: "schema quire"},
		{name: "compressed", rec: rec(1, synthGTID(1, trx), synthEvent(replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1, make([]byte, 12)), synthXID()),
			err: "compressed"},
		{name: "user var", rec: rec(1, synthGTID(1, trx), synthEvent(replication.USER_VAR_EVENT, make([]byte, 12)), synthXID()),
			err: "binlog_format=ROW"},
		{name: "xa", rec: rec(1, synthGTID(1, trx|gtidPreparedXA), synthXID()), err: "XA"},
		{name: "rollback", rec: rec(1, synthGTID(1, 8), synthQuery("", "ROLLBACK", nil)), err: "not supported"},
		{name: "rotate inside", rec: rec(1, synthGTID(1, trx), synthEvent(replication.ROTATE_EVENT, make([]byte, 10)), synthXID()), err: "unexpected"},
		{name: "dangling intvar", rec: rec(1, synthGTID(1, trx), synthEvent(replication.INTVAR_EVENT, append([]byte{2}, make([]byte, 8)...)), synthXID()),
			err: "without a following statement"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := translate(tc.rec, f, "quire")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kinds string
			for _, s := range p.steps {
				kinds += string("rqc"[s.kind])
			}
			if p.atomic != tc.atomic || kinds != tc.kinds || p.parts() != tc.parts {
				t.Fatalf("atomic=%v kinds=%s parts=%d, want %v %s %d", p.atomic, kinds, p.parts(), tc.atomic, tc.kinds, tc.parts)
			}
		})
	}
}

func TestPacker(t *testing.T) {
	ev := func(n int) []byte { return make([]byte, n) }
	pk := newPacker(1000) // rows cut after ~686 raw bytes
	pk.add("SET a=1")
	pk.add("START TRANSACTION")
	// 5 events of 200 bytes, a statement ends after the 2nd and the 4th.
	pk.rows([][]byte{ev(200), ev(200), ev(200), ev(200), ev(200)}, []bool{false, true, false, true, true})
	pk.add("SET x=1")
	pk.alone("ALTER TABLE t ADD c INT", 1050)
	pk.add("COMMIT")
	out := pk.packets()
	var stmts []string
	for _, p := range out {
		stmts = append(stmts, strings.Split(p.sql, ";\n")...)
	}
	// The BINLOG statements: events 1-4 (cut at the statement end after 686
	// bytes), then event 5.
	var sizes []int
	for _, s := range stmts {
		if strings.HasPrefix(s, "BINLOG '") {
			raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(strings.TrimPrefix(s, "BINLOG '"), "'"))
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, len(raw))
		}
	}
	if len(sizes) != 2 || sizes[0] != 800 || sizes[1] != 200 {
		t.Fatalf("BINLOG statement sizes %v, want [800 200]", sizes)
	}
	var alone *packet
	for i, p := range out {
		if len(p.sql) > 1000 && strings.Contains(p.sql, ";\n") {
			t.Errorf("packet %d: %d bytes holds several statements", i, len(p.sql))
		}
		if strings.HasPrefix(p.sql, "ALTER") {
			alone = &out[i]
		}
	}
	if alone == nil || alone.sql != "ALTER TABLE t ADD c INT" || alone.expectErr != 1050 {
		t.Fatalf("query not alone: %+v", out)
	}
	if last := out[len(out)-1].sql; last != "COMMIT" {
		t.Fatalf("last packet %q", last)
	}
}

func TestGuardSQL(t *testing.T) {
	rec := &txlog.Record{Seqno: 42, Epoch: 3, GTID: "0-1-9", SourceFile: "b.000001", SourcePos: 77, Timestamp: 1700000000}
	ch := guardSQL("quire", 2, 4, 40, rec, "s1")
	for _, want := range []string{"UPDATE `quire`.`apply_channel` SET epoch=3, seqno=42,", "WHERE channel_id=2 AND seqno<40;", "IF ROW_COUNT()<>1 THEN SIGNAL", "source_ts=FROM_UNIXTIME(1700000000)"} {
		if !strings.Contains(ch, want) {
			t.Errorf("channel guard lacks %q: %s", want, ch)
		}
	}
	all := guardSQL("quire", SerialChannel, 4, 42, &txlog.Record{Seqno: 42}, "")
	for _, want := range []string{"WHERE seqno<42;", "IF ROW_COUNT()<>4 THEN", "source_ts=NULL"} {
		if !strings.Contains(all, want) {
			t.Errorf("serial guard lacks %q: %s", want, all)
		}
	}
}
