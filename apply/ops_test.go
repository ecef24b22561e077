package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/txlog"
)

// mustExec runs statements on an instance, outside its binlog.
func mustExec(t testing.TB, in *mariadbtest.Instance, qs ...string) {
	t.Helper()
	ctx := context.Background()
	c, err := in.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, q := range qs {
		if _, err := c.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

// stoppedOn returns the stop of the channel stopped on seqno, if any.
func stoppedOn(a *Applier, seqno uint64) *ApplyError {
	st := a.Status()
	for _, c := range append(st.Channels, st.Serial) {
		if c.Stopped != nil && c.Stopped.Seqno == seqno {
			return c.Stopped
		}
	}
	return nil
}

// startRun runs a in the background; stop ends it and returns its error.
func startRun(t testing.TB, a *Applier, src Source, ci CommitIndex) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, src, ci) }()
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
				t.Fatal("run did not stop")
			}
		})
		return err
	}
}

// distinctSchemas picks names of n schemas that land on n different
// channels out of channels.
func distinctSchemas(n, channels int) []string {
	var out []string
	used := map[int]bool{}
	for i := 0; len(out) < n; i++ {
		s := fmt.Sprintf("e%d", i)
		if ch := HashChannel(s, channels); !used[ch] {
			used[ch] = true
			out = append(out, s)
		}
	}
	return out
}

// TestApplyErrorStopsChannel: a record that fails (duplicate key) stops its
// channel with seqno, GTID, schema and error; other channels go on; Retry
// after fixing the data applies it; Skip moves past another without
// applying it. A second applier on the same server is refused meanwhile.
func TestApplyErrorStopsChannel(t *testing.T) {
	insts := startInstances(t, 2, 100)
	src, rep := insts[0], insts[1]
	schemas := distinctSchemas(3, 4)
	var setup []string
	for _, s := range schemas {
		setup = append(setup, "CREATE DATABASE "+s, "CREATE TABLE "+s+".t (id INT PRIMARY KEY, v VARCHAR(20))")
	}
	mustExec(t, src, setup...)
	nSetup := uint64(len(setup))
	var work []string
	for i := 1; i <= 300; i++ {
		for _, s := range schemas {
			work = append(work, fmt.Sprintf("INSERT INTO %s.t VALUES (%d, 'v%d')", s, i, i))
		}
	}
	mustExec(t, src, work...)
	recs := binlogRecords(t, src)
	find := func(schema string, id int) uint64 {
		return nSetup + uint64((id-1)*len(schemas)+indexOf(schemas, schema)) + 1
	}
	first, second := find(schemas[0], 100), find(schemas[0], 200)
	if !strings.Contains(string(recs[first-1].Events), "") || recs[first-1].Schemas[0] != schemas[0] {
		t.Fatalf("record %d is not the insert into %s", first, schemas[0])
	}

	a, err := New(Config{DSN: rep.DSN(""), Channels: 4, BlockSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	ci := committedIndex(nSetup)
	stop := startRun(t, a, &memSource{recs}, ci)
	defer stop()
	if err := a.WaitApplied(context.Background(), nSetup); err != nil {
		t.Fatal(err)
	}
	// Rows the source does not have: the replica was written to.
	mustExec(t, rep, "SET sql_log_bin=0",
		fmt.Sprintf("INSERT INTO %s.t VALUES (100, 'conflict'), (200, 'conflict')", schemas[0]))
	ci.Set(uint64(len(recs)))

	waitFor(t, "the channel to stop", 30*time.Second, func() bool { return stoppedOn(a, first) != nil })
	ae := stoppedOn(a, first)
	if ae.GTID != recs[first-1].GTID || len(ae.Schemas) != 1 || ae.Schemas[0] != schemas[0] ||
		!isErrNo(ae.Err, 1062) || ae.Channel != HashChannel(schemas[0], 4) {
		t.Fatalf("apply error %+v (%v)", ae, ae)
	}
	// The other channels go on to their last record.
	waitFor(t, "the other channels to finish", 30*time.Second, func() bool {
		st := a.Status()
		for _, s := range schemas[1:] {
			if st.Channels[HashChannel(s, 4)].Seqno < uint64(len(recs))-uint64(len(schemas)) {
				return false
			}
		}
		return true
	})
	if got := a.Applied(); got >= first {
		t.Fatalf("Applied %d past the stopped record %d", got, first)
	}
	if err := a.Skip(first + 1); err == nil {
		t.Fatal("Skip of a record no channel is stopped on succeeded")
	}

	// A second applier is refused while this one runs.
	b, err := New(Config{DSN: rep.DSN(""), Channels: 4, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Run(context.Background(), &memSource{recs}, committedIndex(0)); err == nil || !strings.Contains(err.Error(), "another applier holds lock") {
		t.Fatalf("second applier: %v", err)
	}

	// Fix the data and retry.
	mustExec(t, rep, "SET sql_log_bin=0", fmt.Sprintf("DELETE FROM %s.t WHERE id=100", schemas[0]))
	if err := a.Retry(first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the channel to stop again", 30*time.Second, func() bool { return stoppedOn(a, second) != nil })
	if err := a.Skip(second); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitApplied(context.Background(), uint64(len(recs))); err != nil {
		t.Fatal(err)
	}
	if err := stop(); !errors.Is(err, context.Canceled) {
		t.Fatalf("run ended with %v", err)
	}
	var v string
	if err := rep.DB.QueryRow(fmt.Sprintf("SELECT v FROM %s.t WHERE id=200", schemas[0])).Scan(&v); err != nil || v != "conflict" {
		t.Fatalf("skipped record applied after all: %q %v", v, err)
	}
	mustExec(t, rep, "SET sql_log_bin=0", fmt.Sprintf("UPDATE %s.t SET v='v200' WHERE id=200", schemas[0]))
	sameData(t, src.DB, rep.DB)
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestChannelCountChangeNeedsDrain: restart rows at different seqnos refuse
// a new channel count until a drain with the old count levels them.
func TestChannelCountChangeNeedsDrain(t *testing.T) {
	insts := startInstances(t, 2, 100)
	src, rep := insts[0], insts[1]
	counterWorkload(t, src.DB, 5, 300)
	recs := binlogRecords(t, src)
	// Stop at a channel record, so the rows are uneven.
	var x uint64
	m, _ := NewShardMap(ShardConfig{}, 4)
	for i := len(recs) / 2; ; i++ {
		if _, ser, _ := Classify(&recs[i], m); !ser {
			x = recs[i].Seqno
			break
		}
	}
	a4, err := New(Config{DSN: rep.DSN(""), Channels: 4})
	if err != nil {
		t.Fatal(err)
	}
	runApplier(t, a4, &memSource{recs}, x, 60*time.Second)
	rows, err := ReadRestartRows(context.Background(), rep.DB, "quire")
	if err != nil {
		t.Fatal(err)
	}
	even := true
	for _, r := range rows {
		even = even && r.Seqno == x
	}
	if even || len(rows) != 4 {
		t.Fatalf("rows %+v: want 4 uneven rows", rows)
	}

	a2, err := New(Config{DSN: rep.DSN(""), Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	err = a2.Run(context.Background(), &memSource{recs}, committedIndex(uint64(len(recs))))
	if !errors.Is(err, ErrDrainFirst) || !strings.Contains(err.Error(), "old channel count (4)") {
		t.Fatalf("2 channels on uneven rows: %v", err)
	}

	y := x + 20
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a4.Drain(ctx, &memSource{recs}, committedIndex(uint64(len(recs))), y); err != nil {
		t.Fatal(err)
	}
	if rows, _ = ReadRestartRows(ctx, rep.DB, "quire"); len(rows) != 4 {
		t.Fatalf("rows after drain: %+v", rows)
	}
	for _, r := range rows {
		if r.Seqno != y || r.GTID != recs[y-1].GTID {
			t.Fatalf("row after drain to %d: %+v", y, r)
		}
	}
	runApplier(t, a2, &memSource{recs}, uint64(len(recs)), 60*time.Second)
	if rows, _ = ReadRestartRows(ctx, rep.DB, "quire"); len(rows) != 2 || rows[0].ChannelCount != 2 {
		t.Fatalf("rows with 2 channels: %+v", rows)
	}
	sameData(t, src.DB, rep.DB)
}

// TestCompressedEventsRefused: the BINLOG statement cannot take compressed
// events; the channel stops with an error that says what to change.
func TestCompressedEventsRefused(t *testing.T) {
	src := startInstances(t, 1, 100, "log_bin_compress=ON", "log_bin_compress_min_len=10")[0]
	rep := startInstances(t, 1, 110)[0]
	mustExec(t, src, "CREATE DATABASE z", "CREATE TABLE z.t (id INT PRIMARY KEY, v TEXT)",
		"INSERT INTO z.t VALUES (1, REPEAT('compress me ', 50))")
	recs := binlogRecords(t, src)
	a, err := New(Config{DSN: rep.DSN("")})
	if err != nil {
		t.Fatal(err)
	}
	stop := startRun(t, a, &memSource{recs}, committedIndex(uint64(len(recs))))
	defer stop()
	var ae *ApplyError
	waitFor(t, "a stop", 30*time.Second, func() bool {
		st := a.Status()
		for _, c := range append(st.Channels, st.Serial) {
			if c.Stopped != nil {
				ae = c.Stopped
				return true
			}
		}
		return false
	})
	if !strings.Contains(ae.Error(), "compressed") || !strings.Contains(ae.Error(), "log_bin_compress=OFF") {
		t.Fatalf("error %v", ae)
	}
}

// TestCreateSelectCrashNeedsOperator: CREATE TABLE ... SELECT writes two
// event groups with one GTID; after a crash between them the applier cannot
// tell how much ran, so it stops and asks instead of guessing.
func TestCreateSelectCrashNeedsOperator(t *testing.T) {
	insts := startInstances(t, 2, 100)
	src, rep := insts[0], insts[1]
	mustExec(t, src, "CREATE DATABASE x", "CREATE TABLE x.a (id INT PRIMARY KEY, v VARCHAR(10))",
		"INSERT INTO x.a VALUES (1, 'one'), (2, 'two')",
		"CREATE TABLE x.b ENGINE=InnoDB SELECT * FROM x.a",
		"INSERT INTO x.a VALUES (3, 'three')")
	recs := binlogRecords(t, src)
	var ctas uint64
	for _, r := range recs {
		if r.Flags&txlog.FlagDDL != 0 && strings.Contains(string(r.Events), "x.b") || strings.Contains(string(r.Events), "`x`.`b`") {
			ctas = r.Seqno
		}
	}
	if ctas == 0 {
		t.Fatal("no CREATE ... SELECT record")
	}
	a, err := New(Config{DSN: rep.DSN("")})
	if err != nil {
		t.Fatal(err)
	}
	a.hooks.afterStatements = func(seqno uint64) {
		if seqno == ctas {
			if err := rep.Kill(); err != nil {
				t.Error(err)
			}
		}
	}
	if err := a.Run(context.Background(), &memSource{recs}, committedIndex(uint64(len(recs)))); err == nil {
		t.Fatal("run survived the kill")
	}
	a.hooks.afterStatements = nil
	if err := rep.Restart(); err != nil {
		t.Fatal(err)
	}
	stop := startRun(t, a, &memSource{recs}, committedIndex(uint64(len(recs))))
	defer stop()
	waitFor(t, "a stop on the CREATE ... SELECT", 30*time.Second, func() bool { return stoppedOn(a, ctas) != nil })
	if ae := stoppedOn(a, ctas); ae.Channel != SerialChannel || !strings.Contains(ae.Error(), "applied only in part") {
		t.Fatalf("error %v", ae)
	}
	// It ran fully before the crash: skip it.
	if err := a.Skip(ctas); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitApplied(context.Background(), uint64(len(recs))); err != nil {
		t.Fatal(err)
	}
	sameData(t, src.DB, rep.DB)
}

// TestLeftoverSessionKilled: a session of an earlier run that still holds
// its channel lock and an open transaction (its client gone mid-block) is
// killed before the new run reads the restart rows.
func TestLeftoverSessionKilled(t *testing.T) {
	insts := startInstances(t, 2, 100)
	src, rep := insts[0], insts[1]
	counterWorkload(t, src.DB, 9, 200)
	recs := binlogRecords(t, src)
	half := uint64(len(recs) / 2)
	a, err := New(Config{DSN: rep.DSN(""), Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	runApplier(t, a, &memSource{recs}, half, 60*time.Second)

	ctx := context.Background()
	zombie, err := rep.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	var got int
	if err := zombie.QueryRowContext(ctx, "SELECT GET_LOCK('quire.apply.0', 0)").Scan(&got); err != nil || got != 1 {
		t.Fatalf("GET_LOCK: %d %v", got, err)
	}
	if _, err := zombie.ExecContext(ctx, "START TRANSACTION"); err != nil {
		t.Fatal(err)
	}
	if _, err := zombie.ExecContext(ctx, "UPDATE quire.apply_channel SET seqno=seqno+1000 WHERE channel_id=0"); err != nil {
		t.Fatal(err)
	}
	runApplier(t, a, &memSource{recs}, uint64(len(recs)), 60*time.Second)
	if err := zombie.PingContext(ctx); err == nil {
		t.Fatal("the leftover session is still alive")
	}
	sameData(t, src.DB, rep.DB)
}

// TestLockWaitRetried: a block that hits a lock wait timeout is rolled back
// and retried one transaction at a time until it goes through.
func TestLockWaitRetried(t *testing.T) {
	insts := startInstances(t, 2, 100, "innodb_lock_wait_timeout=1")
	src, rep := insts[0], insts[1]
	mustExec(t, src, "CREATE DATABASE l", "CREATE TABLE l.t (id INT PRIMARY KEY, v INT)", "INSERT INTO l.t VALUES (1, 0), (2, 0)")
	setup := uint64(len(binlogRecords(t, src)))
	var work []string
	for i := range 20 {
		work = append(work, fmt.Sprintf("UPDATE l.t SET v=v+1 WHERE id=%d", 1+i%2))
	}
	mustExec(t, src, work...)
	recs := binlogRecords(t, src)
	reg := prometheus.NewRegistry()
	a, err := New(Config{DSN: rep.DSN(""), Channels: 2, BlockSize: 10, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ci := committedIndex(setup)
	stop := startRun(t, a, &memSource{recs}, ci)
	defer stop()
	if err := a.WaitApplied(context.Background(), setup); err != nil {
		t.Fatal(err)
	}
	// Another session holds row 2 for a while.
	ctx := context.Background()
	blocker, err := rep.DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	if _, err := blocker.ExecContext(ctx, "START TRANSACTION"); err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.ExecContext(ctx, "SELECT * FROM l.t WHERE id=2 FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	ci.Set(uint64(len(recs)))
	waitFor(t, "a retry", 30*time.Second, func() bool { return counterSum(t, reg, "quire_apply_retries_total") >= 2 })
	if _, err := blocker.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := a.WaitApplied(wctx, uint64(len(recs))); err != nil {
		t.Fatalf("%v; status %+v", err, a.Status())
	}
	sameData(t, src.DB, rep.DB)
}

// TestSerialRetryKeepsStatementsOnce: when the restart-row update after a
// DDL or non-transactional record's statements fails with a lock wait
// timeout, the retry writes the rows only; running the statements again
// would apply the record twice (an ALTER fails on its second run; a MyISAM
// insert leaves a second row).
func TestSerialRetryKeepsStatementsOnce(t *testing.T) {
	insts := startInstances(t, 2, 100, "innodb_lock_wait_timeout=1")
	src, rep := insts[0], insts[1]
	mustExec(t, src, "CREATE DATABASE s", "CREATE TABLE s.t (id INT PRIMARY KEY, v INT)", "CREATE TABLE s.m (v INT) ENGINE=MyISAM")
	setup := uint64(len(binlogRecords(t, src)))
	mustExec(t, src, "ALTER TABLE s.t ADD COLUMN w INT", "INSERT INTO s.m VALUES (1)", "INSERT INTO s.t VALUES (1, 1, 1)")
	recs := binlogRecords(t, src)
	reg := prometheus.NewRegistry()
	a, err := New(Config{DSN: rep.DSN(""), Channels: 2, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	retries := func() float64 {
		mfs, _ := reg.Gather()
		var n float64
		for _, mf := range mfs {
			if mf.GetName() == "quire_apply_retries_total" {
				for _, m := range mf.GetMetric() {
					n += m.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	ctx := context.Background()
	var blocked []uint64
	var wg sync.WaitGroup
	defer wg.Wait()
	a.hooks.afterStatements = func(seqno uint64) {
		if seqno <= setup || slices.Contains(blocked, seqno) {
			return
		}
		blocked = append(blocked, seqno)
		// Hold every restart row until the row update timed out and was
		// retried.
		blocker, err := rep.DB.Conn(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := blocker.ExecContext(ctx, "START TRANSACTION"); err != nil {
			t.Error(err)
		}
		if _, err := blocker.ExecContext(ctx, "SELECT * FROM quire.apply_channel FOR UPDATE"); err != nil {
			t.Error(err)
		}
		before := retries()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer blocker.Close()
			deadline := time.Now().Add(30 * time.Second)
			for retries() < before+2 && time.Now().Before(deadline) && stoppedOn(a, seqno) == nil {
				time.Sleep(10 * time.Millisecond) // poll interval
			}
			blocker.ExecContext(ctx, "ROLLBACK")
		}()
	}
	runApplier(t, a, &memSource{recs}, uint64(len(recs)), 60*time.Second)
	if len(blocked) != 2 {
		t.Fatalf("restart rows held after the statements of %v, want the ALTER and the MyISAM insert", blocked)
	}
	if n := retries(); n < 4 {
		t.Fatalf("%v retries, want at least 2 per held record", n)
	}
	sameData(t, src.DB, rep.DB)
	seen := map[string]bool{}
	for _, g := range binlogGTIDs(t, rep) {
		if seen[g] {
			t.Errorf("GTID %s is twice in the replica's binlog", g)
		}
		seen[g] = true
	}
}
