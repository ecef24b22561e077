package agent_test

import (
	"crypto/sha256"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/internal/agenttest"
	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/txlog"
)

func TestMain(m *testing.M) {
	code := m.Run()
	agenttest.Cleanup()
	os.Exit(code)
}

const schemas = 8

// cluster starts three databases and three agents: db1's agent is the
// primary of epoch 1, the others stream from it.
func cluster(t *testing.T) ([]*mariadbtest.Instance, []*agenttest.Proc) {
	t.Helper()
	dbs := mariadbtest.Start(t, 3)
	primary := agenttest.Start(t, agenttest.Options{Node: "db1", DB: dbs[0], Role: agent.RolePrimary, K: 1, SyncSet: []string{"db2", "db3"}})
	primary.WaitStatus("primary serving", 60*time.Second, func(s agent.Status) bool { return s.Serving })
	procs := []*agenttest.Proc{primary}
	for i, n := range []string{"db2", "db3"} {
		procs = append(procs, agenttest.Start(t, agenttest.Options{Node: n, DB: dbs[i+1], Role: agent.RoleReplica, PrimaryAgent: primary.GRPCAddr}))
	}
	return dbs, procs
}

func setupSchemas(t *testing.T, db *sql.DB) {
	t.Helper()
	for i := range schemas {
		for _, q := range []string{
			fmt.Sprintf("CREATE DATABASE s%d", i),
			fmt.Sprintf("CREATE TABLE s%d.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL, v VARCHAR(64), b LONGBLOB)", i),
			fmt.Sprintf("CREATE TABLE s%d.counter (id INT PRIMARY KEY, n BIGINT NOT NULL)", i),
			fmt.Sprintf("INSERT INTO s%d.counter VALUES (1, 0)", i),
		} {
			if _, err := db.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
}

// workload runs n transactions over the schemas from several clients: single
// inserts, updates, deletes, two-schema transactions and, from time to
// time, DDL. It stops early when stop is closed and returns how many it ran.
func workload(db *sql.DB, n int, clients int, stop <-chan struct{}) (int64, error) {
	var done atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 42))
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := done.Add(1)
				if i > int64(n) {
					done.Add(-1)
					return
				}
				s := r.IntN(schemas)
				var err error
				switch x := r.IntN(100); {
				case x < 60:
					_, err = db.Exec(fmt.Sprintf("INSERT INTO s%d.t (k, v) VALUES (?, ?)", s), r.IntN(1000), fmt.Sprintf("row %d", i))
				case x < 80:
					_, err = db.Exec(fmt.Sprintf("UPDATE s%d.counter SET n = n + 1 WHERE id = 1", s))
				case x < 90:
					_, err = db.Exec(fmt.Sprintf("DELETE FROM s%d.t WHERE k = ? LIMIT 1", s), r.IntN(1000))
				case x < 98:
					err = twoSchemas(db, s, (s+1)%schemas, i)
				default:
					_, err = db.Exec(fmt.Sprintf("CREATE TABLE IF NOT EXISTS s%d.ddl_%d (id INT PRIMARY KEY)", s, i))
				}
				if err != nil {
					errc <- fmt.Errorf("transaction %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return done.Load(), <-errc
}

func twoSchemas(db *sql.DB, a, b int, i int64) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(fmt.Sprintf("INSERT INTO s%d.t (k, v) VALUES (?, 'two-schema')", a), i%1000); err != nil {
		return err
	}
	if _, err := tx.Exec(fmt.Sprintf("UPDATE s%d.counter SET n = n + 1 WHERE id = 1", b)); err != nil {
		return err
	}
	return tx.Commit()
}

// binlogTransactions is how many transactions the primary's binlog holds
// in domain 0 (the harness resets the binlog, so GTIDs start at 1).
func binlogTransactions(t *testing.T, db *mariadbtest.Instance) uint64 {
	t.Helper()
	var pos string
	if err := db.DB.QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	var dom, srv, seq uint64
	if _, err := fmt.Sscanf(pos, "%d-%d-%d", &dom, &srv, &seq); err != nil {
		t.Fatalf("gtid_binlog_pos %q: %v", pos, err)
	}
	return seq
}

type summary struct {
	seqno, epoch uint64
	gtid         string
	schemas      string
	flags        txlog.Flags
	sum          [32]byte
}

// readLog opens a (stopped) agent's log and summarizes every record.
func readLog(t *testing.T, dir string) []summary {
	t.Helper()
	l, err := txlog.Open(dir, txlog.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var out []summary
	r, err := l.NewReader(l.FirstSeqno())
	if err != nil {
		t.Fatal(err)
	}
	for {
		rec, ok, err := r.TryNext()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		h := sha256.New()
		h.Write(rec.FormatDesc)
		h.Write(rec.Events)
		var s summary
		copy(s.sum[:], h.Sum(nil))
		s.seqno, s.epoch, s.gtid, s.schemas, s.flags = rec.Seqno, rec.Epoch, rec.GTID, strings.Join(rec.Schemas, ","), rec.Flags
		out = append(out, s)
	}
	return out
}

// checkLogs stops the agents and checks that every log holds exactly the
// primary's transactions 1..n, numbered by binlog order, and that the
// replicas' logs equal the primary's record for record.
func checkLogs(t *testing.T, dbs []*mariadbtest.Instance, procs []*agenttest.Proc, n uint64) []summary {
	t.Helper()
	for _, p := range procs {
		p.Kill()
	}
	primary := readLog(t, procs[0].LogDir())
	if uint64(len(primary)) != n {
		t.Fatalf("primary log holds %d records, binlog %d transactions", len(primary), n)
	}
	for i, s := range primary {
		want := fmt.Sprintf("0-%d-%d", dbs[0].ServerID, i+1)
		if s.seqno != uint64(i+1) || s.gtid != want || s.epoch != 1 {
			t.Fatalf("primary record %d: seqno %d gtid %s epoch %d, want seqno %d gtid %s epoch 1", i, s.seqno, s.gtid, s.epoch, i+1, want)
		}
	}
	for _, p := range procs[1:] {
		got := readLog(t, p.LogDir())
		if len(got) != len(primary) {
			t.Fatalf("%s log holds %d records, primary %d", p.Opts.Node, len(got), len(primary))
		}
		for i := range got {
			if got[i] != primary[i] {
				t.Fatalf("%s record %d differs: %+v vs primary %+v", p.Opts.Node, i+1, got[i], primary[i])
			}
		}
	}
	return primary
}

func waitDurable(t *testing.T, procs []*agenttest.Proc, n uint64, d time.Duration) {
	t.Helper()
	for _, p := range procs {
		p.WaitStatus(fmt.Sprintf("durable seqno %d", n), d, func(s agent.Status) bool { return s.DurableSeqno >= n })
	}
}

// TestDataPathWorkload ships a workload of 50,000 transactions over eight
// schemas — DDL, two-schema transactions and a 20 MiB BLOB included — and
// checks that both replica logs equal the primary's record for record.
func TestDataPathWorkload(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	n := 50000
	dbs, procs := cluster(t)
	db := dbs[0].DB
	db.SetMaxOpenConns(16)
	setupSchemas(t, db)
	start := time.Now()
	ran, err := workload(db, n/2, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20<<20)
	for i := range big {
		big[i] = byte(i * 31)
	}
	if _, err := db.Exec("INSERT INTO s3.t (k, v, b) VALUES (1, 'big', ?)", big); err != nil {
		t.Fatal(err)
	}
	more, err := workload(db, n-n/2, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	ran += more
	total := binlogTransactions(t, dbs[0])
	t.Logf("workload: %d transactions (%d in the binlog with set-up) in %s", ran, total, time.Since(start).Round(time.Millisecond))
	waitDurable(t, procs, total, 3*time.Minute)
	t.Logf("all logs durable at %d after %s", total, time.Since(start).Round(time.Millisecond))
	recs := checkLogs(t, dbs, procs, total)
	var ddl, multi, bigSeen int
	for _, r := range recs {
		if r.flags&txlog.FlagDDL != 0 {
			ddl++
		}
		if r.flags&txlog.FlagMultiSchema != 0 {
			multi++
		}
		if r.schemas == "s3" && r.flags == 0 {
			bigSeen++
		}
	}
	if ddl < schemas*2 || multi == 0 {
		t.Fatalf("flags look wrong: %d DDL records, %d multi-schema records", ddl, multi)
	}
}

// TestDataPathCrashes kills the primary's agent and a replica's agent with
// SIGKILL at random moments while a workload runs, restarts them, and checks
// that afterwards no seqno is missing or doubled and every GTID has the
// seqno binlog order gives it.
func TestDataPathCrashes(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	rounds := 10
	dbs, procs := cluster(t)
	db := dbs[0].DB
	db.SetMaxOpenConns(16)
	setupSchemas(t, db)
	stop := make(chan struct{})
	type result struct {
		n   int64
		err error
	}
	wdone := make(chan result, 1)
	go func() {
		n, err := workload(db, 1<<30, 4, stop)
		wdone <- result{n, err}
	}()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))
	for round := range rounds {
		// A random moment: the point of the test is that it is arbitrary.
		time.Sleep(time.Duration(100+r.IntN(900)) * time.Millisecond)
		victim := procs[0]
		if round%2 == 1 {
			victim = procs[1+r.IntN(2)]
		}
		victim.Kill()
		t.Logf("round %d: killed %s's agent", round, victim.Opts.Node)
		if err := victim.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	var res result
	select {
	case res = <-wdone:
	case <-time.After(2 * time.Minute):
		for _, p := range procs {
			t.Logf("agent %s log:\n%s", p.Opts.Node, p.LogTail(80))
		}
		t.Fatal("a commit did not return within 2 minutes after the last round")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	procs[0].WaitStatus("primary serving after the last restart", time.Minute, func(s agent.Status) bool { return s.Serving })
	total := binlogTransactions(t, dbs[0])
	waitDurable(t, procs, total, 3*time.Minute)
	checkLogs(t, dbs, procs, total)
	t.Logf("%d rounds, %d transactions (%d in the binlog), all logs equal", rounds, res.n, total)
}
