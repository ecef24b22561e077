package agent_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/internal/agenttest"
	"github.com/quire-ha/quire/internal/mariadbtest"
)

// replicaApplyYAML configures the replicas' appliers in these tests: four
// channels, s5 and s6 grouped into one shard, s7 a critical shard.
const replicaApplyYAML = `apply:
  channels: 4
  block_size: 10
  shard_map: {s5: grp56, s6: grp56}
  critical_shards: [s7]
`

// applyCluster starts three databases, all with the primary's semi-sync
// settings (the replicas' agents must switch the wait off) and
// binlog_ignore_db=quire, and three agents: db1's agent is the primary with
// K and sync set db2, db3; the others are replicas that apply.
func applyCluster(t *testing.T, k int) ([]*mariadbtest.Instance, []*agenttest.Proc) {
	t.Helper()
	settings := append(slices.Clone(mariadbtest.SemiSyncPrimary), "binlog_ignore_db=quire")
	dbs := mariadbtest.Start(t, 3, mariadbtest.Options{Settings: settings})
	primary := agenttest.Start(t, agenttest.Options{Node: "db1", DB: dbs[0], Role: agent.RolePrimary, K: k, SyncSet: []string{"db2", "db3"}})
	primary.WaitStatus("primary serving", time.Minute, func(s agent.Status) bool { return s.Serving })
	procs := []*agenttest.Proc{primary}
	for i, n := range []string{"db2", "db3"} {
		procs = append(procs, agenttest.Start(t, agenttest.Options{Node: n, DB: dbs[i+1], Role: agent.RoleReplica,
			PrimaryAgent: primary.GRPCAddr, Extra: replicaApplyYAML}))
	}
	for _, p := range procs[1:] {
		p.WaitStatus("applier running", time.Minute, func(s agent.Status) bool { return s.Apply != nil && s.Apply.Running })
	}
	return dbs, procs
}

// waitApplied waits until the replica's applier has applied seqno n.
func waitApplied(t *testing.T, p *agenttest.Proc, n uint64, d time.Duration) agent.Status {
	t.Helper()
	return p.WaitStatus(fmt.Sprintf("applied seqno %d", n), d, func(s agent.Status) bool {
		return s.Apply != nil && s.Apply.AppliedSeqno >= n
	})
}

// userTables lists the tables outside the system schemas and quire.
func userTables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query("SELECT CONCAT('`', TABLE_SCHEMA, '`.`', TABLE_NAME, '`') FROM information_schema.TABLES " +
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
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameTables fails the test unless rep holds exactly src's tables with the
// same definitions and CHECKSUM TABLE results.
func sameTables(t *testing.T, name string, src, rep *sql.DB) int {
	t.Helper()
	st, rt := userTables(t, src), userTables(t, rep)
	if !slices.Equal(st, rt) {
		t.Fatalf("%s: tables differ:\nprimary %v\nreplica %v", name, st, rt)
	}
	for _, tbl := range st {
		var n1, n2, d1, d2 string
		var c1, c2 sql.NullInt64
		if err := src.QueryRow("SHOW CREATE TABLE "+tbl).Scan(&n1, &d1); err != nil {
			t.Fatal(err)
		}
		if err := rep.QueryRow("SHOW CREATE TABLE "+tbl).Scan(&n2, &d2); err != nil {
			t.Fatal(err)
		}
		if d1 != d2 {
			t.Fatalf("%s: %s definitions differ:\n%s\n%s", name, tbl, d1, d2)
		}
		if err := src.QueryRow("CHECKSUM TABLE "+tbl).Scan(&n1, &c1); err != nil {
			t.Fatal(err)
		}
		if err := rep.QueryRow("CHECKSUM TABLE "+tbl).Scan(&n2, &c2); err != nil {
			t.Fatal(err)
		}
		if c1 != c2 {
			t.Fatalf("%s: CHECKSUM TABLE %s: primary %v, replica %v", name, tbl, c1, c2)
		}
	}
	return len(st)
}

// restartRows returns the replica's restart-row seqnos by channel.
func restartRows(t *testing.T, db *sql.DB) []uint64 {
	t.Helper()
	rows, err := db.Query("SELECT seqno FROM quire.apply_channel ORDER BY channel_id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var s uint64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// level runs one DDL on the primary: a serialized record that brings every
// restart row to its seqno. It returns the last seqno.
func level(t *testing.T, db *mariadbtest.Instance, procs []*agenttest.Proc, name string) uint64 {
	t.Helper()
	if _, err := db.DB.Exec("CREATE TABLE s0." + name + " (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	total := binlogTransactions(t, db)
	for _, p := range procs[1:] {
		waitApplied(t, p, total, 2*time.Minute)
	}
	return total
}

// checkRows fails unless every restart row of the replica is at seqno n.
func checkRows(t *testing.T, name string, db *sql.DB, channels int, n uint64) {
	t.Helper()
	rows := restartRows(t, db)
	if len(rows) != channels {
		t.Fatalf("%s: %d restart rows, want %d", name, len(rows), channels)
	}
	for ch, s := range rows {
		if s != n {
			t.Fatalf("%s: restart row of channel %d at seqno %d, want %d (rows %v)", name, ch, s, n, rows)
		}
	}
}

// quireInBinlog counts the replica's binlog events that name the quire
// schema (row events of the restart-row table).
func quireInBinlog(t *testing.T, db *sql.DB) int {
	t.Helper()
	var files []string
	rows, err := db.Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var size any
		if err := rows.Scan(&name, &size); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
	}
	rows.Close()
	n := 0
	for _, f := range files {
		rows, err := db.Query("SHOW BINLOG EVENTS IN '" + f + "'")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var log, typ, info string
			var pos, sid, end int64
			if err := rows.Scan(&log, &pos, &typ, &sid, &end, &info); err != nil {
				t.Fatal(err)
			}
			if typ == "Table_map" && strings.Contains(info, "`quire`") {
				n++
			}
		}
		rows.Close()
	}
	return n
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// quireCLI builds the quire command into the test's temporary directory.
func quireCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "quire")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/quire").CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/quire: %v\n%s", err, out)
	}
	return bin
}

// rateSampler polls the replicas' /status during a workload and keeps the
// highest apply rate and lag seen.
type rateSampler struct {
	mu      sync.Mutex
	maxRate map[string]float64
	maxLag  map[string]uint64
	stop    chan struct{}
	done    chan struct{}
}

func sampleRates(procs []*agenttest.Proc) *rateSampler {
	s := &rateSampler{maxRate: map[string]float64{}, maxLag: map[string]uint64{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			for _, p := range procs {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				st, err := p.Status(ctx)
				cancel()
				if err != nil || st.Apply == nil {
					continue
				}
				s.mu.Lock()
				s.maxRate[p.Opts.Node] = max(s.maxRate[p.Opts.Node], st.Apply.Rate)
				s.maxLag[p.Opts.Node] = max(s.maxLag[p.Opts.Node], st.Apply.LagTransactions)
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *rateSampler) finish() (map[string]float64, map[string]uint64) {
	close(s.stop)
	<-s.done
	return s.maxRate, s.maxLag
}

// TestReplicaApply runs the 8-schema workload (DDL, two-schema
// transactions, a shard group and a critical shard) through a K=1 cluster
// whose replicas apply it; meanwhile one record fails on db3 (a row deleted
// behind the applier's back), shows in /status and /replica, is retried
// and succeeds once the row is back. Afterwards every replica table is
// CHECKSUM TABLE-equal to the primary's, the restart rows reach the last
// seqno, the restart-row updates stay out of the replicas' binlogs, and
// `quire channels` prints the channels.
func TestReplicaApply(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	cli := quireCLI(t)
	dbs, procs := applyCluster(t, 1)
	db := dbs[0].DB
	db.SetMaxOpenConns(16)
	setupSchemas(t, db)
	setup := binlogTransactions(t, dbs[0])
	for _, p := range procs[1:] {
		waitApplied(t, p, setup, time.Minute)
	}

	sampler := sampleRates(procs[1:])
	stop := make(chan struct{})
	type result struct {
		n   int64
		err error
	}
	wdone := make(chan result, 1)
	start := time.Now()
	go func() {
		n, err := workload(db, 1<<30, 8, stop)
		wdone <- result{n, err}
	}()

	// Break db3: delete a counter row the workload keeps updating, keeping
	// its value, so the next update of s1.counter fails there.
	var kept int64
	func() {
		tx, err := dbs[2].DB.Begin()
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := tx.QueryRow("SELECT n FROM s1.counter WHERE id = 1 FOR UPDATE").Scan(&kept); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec("DELETE FROM s1.counter WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}()
	st := procs[2].WaitStatus("an apply error on db3", time.Minute, func(s agent.Status) bool {
		return s.Apply != nil && len(s.Apply.Errors) > 0
	})
	e := st.Apply.Errors[0]
	t.Logf("db3 stopped: %+v", e)
	if e.Seqno == 0 || e.GTID == "" || !slices.Contains(e.Schemas, "s1") || !strings.Contains(e.Error, "Error 1032") {
		t.Fatalf("apply error lacks seqno, GTID, schema s1 or the SQL error (1032, no such row): %+v", e)
	}
	if code, body := httpGet(t, "http://"+procs[2].HTTPAddr+"/replica"); code != http.StatusServiceUnavailable || !strings.Contains(body, fmt.Sprint(e.Seqno)) {
		t.Fatalf("/replica on the stopped db3: %d %q, want 503 naming seqno %d", code, body, e.Seqno)
	}
	if st.Apply.AppliedSeqno >= e.Seqno {
		t.Fatalf("applied %d, at or past the failed record %d: it was skipped", st.Apply.AppliedSeqno, e.Seqno)
	}
	// The role and the stream go on: db3 keeps storing the log.
	procs[2].WaitStatus("db3's log grows past the failed record", time.Minute, func(s agent.Status) bool { return s.DurableSeqno > e.Seqno+100 })
	// Put the row back as it was; the agent's retry then applies the record.
	if _, err := dbs[2].DB.Exec("INSERT INTO s1.counter VALUES (1, ?)", kept); err != nil {
		t.Fatal(err)
	}
	procs[2].WaitStatus("db3's stopped record retried", time.Minute, func(s agent.Status) bool {
		return s.Apply != nil && len(s.Apply.Errors) == 0 && s.Apply.AppliedSeqno > e.Seqno
	})

	// Let the workload run a little longer, then stop it.
	for time.Since(start) < 8*time.Second {
		time.Sleep(100 * time.Millisecond) // workload duration, not a condition
	}
	close(stop)
	res := <-wdone
	if res.err != nil {
		t.Fatal(res.err)
	}
	wrote := time.Since(start)
	total := binlogTransactions(t, dbs[0])
	for _, p := range procs[1:] {
		waitApplied(t, p, total, 2*time.Minute)
	}
	caughtUp := time.Since(start)
	maxRate, maxLag := sampler.finish()
	last := level(t, dbs[0], procs, "final")
	t.Logf("workload: %d transactions (%d records) written in %s (%.0f tx/s); both replicas applied them %s after the start (%.0f tx/s overall); peak apply rate %v tx/s; peak lag %v tx",
		res.n, total-setup, wrote.Round(time.Millisecond), float64(total-setup)/wrote.Seconds(), caughtUp.Round(time.Millisecond),
		float64(total-setup)/caughtUp.Seconds(), maxRate, maxLag)

	for i, p := range procs[1:] {
		rep := dbs[i+1].DB
		n := sameTables(t, p.Opts.Node, db, rep)
		checkRows(t, p.Opts.Node, rep, 4, last)
		if q := quireInBinlog(t, rep); q != 0 {
			t.Fatalf("%s: %d binlog events name the quire schema despite binlog_ignore_db=quire", p.Opts.Node, q)
		}
		if code, body := httpGet(t, "http://"+p.HTTPAddr+"/replica"); code != http.StatusOK {
			t.Fatalf("%s /replica: %d %q", p.Opts.Node, code, body)
		}
		var sem, ro int
		if err := rep.QueryRow("SELECT @@global.rpl_semi_sync_master_enabled, @@global.read_only").Scan(&sem, &ro); err != nil {
			t.Fatal(err)
		}
		if sem != 0 || ro != 1 {
			t.Fatalf("%s: rpl_semi_sync_master_enabled=%d read_only=%d, want 0 and 1", p.Opts.Node, sem, ro)
		}
		st := waitApplied(t, p, last, time.Second)
		ap := st.Apply
		if ap.Serialized == 0 || ap.LagTransactions != 0 || len(ap.Channels) != 5 || len(ap.Warnings) != 0 {
			t.Fatalf("%s: status %+v", p.Opts.Node, ap)
		}
		chOf := map[string]int{}
		for _, c := range ap.Channels {
			for _, s := range c.Shards {
				chOf[s] = c.Channel
			}
		}
		if ch, ok := chOf["s7"]; !ok || ch != -1 {
			t.Fatalf("%s: the critical shard s7 ran on channel %d (seen %v), not serialized", p.Opts.Node, ch, ok)
		}
		_, grp := chOf["grp56"]
		_, s5 := chOf["s5"]
		_, s6 := chOf["s6"]
		if !grp || s5 || s6 {
			t.Fatalf("%s: schemas s5 and s6 not applied as the one shard grp56: %v", p.Opts.Node, chOf)
		}
		t.Logf("%s: %d tables equal, rows at %d, %d serialized, channels %v", p.Opts.Node, n, last, ap.Serialized, chOf)
	}

	// quire channels reads a replica's /status.
	out, err := exec.Command(cli, "channels", "--agent", procs[1].HTTPAddr).CombinedOutput()
	if err != nil {
		t.Fatalf("quire channels: %v\n%s", err, out)
	}
	t.Logf("quire channels:\n%s", out)
	for _, want := range []string{"CHANNEL", "SHARDS", "LAG(TX)", "AVG BLOCK", "serial", "grp56", fmt.Sprintf("applied %d", last)} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("quire channels output lacks %q", want)
		}
	}
	out, err = exec.Command(cli, "channels", "--agent", "http://"+procs[2].HTTPAddr, "--json").Output()
	if err != nil {
		t.Fatalf("quire channels --json: %v", err)
	}
	var js agent.ApplyStatus
	if err := json.Unmarshal(out, &js); err != nil || js.AppliedSeqno != last || len(js.Channels) != 5 {
		t.Fatalf("quire channels --json: %v %+v", err, js)
	}
	if out, err := exec.Command(cli, "channels", "--agent", procs[0].HTTPAddr).CombinedOutput(); err == nil || !strings.Contains(string(out), "not a replica") {
		t.Fatalf("quire channels on the primary: %v %s", err, out)
	}
	// The per-channel metrics: caught up, every channel's lag is 0.
	code, metrics := httpGet(t, "http://"+procs[1].HTTPAddr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics answered %d", code)
	}
	for _, want := range []string{
		`quire_apply_channel_lag_transactions{channel="0"} 0`,
		`quire_apply_channel_lag_transactions{channel="serial"} 0`,
		`quire_apply_channel_lag_seconds{channel="1"} 0`,
		fmt.Sprintf("quire_apply_commit_seqno %d", last),
		`quire_apply_block_size_transactions_count{channel="serial"}`,
		`quire_apply_queue_depth{channel="0"}`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("%s /metrics lacks %q", procs[1].Opts.Node, want)
		}
	}
}

// counters runs counter = counter + 1 transactions (one schema, two schemas,
// now and then an insert) from clients until stop is closed. It returns how
// many committed.
func counters(db *sql.DB, clients int, stop <-chan struct{}) (int64, error) {
	var done atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 99))
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, b := r.IntN(schemas), r.IntN(schemas)
				if a > b {
					// One lock order for two-schema transactions: the
					// workload itself must not deadlock on the primary.
					a, b = b, a
				}
				var err error
				switch x := r.IntN(100); {
				case x < 85:
					_, err = db.Exec(fmt.Sprintf("UPDATE s%d.counter SET n = n + 1 WHERE id = 1", a))
				case x < 95 && a != b:
					err = func() error {
						tx, err := db.Begin()
						if err != nil {
							return err
						}
						defer tx.Rollback()
						for _, s := range []int{a, b} {
							if _, err := tx.Exec(fmt.Sprintf("UPDATE s%d.counter SET n = n + 1 WHERE id = 1", s)); err != nil {
								return err
							}
						}
						return tx.Commit()
					}()
				default:
					_, err = db.Exec(fmt.Sprintf("INSERT INTO s%d.t (k, v) VALUES (?, 'c')", a), r.IntN(1000))
				}
				if isDeadlock(err) {
					// Rolled back whole on the primary; the replicas
					// never see it. Not counted, nothing to check.
					continue
				}
				if err != nil {
					errc <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errc)
	return done.Load(), <-errc
}

// isDeadlock reports a MariaDB deadlock or lock wait timeout.
func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// TestReplicaApplyExactlyOnce kills db2's agent (SIGKILL) 30 times and
// db2's mariadbd 6 times during a counter = counter + 1 workload; db2
// resumes from its restart rows each time, and in the end both replicas
// equal the primary.
func TestReplicaApplyExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs, procs := applyCluster(t, 1)
	db := dbs[0].DB
	db.SetMaxOpenConns(16)
	setupSchemas(t, db)
	victim, vdb := procs[1], dbs[1]
	stop := make(chan struct{})
	type result struct {
		n   int64
		err error
	}
	wdone := make(chan result, 1)
	go func() {
		n, err := counters(db, 6, stop)
		wdone <- result{n, err}
	}()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 11))
	agentKills, dbKills := 0, 0
	// 36 rounds: 30 kills of the agent, 6 of its mariadbd.
	for round := range 36 {
		// A random moment: the point of the test is that it is arbitrary.
		time.Sleep(time.Duration(200+r.IntN(600)) * time.Millisecond)
		if round%6 == 2 {
			if err := vdb.Kill(); err != nil {
				t.Fatal(err)
			}
			dbKills++
			if dbKills == 1 {
				// The applier's failure shows, and /replica turns away reads.
				st := victim.WaitStatus("the applier's error after mariadbd died", 30*time.Second, func(s agent.Status) bool {
					return s.Apply != nil && !s.Apply.Running && s.Apply.LastError != ""
				})
				t.Logf("while mariadbd is down: last error %q", st.Apply.LastError)
				if code, _ := httpGet(t, "http://"+victim.HTTPAddr+"/replica"); code != http.StatusServiceUnavailable {
					t.Fatalf("/replica answered %d with the database down", code)
				}
			}
			if err := vdb.Restart(); err != nil {
				t.Fatal(err)
			}
			t.Logf("round %d: killed and restarted db2's mariadbd", round)
			continue
		}
		applied := "?"
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if st, err := victim.Status(ctx); err == nil && st.Apply != nil {
			applied = fmt.Sprintf("%d of %d committed", st.Apply.AppliedSeqno, st.Apply.CommitSeqno)
		}
		cancel()
		victim.Kill()
		agentKills++
		if err := victim.Restart(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed and restarted db2's agent (it had applied %s)", round, applied)
	}
	close(stop)
	var res result
	select {
	case res = <-wdone:
	case <-time.After(2 * time.Minute):
		t.Fatal("a commit did not return within 2 minutes after the last round")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	last := level(t, dbs[0], procs, "final")
	for i, p := range procs[1:] {
		rep := dbs[i+1].DB
		n := sameTables(t, p.Opts.Node, db, rep)
		checkRows(t, p.Opts.Node, rep, 4, last)
		t.Logf("%s: %d tables equal, restart rows at %d", p.Opts.Node, n, last)
	}
	var sum int64
	if err := db.QueryRow("SELECT " + sumCounters()).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d agent kills, %d mariadbd kills, %d transactions committed, counters sum to %d, last seqno %d", agentKills, dbKills, res.n, sum, last)
}

func sumCounters() string {
	var parts []string
	for i := range schemas {
		parts = append(parts, fmt.Sprintf("(SELECT n FROM s%d.counter WHERE id = 1)", i))
	}
	return strings.Join(parts, "+")
}

// TestReplicaAppliesOnlyCommitted: with K=2 and db3's agent down, commits
// wait; db2's log holds the transactions but its commit index stays put,
// and its applier applies nothing beyond it. Once db3 is back the commits
// return and db2 applies them.
func TestReplicaAppliesOnlyCommitted(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs, procs := applyCluster(t, 2)
	mustExec(t, dbs[0], "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)", "INSERT INTO app.t VALUES (0, 0)")
	committed := binlogTransactions(t, dbs[0])
	waitApplied(t, procs[1], committed, time.Minute)

	procs[2].Kill()
	var dones []<-chan error
	for i := 1; i <= 3; i++ {
		dones = append(dones, commit(dbs[0], i))
	}
	// MariaDB writes the next group commit to the binlog only after the
	// current one got its ACK, so the log holds one or two of them.
	procs[1].WaitStatus("db2's log holds waiting transactions", 30*time.Second, func(s agent.Status) bool {
		return s.DurableSeqno > committed
	})
	// Observation window for a negative: the applier must not move past the
	// commit index while the log holds more.
	deadline := time.Now().Add(1500 * time.Millisecond)
	samples, held := 0, uint64(0)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := procs[1].Status(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		ap := st.Apply
		if ap == nil || ap.AppliedSeqno > ap.CommitSeqno || ap.CommitSeqno != committed || st.LastSeqno <= committed {
			t.Fatalf("db2: applied %v, commit index %d, log last %d; want applied ≤ commit index = %d < log last", ap, st.CommitSeqno, st.LastSeqno, committed)
		}
		var n int
		if err := dbs[1].DB.QueryRow("SELECT COUNT(*) FROM app.t WHERE id > 0").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("db2's database holds %d uncommitted rows (commit index %d)", n, committed)
		}
		samples++
		held = max(held, st.LastSeqno)
		time.Sleep(100 * time.Millisecond) // sampling interval of the window
	}
	for _, d := range dones {
		select {
		case err := <-d:
			t.Fatalf("a commit returned (err %v) with db3 down and K=2", err)
		default:
		}
	}
	if err := procs[2].Restart(); err != nil {
		t.Fatal(err)
	}
	for _, d := range dones {
		returned(t, d, 30*time.Second)
	}
	total := binlogTransactions(t, dbs[0])
	waitApplied(t, procs[1], total, time.Minute)
	var n int
	if err := dbs[1].DB.QueryRow("SELECT COUNT(*) FROM app.t WHERE id > 0").Scan(&n); err != nil || n != 3 {
		t.Fatalf("db2 after the commits returned: %d rows (%v), want 3", n, err)
	}
	t.Logf("%d samples: applied ≤ commit index %d while the log held up to %d", samples, committed, held)
}
