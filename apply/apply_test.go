package apply

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/txlog"
)

// workload runs a mixed, deterministic workload on one session of db:
// 6 schemas, inserts, updates and deletes over many column types, two-schema
// transactions, DDL in the middle (with a time zone and a timestamp that
// matter), CREATE ... SELECT, a MyISAM table and a statement-logged
// transaction. It returns the number of transactions it committed.
func workload(t testing.TB, db *sql.DB, seed uint64, n int) {
	t.Helper()
	ctx := context.Background()
	c, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := c.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("workload: %s: %v", q, err)
		}
	}
	const schemas = 6
	for s := 1; s <= schemas; s++ {
		exec(fmt.Sprintf("CREATE DATABASE s%d CHARACTER SET utf8mb4", s))
		exec(fmt.Sprintf(`CREATE TABLE s%d.t (
  id INT PRIMARY KEY,
  d DECIMAL(30,10),
  u BIGINT UNSIGNED,
  j JSON,
  ts TIMESTAMP(6) NULL,
  b BLOB,
  txt VARCHAR(200) CHARACTER SET utf8mb4,
  n INT NULL,
  f DOUBLE,
  e ENUM('a','b','c'),
  dt DATETIME(3),
  bits BIT(7)
) ENGINE=InnoDB`, s))
	}
	exec("CREATE TABLE s6.m (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=MyISAM")
	exec("CREATE TABLE s1.auto (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB")

	r := rand.New(rand.NewPCG(seed, 42))
	ids := make([][]int, schemas+1)
	nextID := 1
	texts := []string{"plain", "emoji 😀🚀", "quote ' \" \\ back", "中文", "", "tab\tnew\nline"}
	row := func() []any {
		var d, u, j, ts, b, txt, n, f, e, dt, bits any
		if r.IntN(6) > 0 {
			d = fmt.Sprintf("%d.%010d", r.Int64N(1e18)-5e17, r.IntN(1e9))
		}
		switch r.IntN(3) {
		case 0:
			u = uint64(18446744073709551615)
		case 1:
			u = r.Uint64()
		}
		if r.IntN(5) > 0 {
			j = fmt.Sprintf(`{"k": %d, "s": "%s", "a": [1, 2.5, null, true], "o": {"x": "😀"}}`, r.IntN(1000), texts[r.IntN(2)])
		}
		if r.IntN(4) > 0 {
			ts = fmt.Sprintf("2024-%02d-%02d %02d:%02d:%02d.%06d", 1+r.IntN(12), 1+r.IntN(28), r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(1e6))
		}
		if r.IntN(4) > 0 {
			bb := make([]byte, r.IntN(300))
			for i := range bb {
				bb[i] = byte(r.IntN(256))
			}
			b = bb
		}
		txt = texts[r.IntN(len(texts))]
		if r.IntN(3) > 0 {
			n = r.IntN(1000) - 500
		}
		f = r.NormFloat64() * 1e6
		e = []any{"a", "b", "c", nil}[r.IntN(4)]
		dt = fmt.Sprintf("19%02d-06-15 12:34:56.%03d", r.IntN(100), r.IntN(1000))
		bits = r.IntN(128)
		return []any{d, u, j, ts, b, txt, n, f, e, dt, bits}
	}
	stmt := func(s int) {
		switch op := r.IntN(10); {
		case op < 5 || len(ids[s]) < 3:
			id := nextID
			nextID++
			ids[s] = append(ids[s], id)
			exec(fmt.Sprintf("INSERT INTO s%d.t (id, d, u, j, ts, b, txt, n, f, e, dt, bits) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", s), append([]any{id}, row()...)...)
		case op < 8:
			v := row()
			exec(fmt.Sprintf("UPDATE s%d.t SET d=?, j=?, txt=?, n=?, ts=? WHERE id=?", s), v[0], v[2], v[5], v[6], v[3], ids[s][r.IntN(len(ids[s]))])
		default:
			i := r.IntN(len(ids[s]))
			exec(fmt.Sprintf("DELETE FROM s%d.t WHERE id=?", s), ids[s][i])
			ids[s] = slices.Delete(ids[s], i, i+1)
		}
	}
	for i := range n {
		if i == n/2 {
			exec("SET SESSION time_zone='+05:00'")
			exec("ALTER TABLE s3.t ADD COLUMN created TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), ADD COLUMN fixed TIMESTAMP NOT NULL DEFAULT '2020-01-01 00:00:00'")
			exec("SET SESSION time_zone=DEFAULT")
			exec("ALTER TABLE s2.t COMMENT='rocket 🚀 table'")
			exec("SET SESSION sql_mode='ANSI_QUOTES'")
			exec(`CREATE TABLE s4."quoted" (id INT PRIMARY KEY) ENGINE=InnoDB`)
			exec("SET SESSION sql_mode=DEFAULT")
			exec("CREATE TABLE s5.copy ENGINE=InnoDB SELECT id, txt, j FROM s5.t")
			exec("INSERT INTO s6.m VALUES (1, 'myisam'), (2, 'two')")
			exec("SET SESSION binlog_format=STATEMENT")
			exec("INSERT INTO s4.t (id, txt, n) VALUES (1000000, 'statement 😀', 7)")
			exec("SET SESSION binlog_format=ROW")
			exec("INSERT INTO s1.auto (v) VALUES ('a'), ('b')")
			continue
		}
		exec("BEGIN")
		if r.IntN(15) == 0 {
			a, b := 1+r.IntN(schemas), 1+r.IntN(schemas)
			stmt(a)
			stmt(b)
		} else {
			s := 1 + r.IntN(schemas)
			for range 1 + r.IntN(3) {
				stmt(s)
			}
		}
		exec("COMMIT")
	}
}

// TestReplayMatrix replays one workload onto fresh replicas with 1 and 4
// channels and block sizes 1 and 10, in shard commit order, and once in
// global order on a replica with gtid_strict_mode=ON; every replica must end
// equal to the source, with the source's GTIDs in its binlog.
func TestReplayMatrix(t *testing.T) {
	n := 600
	if testing.Short() {
		n = 200
	}
	insts := startInstances(t, 5, 100)
	strict := startInstances(t, 1, 200, "gtid_strict_mode=ON")[0]
	src, replicas := insts[0], append(insts[1:], strict)
	workload(t, src.DB, 1, n)
	recs := binlogRecords(t, src)
	if len(recs) < n {
		t.Fatalf("%d records from %d transactions", len(recs), n)
	}
	var srcPos string
	if err := src.DB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&srcPos); err != nil {
		t.Fatal(err)
	}
	srcGTIDs := make([]string, len(recs))
	for i, r := range recs {
		srcGTIDs[i] = r.GTID
	}
	for i, tc := range []struct {
		channels, block int
		order           CommitOrder
	}{
		{1, 1, CommitShard},
		{4, 1, CommitShard},
		{1, 10, CommitShard},
		{4, 10, CommitShard},
		{4, 1, CommitGlobal},
	} {
		name := fmt.Sprintf("%s/channels=%d/block=%d", tc.order, tc.channels, tc.block)
		t.Run(name, func(t *testing.T) {
			rep := replicas[i]
			a, err := New(Config{DSN: rep.DSN(""), Channels: tc.channels, BlockSize: tc.block, CommitOrder: tc.order,
				Logger: slog.New(slog.NewTextHandler(testLogger(t), &slog.HandlerOptions{Level: slog.LevelWarn}))})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			runApplier(t, a, &memSource{recs}, uint64(len(recs)), 90*time.Second)
			el := time.Since(start)
			st := a.Status()
			t.Logf("%d records in %v (%.0f tx/s); serialized %d", len(recs), el.Round(time.Millisecond),
				float64(len(recs))/el.Seconds(), st.Serial.Transactions)
			sameData(t, src.DB, rep.DB)

			got := binlogGTIDs(t, rep)
			inSrc := map[string]bool{}
			for _, g := range srcGTIDs {
				inSrc[g] = true
			}
			for _, g := range got {
				if !inSrc[g] {
					t.Errorf("replica binlog has GTID %s the source never wrote", g)
				}
			}
			var repPos string
			if err := rep.DB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&repPos); err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(got, srcPos) {
				t.Errorf("source gtid_binlog_pos %s is not in the replica's binlog (replica pos %s)", srcPos, repPos)
			}
			switch {
			case tc.order == CommitGlobal:
				// Same history, same order (CREATE ... SELECT logs once
				// under strict mode).
				if !slices.Equal(got, srcGTIDs) {
					t.Errorf("global order: replica GTIDs differ from the source's:\nsource  %v\nreplica %v", srcGTIDs, got)
				}
				if repPos != srcPos {
					t.Errorf("global order: gtid_binlog_pos %s, source %s", repPos, srcPos)
				}
			case tc.block == 1:
				seen := map[string]bool{}
				for _, g := range got {
					seen[g] = true
				}
				for _, g := range srcGTIDs {
					if !seen[g] {
						t.Errorf("block size 1: source GTID %s missing from the replica's binlog", g)
					}
				}
			}
			rows, err := ReadRestartRows(context.Background(), rep.DB, "quire")
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != tc.channels {
				t.Fatalf("%d restart rows, want %d", len(rows), tc.channels)
			}
			for _, r := range rows {
				if r.Seqno > uint64(len(recs)) || r.ChannelCount != tc.channels || r.AppliedAt.IsZero() {
					t.Errorf("restart row %+v", r)
				}
			}
		})
	}
}

// TestQueryEventContext checks the replayed DDL statements keep their
// session context: the replica logs them with the source's status
// variables (flags, sql_mode, character sets, time zone).
func TestQueryEventContext(t *testing.T) {
	// The replica does not log what its replication threads apply; the
	// applier's sessions are clients, so their BINLOG statements and DDL
	// are logged all the same.
	src := startInstances(t, 1, 100)[0]
	// With binlog_ignore_db, the restart rows stay out of its binlog.
	rep := startInstances(t, 1, 110, "log_slave_updates=OFF", "binlog_ignore_db=quire")[0]
	ctx := context.Background()
	c, err := src.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, q := range []string{
		"CREATE DATABASE q1 CHARACTER SET utf8mb4",
		"SET SESSION foreign_key_checks=0, unique_checks=0, sql_auto_is_null=1, check_constraint_checks=0, sql_if_exists=1",
		"CREATE TABLE q1.a (id INT PRIMARY KEY)",
		"SET SESSION foreign_key_checks=1, unique_checks=1, sql_auto_is_null=0, check_constraint_checks=1, sql_if_exists=0, explicit_defaults_for_timestamp=0",
		"CREATE TABLE q1.b (id INT PRIMARY KEY, ts TIMESTAMP)",
		"SET SESSION explicit_defaults_for_timestamp=1, system_versioning_insert_history=1",
		"CREATE TABLE q1.c (id INT PRIMARY KEY)",
		"SET SESSION system_versioning_insert_history=0, time_zone='-03:30', sql_mode='ANSI,NO_BACKSLASH_ESCAPES', lc_time_names='de_DE', auto_increment_increment=3, auto_increment_offset=2",
		`CREATE TABLE q1."d" (id INT PRIMARY KEY, ts TIMESTAMP DEFAULT '2001-02-03 04:05:06')`,
		"SET NAMES latin1",
		"CREATE TABLE q1.e (id INT PRIMARY KEY, v VARCHAR(10) DEFAULT 'é')",
		"SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
		"USE q1",
		"CREATE TABLE f (id INT PRIMARY KEY, v VARCHAR(10) DEFAULT '😀')",
		"INSERT INTO f (id) VALUES (1), (2)",
		"UPDATE f SET v = 'x' WHERE id = 2",
	} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	recs := binlogRecords(t, src)
	a, err := New(Config{DSN: rep.DSN(""), Channels: 2, BlockSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	runApplier(t, a, &memSource{recs}, uint64(len(recs)), 60*time.Second)
	sameData(t, src.DB, rep.DB)

	// Compare the status variables of every statement, minus the XID. Of
	// the client's collation only the character set counts (as with
	// mariadb-binlog, SET character_set_client takes a character set).
	charsetOf := map[uint16]string{}
	rows, err := src.DB.Query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uint16
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			t.Fatal(err)
		}
		charsetOf[id] = name
	}
	rows.Close()
	status := func(recs []txlog.Record) map[string]string {
		out := map[string]string{}
		for _, r := range recs {
			f, err := parseFormat(r.FormatDesc)
			if err != nil {
				t.Fatal(err)
			}
			evs, err := splitEvents(r.Events, f)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if ev.typ != 2 {
					continue
				}
				db, q, _ := queryText(ev)
				vars := ev.body[13 : 13+int(ev.body[11])|int(ev.body[12])<<8]
				v, err := parseStatusVars(vars)
				if err != nil {
					t.Fatal(err)
				}
				out[r.GTID] = fmt.Sprintf("db=%q q=%q flags2=%#x sql_mode=%d client=%s connection=%d server=%d tz=%q lc=%d ai=%d/%d collation_db=%d",
					db, q, v.flags2, v.sqlMode, charsetOf[v.charset[0]], v.charset[1], v.charset[2], v.timeZone, v.lcTimeNames, v.autoIncInc, v.autoIncOff, v.collationDB)
			}
		}
		return out
	}
	repRecs := binlogRecords(t, rep)
	if len(repRecs) != len(recs) {
		t.Fatalf("replica binlog has %d transactions, source %d", len(repRecs), len(recs))
	}
	for i := range recs {
		if recs[i].GTID != repRecs[i].GTID {
			t.Errorf("transaction %d: GTID %s on the source, %s on the replica", i, recs[i].GTID, repRecs[i].GTID)
		}
	}
	for _, r := range repRecs {
		if slices.Contains(r.Schemas, "quire") {
			t.Errorf("replica binlog: GTID %s writes the restart rows despite binlog_ignore_db", r.GTID)
		}
	}
	want, got := status(recs), status(repRecs)
	for g, w := range want {
		if got[g] != w {
			t.Errorf("GTID %s:\nsource  %s\nreplica %s", g, w, got[g])
		}
	}
	if len(want) < 6 {
		t.Fatalf("only %d statements compared", len(want))
	}
}

// TestStrictModeRefusedInShardOrder: shard commit order needs
// gtid_strict_mode=OFF.
func TestStrictModeRefusedInShardOrder(t *testing.T) {
	in := startInstances(t, 1, 100, "gtid_strict_mode=ON")[0]
	a, err := New(Config{DSN: in.DSN("")})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(context.Background(), &memSource{}, committedIndex(0))
	if err == nil || !strings.Contains(err.Error(), "gtid_strict_mode") || !strings.Contains(err.Error(), "1950") {
		t.Fatalf("Run: %v", err)
	}
}
