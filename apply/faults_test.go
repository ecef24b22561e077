package apply

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quire-ha/quire/internal/mariadbtest"
)

// counterWorkload: n transactions of counter = counter + 1 over 4 schemas
// (some across two schemas), with DDL at a third and two thirds. Each
// transaction also appends a row to its schema's keyless table h: replaying
// an UPDATE rows event again rewrites the same after image, so a record
// applied twice would leave c unchanged, but it leaves a second row in h,
// which the data comparison sees.
func counterWorkload(t testing.TB, db *sql.DB, seed uint64, n int) {
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
	for s := 1; s <= 4; s++ {
		exec(fmt.Sprintf("CREATE DATABASE c%d", s))
		exec(fmt.Sprintf("CREATE TABLE c%d.c (id INT PRIMARY KEY, counter BIGINT NOT NULL DEFAULT 0, note VARCHAR(40))", s))
		exec(fmt.Sprintf("INSERT INTO c%d.c (id) VALUES (1),(2),(3),(4),(5),(6),(7),(8)", s))
		exec(fmt.Sprintf("CREATE TABLE c%d.h (tx INT NOT NULL, note VARCHAR(40)) ENGINE=InnoDB", s))
	}
	r := rand.New(rand.NewPCG(seed, 7))
	for i := range n {
		switch i {
		case n / 3:
			exec("ALTER TABLE c2.c ADD COLUMN extra INT NOT NULL DEFAULT 0")
		case 2 * n / 3:
			exec("CREATE TABLE c3.more (id INT PRIMARY KEY, counter BIGINT NOT NULL)")
			exec("INSERT INTO c3.more VALUES (1, 0)")
		}
		exec("BEGIN")
		s := 1 + r.IntN(4)
		exec(fmt.Sprintf("INSERT INTO c%d.h VALUES (?, 'tx')", s), i)
		for range 1 + r.IntN(3) {
			exec(fmt.Sprintf("UPDATE c%d.c SET counter = counter + 1, note = ? WHERE id = ?", s), strconv.Itoa(i), 1+r.IntN(8))
		}
		if r.IntN(20) == 0 {
			exec(fmt.Sprintf("UPDATE c%d.c SET counter = counter + 1 WHERE id = 1", 1+(s%4)))
		}
		if i > 2*n/3 && r.IntN(5) == 0 {
			exec("UPDATE c3.more SET counter = counter + 1")
		}
		exec("COMMIT")
	}
}

// TestExactlyOnceUnderFaults applies a counter workload while cutting the
// applier off at random points: cancelling its context mid-block (before
// and racing the COMMIT), after a DDL statement before its restart rows,
// and kill -9 of the replica's mariadbd (mid-block, after DDL statements,
// at random progress). Each time it runs again from the restart rows; at
// the end the replica must equal the source and its binlog must hold no
// GTID twice. QUIRE_APPLY_FAULT_ROUNDS sets the number of faults.
func TestExactlyOnceUnderFaults(t *testing.T) {
	n, rounds := 1500, 14
	if testing.Short() {
		n, rounds = 600, 6
	}
	if s := os.Getenv("QUIRE_APPLY_FAULT_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
		n = max(n, rounds*150)
	}
	insts := startInstances(t, 2, 100)
	src, rep := insts[0], insts[1]
	counterWorkload(t, src.DB, 3, n)
	recs := binlogRecords(t, src)
	last := uint64(len(recs))
	source := &memSource{recs}

	a, err := New(Config{DSN: rep.DSN(""), Channels: 4, BlockSize: 10, LockTimeout: 30 * time.Second,
		Logger: slog.New(slog.NewTextHandler(testLogger(t), &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		atCommit  func()
		atDDL     func()
		triggered = make(chan string, 4)
	)
	a.hooks.beforeCommit = func(ch int, first, last uint64) {
		mu.Lock()
		f := atCommit
		atCommit = nil
		mu.Unlock()
		if f != nil {
			f()
			triggered <- fmt.Sprintf("commit of %d..%d on channel %d", first, last, ch)
		}
	}
	a.hooks.afterStatements = func(seqno uint64) {
		mu.Lock()
		f := atDDL
		atDDL = nil
		mu.Unlock()
		if f != nil {
			f()
			triggered <- fmt.Sprintf("after the statements of serialized %d", seqno)
		}
	}

	r := rand.New(rand.NewPCG(11, 13))
	faults := 0
	kills := 0
	reported := map[string]bool{} // GTIDs and cut files already reported
	for round := 0; ; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx, source, committedIndex(last)) }()

		final := round >= rounds
		var faultWG sync.WaitGroup // the progress watcher
		kill := func() {
			if err := rep.Kill(); err != nil {
				t.Error(err)
			}
		}
		var what string
		if !final {
			switch k := r.IntN(7); k {
			case 0, 1: // cancel between the block's statements and its COMMIT
				what = "cancel before COMMIT"
				mu.Lock()
				atCommit = cancel
				mu.Unlock()
			case 2: // cancel racing the COMMIT on the wire
				what = "cancel racing COMMIT"
				d := time.Duration(r.IntN(3000)) * time.Microsecond
				mu.Lock()
				atCommit = func() { time.AfterFunc(d, cancel) }
				mu.Unlock()
			case 3: // kill -9 mid-block
				what = "kill -9 before COMMIT"
				mu.Lock()
				atCommit = kill
				mu.Unlock()
			case 4: // after DDL statements, before the restart rows
				what = "fault after DDL statements"
				f := cancel
				if r.IntN(2) == 0 {
					f = kill
				}
				mu.Lock()
				atDDL = f
				mu.Unlock()
			default: // at random progress
				what = "cancel at random progress"
				target := a.Applied() + 1 + uint64(r.IntN(150))
				var f func() = cancel
				if k == 6 {
					what, f = "kill -9 at random progress", kill
				}
				faultWG.Add(1)
				go func() {
					defer faultWG.Done()
					for a.Applied() < target && ctx.Err() == nil {
						time.Sleep(time.Millisecond) // poll interval
					}
					if ctx.Err() == nil {
						f()
						triggered <- fmt.Sprintf("progress %d", target)
					}
				}()
			}
		}

		var err error
		if final {
			wctx, wcancel := context.WithTimeout(context.Background(), 90*time.Second)
			finished := make(chan struct{})
			go func() {
				err = <-done
				close(finished)
				wcancel() // a run that ends by itself failed: stop waiting
			}()
			werr := a.WaitApplied(wctx, last)
			cancel()
			<-finished
			wcancel()
			if werr != nil {
				t.Fatalf("final run: applied %d of %d: %v (run: %v)", a.Applied(), last, werr, err)
			}
			break
		}
		select {
		case err = <-done:
		case <-time.After(90 * time.Second):
			cancel()
			t.Fatalf("round %d (%s): run did not end; applied %d of %d; status %+v", round, what, a.Applied(), last, a.Status())
		}
		cancel()
		faultWG.Wait()
		mu.Lock()
		atCommit, atDDL = nil, nil
		mu.Unlock()
		select {
		case where := <-triggered:
			faults++
			t.Logf("round %d: %s at %s: run ended with: %v", round, what, where, err)
		default:
			t.Logf("round %d: %s: no fault point reached; run ended with: %v", round, what, err)
		}
		if err == nil {
			t.Fatalf("round %d: run ended without an error", round)
		}
		var ae *ApplyError
		if errors.As(err, &ae) {
			t.Fatalf("round %d: %v", round, err)
		}
		if rep.PID() == 0 {
			kills++
			if err := rep.Restart(); err != nil {
				t.Fatal(err)
			}
		}
		// Check the binlog after every round, so a GTID written twice
		// names the round (the fault) that wrote it.
		checkBinlog(t, rep, fmt.Sprintf("after round %d (%s)", round, what), false, reported)
		if a.Applied() >= last && round < rounds-1 {
			t.Logf("everything applied after %d rounds", round+1)
			rounds = round + 1
		}
	}
	t.Logf("%d records, %d faults injected (%d mariadbd kills)", last, faults, kills)
	if faults < min(rounds, 3) {
		t.Errorf("only %d faults hit", faults)
	}
	sameData(t, src.DB, rep.DB)
	checkBinlog(t, rep, "at the end", true, reported)
	if t.Failed() {
		keepBinlog(t, rep)
	}
	rows, err := ReadRestartRows(context.Background(), rep.DB, "quire")
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if row.Seqno > last {
			t.Errorf("restart row %+v beyond the last record %d", row, last)
		}
	}
}

// checkBinlog fails the test if a complete event group's GTID is in the
// replica's binlog twice: a transaction (or block) committed twice. It logs
// the binlog files a kill -9 cut short (see scanBinlogFiles) and the GTIDs
// of groups cut off there and applied again: crash recovery rolled those
// transactions back, so applying them again is right.
func checkBinlog(t *testing.T, rep *mariadbtest.Instance, when string, settled bool, reported map[string]bool) {
	t.Helper()
	scan := scanBinlog(t, rep, settled)
	for _, c := range scan.cut {
		if !reported[c] {
			reported[c] = true
			t.Logf("%s: binlog file cut short by the kill: %s", when, c)
		}
	}
	seen := map[string]binlogGroup{}
	for _, g := range scan.groups {
		if !g.ended {
			continue
		}
		if first, ok := seen[g.gtid]; ok && !reported[g.gtid] {
			reported[g.gtid] = true
			t.Errorf("%s: GTID %s is twice in the replica's binlog: %v and %v", when, g.gtid, first, g)
		}
		seen[g.gtid] = g
	}
	for _, g := range scan.groups {
		if c, ok := seen[g.gtid]; ok && !g.ended && !reported["cut "+g.gtid] {
			reported["cut "+g.gtid] = true
			t.Logf("%s: GTID %s was cut off by the kill and applied again: %v, then %v", when, g.gtid, g, c)
		}
	}
}

// keepBinlog copies the replica's binlog files and error log to
// $QUIRE_APPLY_KEEP, if set, for a post-mortem (mariadb-binlog).
func keepBinlog(t *testing.T, rep *mariadbtest.Instance) {
	dir := os.Getenv("QUIRE_APPLY_KEEP")
	if dir == "" {
		return
	}
	dir = filepath.Join(dir, fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Log(err)
		return
	}
	for _, f := range append(binlogFiles(t, rep), rep.ErrorLog()) {
		b, err := os.ReadFile(f)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644)
		}
		if err != nil {
			t.Log(err)
		}
	}
	t.Logf("binlog files and error log kept in %s", dir)
}

// TestBinlogScanAfterKill checks the binlog reading of the fault test on
// what a kill -9 leaves: real binlog bytes, with the file cut at every
// offset inside a transaction's group and the transaction applied again,
// complete, in the next file (crash recovery rolled the cut one back). The
// GTID must count once; it counted twice when every GTID event counted,
// which failed TestExactlyOnceUnderFaults with "GTID ... is twice in the
// replica's binlog" although nothing was applied twice.
func TestBinlogScanAfterKill(t *testing.T) {
	in := startInstances(t, 1, 100)[0]
	mustExec(t, in, "CREATE DATABASE k", "CREATE TABLE k.t (id INT PRIMARY KEY, v VARCHAR(40))",
		"BEGIN", "INSERT INTO k.t VALUES (1, 'one'), (2, 'two')", "UPDATE k.t SET v = 'uno' WHERE id = 1", "COMMIT",
		"INSERT INTO k.t VALUES (3, 'three')")
	files := binlogFiles(t, in)
	whole, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		t.Fatal(err)
	}
	scan, err := scanBinlogFiles(files[len(files)-1:], true)
	if err != nil {
		t.Fatal(err)
	}
	if len(scan.groups) < 4 {
		t.Fatalf("groups %v, want the setup and two transactions", scan.groups)
	}
	g := scan.groups[len(scan.groups)-2] // BEGIN, two statements, COMMIT
	next := scan.groups[len(scan.groups)-1]
	if !g.ended || len(g.kinds) < 5 {
		t.Fatalf("group %v, want a complete multi-event transaction", g)
	}
	// The file a restarted server writes: the format description and the
	// group applied again.
	fdeSize := int(binary.LittleEndian.Uint32(whole[4+9:]))
	again := append(append(append([]byte(nil), whole[:4+fdeSize]...), whole[g.pos:g.end]...), whole[next.pos:next.end]...)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	second := write("binlog.000002", again)
	count := func(scan binlogScan, complete bool) int {
		n := 0
		for _, x := range scan.groups {
			if x.gtid == g.gtid && (x.ended || !complete) {
				n++
			}
		}
		return n
	}
	boundaries := 0
	for cut := g.pos + 1; cut < g.end; cut++ {
		first := write("binlog.000001", whole[:cut])
		scan, err := scanBinlogFiles([]string{first, second}, true)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if n := count(scan, true); n != 1 {
			t.Fatalf("cut at %d: GTID %s counts %d times, want once; groups %v", cut, g.gtid, n, scan.groups)
		}
		if len(scan.cut) != 1 {
			t.Fatalf("cut at %d: cuts %v, want one", cut, scan.cut)
		}
		if count(scan, false) == 2 {
			boundaries++ // the GTID event is whole in the cut file
		}
		// The same cut in the last file is only accepted while a
		// session may still be writing.
		if _, err := scanBinlogFiles([]string{second, first}, true); err == nil {
			t.Fatalf("cut at %d in the last file accepted", cut)
		}
		if _, err := scanBinlogFiles([]string{second, first}, false); err != nil {
			t.Fatalf("cut at %d in the last file, unsettled: %v", cut, err)
		}
	}
	if boundaries == 0 {
		t.Fatal("no cut left the GTID event whole")
	}

	// A group committed twice counts twice: the fault test reports it.
	first := write("binlog.000001", whole)
	scan, err = scanBinlogFiles([]string{first, second}, true)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(scan, true); n != 2 {
		t.Fatalf("GTID %s committed twice counts %d times", g.gtid, n)
	}
	// An unfinished group followed by another one is no kill's doing.
	bad := write("binlog.000001", append(append([]byte(nil), whole[:g.pos+int(binary.LittleEndian.Uint32(whole[g.pos+9:]))]...), whole[next.pos:]...))
	if _, err := scanBinlogFiles([]string{bad, second}, true); err == nil {
		t.Fatal("a group cut off in the middle of a file was accepted")
	}
}

// TestDataCheckSeesDoubleApply: the data comparison of the fault test must
// see a record applied twice. Replaying a counter = counter + 1 UPDATE
// again rewrites the same after image, which no checksum can see; the
// counter workload's keyless table h gets a second row, which it does.
func TestDataCheckSeesDoubleApply(t *testing.T) {
	insts := startInstances(t, 2, 100)
	src, rep := insts[0], insts[1]
	counterWorkload(t, src.DB, 5, 60)
	recs := binlogRecords(t, src)
	a, err := New(Config{DSN: rep.DSN(""), Channels: 2})
	if err != nil {
		t.Fatal(err)
	}
	runApplier(t, a, &memSource{recs}, uint64(len(recs)), 60*time.Second)
	if d := dataDiffs(t, src.DB, rep.DB); len(d) > 0 {
		t.Fatalf("after applying: %v", d)
	}

	// Apply the last record again, outside the applier.
	rec := recs[len(recs)-1]
	f, err := parseFormat(rec.FormatDesc)
	if err != nil {
		t.Fatal(err)
	}
	p, err := translate(&rec, f, "quire")
	if err != nil {
		t.Fatal(err)
	}
	stmts := []string{binlogStatement(f.replay), "START TRANSACTION"}
	for _, s := range p.steps {
		if s.kind == stepRows {
			stmts = append(stmts, binlogStatement(s.events...))
		}
	}
	mustExec(t, rep, append(stmts, "COMMIT")...)

	var c, h bool
	for _, d := range dataDiffs(t, src.DB, rep.DB) {
		c = c || strings.Contains(d, ".c:")
		h = h || strings.Contains(d, ".h:")
	}
	if !h {
		t.Errorf("record %d (%s) applied twice, but the data comparison sees no difference in h", rec.Seqno, rec.GTID)
	}
	if c {
		t.Errorf("record %d applied twice changed a counter table; then h is not what makes the check see it", rec.Seqno)
	}
}
