package binlog

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/txlog"
)

// testLogger logs through t while the test runs.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// want is what a workload step must produce.
type want struct {
	schemas []string
	flags   txlog.Flags
}

// TestWorkload runs DDL, single- and multi-schema transactions, a COMMIT-
// terminated (Aria) transaction and a 20 MiB row through a semi-sync
// source that acknowledges every record, and checks every record against
// the binlog on disk and mariadb-binlog. It then restarts extraction from
// random records (TestDeterminism's property) and compares.
func TestWorkload(t *testing.T) {
	in := mariadbtest.Start(t, 1, mariadbtest.Options{Settings: mariadbtest.SemiSyncPrimary})[0]
	start := firstPosition(t, in)
	cfg := testConfig(t, in, true)
	src, err := Open(context.Background(), cfg, Resume{Position: start})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r := startReader(t, src, true)

	const ddl, multi, unknown = txlog.FlagDDL, txlog.FlagMultiSchema, txlog.FlagUnknownSchema
	big := "INSERT INTO big VALUES (1, REPEAT(UNHEX(SHA2('quire', 512)), 327680))" // 64 B × 327680 = 20 MiB
	steps := []struct {
		db    string
		stmts []string
		want  want
	}{
		{"", []string{"CREATE DATABASE s1"}, want{[]string{"s1"}, ddl | unknown}},
		{"", []string{"CREATE DATABASE s2"}, want{[]string{"s2"}, ddl | unknown}},
		{"", []string{"CREATE DATABASE s3"}, want{[]string{"s3"}, ddl | unknown}},
		{"", []string{"CREATE TABLE s1.t (id INT PRIMARY KEY, v VARCHAR(100))"}, want{nil, ddl | unknown}},
		{"s2", []string{"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100))"}, want{[]string{"s2"}, ddl}},
		{"s3", []string{"CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)"}, want{[]string{"s3"}, ddl}},
		{"s1", []string{"CREATE TABLE a (id INT PRIMARY KEY) ENGINE=Aria TRANSACTIONAL=0"}, want{[]string{"s1"}, ddl}},
		{"", []string{"INSERT INTO s1.t VALUES (1, 'one')"}, want{[]string{"s1"}, 0}},
		{"s2", []string{"INSERT INTO t VALUES (1, 'one'), (2, 'two')"}, want{[]string{"s2"}, 0}},
		{"s1", []string{"BEGIN", "INSERT INTO t VALUES (2, 'two')", "UPDATE s2.t SET v = 'zwei' WHERE id = 2", "COMMIT"}, want{[]string{"s1", "s2"}, multi}},
		{"s1", []string{"INSERT INTO a VALUES (1)"}, want{[]string{"s1"}, 0}},
		{"s1", []string{"ALTER TABLE t ADD COLUMN w INT"}, want{[]string{"s1"}, ddl}},
		{"s1", []string{"ALTER TABLE s2.t ADD COLUMN w INT"}, want{[]string{"s1"}, ddl | unknown}},
		{"s3", []string{big}, want{[]string{"s3"}, 0}},
		{"", []string{"CREATE USER 'app'@'%' IDENTIFIED BY 'secret'"}, want{nil, ddl | unknown}},
		{"s2", []string{"DELETE FROM t WHERE id = 1"}, want{[]string{"s2"}, 0}},
		{"", []string{"DROP DATABASE s3"}, want{[]string{"s3"}, ddl | unknown}},
		{"s2", []string{"CREATE TABLE copy SELECT * FROM t"}, want{[]string{"s2"}, ddl}},
		{"s1", []string{"BEGIN", "SAVEPOINT p", "INSERT INTO t VALUES (3, 'three', 3)", "ROLLBACK TO SAVEPOINT p", "INSERT INTO t VALUES (4, 'four', 4)", "COMMIT"}, want{[]string{"s1"}, 0}},
	}
	var recs []txlog.Record
	for i, st := range steps {
		run(t, in, st.db, st.stmts...)
		got := r.take(t, 1, 30*time.Second)[0]
		recs = append(recs, got)
		if got.Seqno != uint64(i+1) || got.Epoch != 1 {
			t.Errorf("step %d: seqno/epoch %d/%d, want %d/1", i, got.Seqno, got.Epoch, i+1)
		}
		if !reflect.DeepEqual(got.Schemas, st.want.schemas) && !(len(got.Schemas) == 0 && len(st.want.schemas) == 0) {
			t.Errorf("step %d %q: schemas %v, want %v", i, st.stmts, got.Schemas, st.want.schemas)
		}
		if got.Flags != st.want.flags {
			t.Errorf("step %d %q: flags %s, want %s", i, st.stmts, flagString(got.Flags), flagString(st.want.flags))
		}
	}
	r.expectNone(t, 300*time.Millisecond)

	// GTIDs: consecutive, as mariadb-binlog and @@gtid_binlog_pos say.
	gtids := binlogGTIDs(t, in)
	if len(gtids) != len(recs) {
		t.Fatalf("mariadb-binlog lists %d GTIDs, the reader returned %d records", len(gtids), len(recs))
	}
	for i, rec := range recs {
		if rec.GTID != gtids[i] {
			t.Errorf("record %d: GTID %s, mariadb-binlog says %s", rec.Seqno, rec.GTID, gtids[i])
		}
		if rec.ServerID != in.ServerID {
			t.Errorf("record %d: server id %d, want %d", rec.Seqno, rec.ServerID, in.ServerID)
		}
		if fe := fileEvents(t, in, rec); !bytes.Equal(fe, rec.Events) {
			t.Errorf("record %d (%s): events differ from the binlog file (%d vs %d bytes)", rec.Seqno, rec.GTID, len(rec.Events), len(fe))
		}
		if !sameFDE(rec.FormatDesc, fileFDE(t, in, rec.SourceFile)) {
			t.Errorf("record %d: format description differs from the file's", rec.Seqno)
		}
		if err := verifyCRC(rec.FormatDesc); err != nil {
			t.Errorf("record %d: format description checksum: %v", rec.Seqno, err)
		}
	}
	last := recs[len(recs)-1]
	if pos := gtidBinlogPos(t, in); last.GTID != pos {
		t.Errorf("last GTID %s, @@gtid_binlog_pos %s", last.GTID, pos)
	}
	end, _, err := CurrentPosition(context.Background(), in.DB)
	if err != nil {
		t.Fatal(err)
	}
	if (Position{last.SourceFile, last.SourcePos}) != end {
		t.Errorf("last record ends at %s:%d, SHOW MASTER STATUS says %s", last.SourceFile, last.SourcePos, end)
	}
	if big := recs[13]; len(big.Events) < 20<<20 {
		t.Errorf("20 MiB row: record has %d bytes of events, want an event larger than one 16 MiB packet", len(big.Events))
	}
	for _, rec := range recs {
		t.Log(describe(rec))
	}

	r.stop()
	src.Close()

	// Deterministic numbering: restart from a random record (and, with
	// semi-sync, from an earlier acknowledged one) and compare.
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("restart seed %d", seed)
	for round := range 4 {
		k := rng.IntN(len(recs) - 1)
		j := rng.IntN(k + 1)
		res := Resume{Seqno: recs[k].Seqno, GTID: recs[k].GTID,
			Position: Position{recs[k].SourceFile, recs[k].SourcePos},
			Acked:    Position{recs[j].SourceFile, recs[j].SourcePos}}
		switch round {
		case 0: // the dump starts at the record itself
			res.Acked = Position{}
		case 3: // the dump starts after the record's GTID
			res = Resume{Seqno: recs[k].Seqno, GTID: recs[k].GTID, GTIDState: recs[k].GTID}
		}
		cfg2 := cfg
		cfg2.ServerID++
		src2, err := Open(context.Background(), cfg2, res)
		if err != nil {
			t.Fatal(err)
		}
		r2 := startReader(t, src2, false)
		again := r2.take(t, len(recs)-k-1, 30*time.Second)
		r2.expectNone(t, 300*time.Millisecond)
		r2.stop()
		src2.Close()
		for i, rec := range again {
			if d := recordDiff(rec, recs[k+1+i]); d != "" {
				t.Errorf("round %d (resume after %d, acked %d): record %s differs: %s", round, k+1, j+1, describe(rec), d)
			}
		}
	}
}
