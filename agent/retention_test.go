package agent_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/internal/agenttest"
	"github.com/quire-ha/quire/internal/mariadbtest"
)

// retentionConfig makes segments small (a 1 MiB segment holds three of the
// test's 300 KiB transactions), records old enough to purge after a second,
// and a retention pass every second.
const retentionConfig = `log:
  segment_bytes: 1MiB
  retention: 1s
  purge_interval: 1s
`

// metric reads one unlabelled sample from an agent's /metrics.
func metric(t *testing.T, p *agenttest.Proc, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s /metrics: %v", p.Opts.Node, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %s: %v", p.Opts.Node, sc.Text(), err)
			}
			return f
		}
	}
	t.Fatalf("%s /metrics has no %s", p.Opts.Node, name)
	return 0
}

// lowestRow is the lowest restart row of a replica's applier, the seqno
// after which a restarted applier reads its log.
func lowestRow(st agent.Status) (uint64, bool) {
	if st.Apply == nil || len(st.Apply.Channels) == 0 {
		return 0, false
	}
	lo := uint64(0)
	first := true
	for _, c := range st.Apply.Channels {
		if c.Channel < 0 {
			continue // the serial channel has no row of its own
		}
		if first || c.Seqno < lo {
			lo, first = c.Seqno, false
		}
	}
	return lo, !first
}

// TestRetention runs a static cluster (db1 primary, db2 and db3 replicas,
// K=1) with tiny segments and a one-second retention and checks that
//   - a replica never purges below its applier's lowest restart row (an idle
//     channel's row holds its log back until a serialization point moves
//     every row), then purges once the rows have moved;
//   - the primary purges only below what every replica has reported durable:
//     with db3's agent stopped, it keeps the records from db3's position on
//     while db2 purges past it, and db3 catches up after its restart;
//   - records left in the logs stay identical across nodes.
func TestRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs := mariadbtest.Start(t, 3)
	primary := agenttest.Start(t, agenttest.Options{Node: "db1", DB: dbs[0], Role: agent.RolePrimary, K: 1,
		SyncSet: []string{"db2", "db3"}, Extra: retentionConfig})
	primary.WaitStatus("primary serving", 60*time.Second, func(s agent.Status) bool { return s.Serving })
	procs := []*agenttest.Proc{primary}
	for i, n := range []string{"db2", "db3"} {
		procs = append(procs, agenttest.Start(t, agenttest.Options{Node: n, DB: dbs[i+1], Role: agent.RoleReplica,
			PrimaryAgent: primary.GRPCAddr, Extra: retentionConfig}))
	}
	db2, db3 := procs[1], procs[2]
	db := dbs[0].DB
	for _, q := range []string{
		"CREATE DATABASE r",
		"CREATE TABLE r.t (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB NOT NULL)",
		"CREATE DATABASE other",
		"CREATE TABLE other.t (id INT PRIMARY KEY)",
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	blob := strings.Repeat("x", 300<<10)
	write := func(n int) {
		t.Helper()
		for range n {
			if _, err := db.Exec("INSERT INTO r.t (b) VALUES (?)", blob); err != nil {
				t.Fatal(err)
			}
		}
	}
	// serialize commits a DDL: the replicas' appliers run it alone and
	// move every channel's restart row to it.
	ddl := 0
	serialize := func() {
		t.Helper()
		ddl++
		if _, err := db.Exec(fmt.Sprintf("CREATE TABLE other.sync%d (id INT PRIMARY KEY)", ddl)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	status := func(p *agenttest.Proc) agent.Status {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := p.Status(sctx)
		if err != nil {
			t.Fatalf("%s /status: %v", p.Opts.Node, err)
		}
		return st
	}
	// check asserts what no log may ever do: purge what a member needs.
	check := func(running []*agenttest.Proc, stoppedDurable uint64) {
		t.Helper()
		var lowest uint64 = stoppedDurable
		sts := map[string]agent.Status{}
		for _, p := range running {
			st := status(p)
			sts[p.Opts.Node] = st
			if p != primary && (lowest == 0 || st.DurableSeqno < lowest) {
				lowest = st.DurableSeqno
			}
		}
		// The replicas' durable seqnos were read after the primary's
		// first seqno, and never go down.
		if f := sts["db1"].FirstSeqno; f > lowest {
			t.Fatalf("primary's log starts at %d, above a replica's durable seqno %d", f, lowest)
		}
		for _, p := range running[1:] {
			st := sts[p.Opts.Node]
			row, ok := lowestRow(st)
			if ok && st.FirstSeqno > row+1 {
				t.Fatalf("%s's log starts at %d, but its applier restarts at %d (lowest restart row %d)", p.Opts.Node, st.FirstSeqno, row+1, row)
			}
		}
	}
	// waitFor polls cond every 100 ms, checking the invariants each time.
	waitFor := func(what string, d time.Duration, running []*agenttest.Proc, stoppedDurable uint64, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			check(running, stoppedDurable)
			if cond() {
				return
			}
			if time.Now().After(deadline) {
				for _, p := range running {
					t.Logf("%s: %+v\n%s", p.Opts.Node, status(p), p.LogTail(20))
				}
				t.Fatalf("timed out after %s waiting for %s", d, what)
			}
			time.Sleep(100 * time.Millisecond) // poll interval
		}
	}
	durable := func(n uint64, ps ...*agenttest.Proc) {
		t.Helper()
		for _, p := range ps {
			p.WaitStatus(fmt.Sprintf("durable seqno %d", n), time.Minute, func(s agent.Status) bool { return s.DurableSeqno >= n })
		}
	}
	applied := func(n uint64, ps ...*agenttest.Proc) {
		t.Helper()
		for _, p := range ps {
			p.WaitStatus(fmt.Sprintf("applied seqno %d", n), time.Minute, func(s agent.Status) bool {
				return s.Apply != nil && s.Apply.AppliedSeqno >= n
			})
		}
	}
	// passes waits until p has run two more retention passes: at least one
	// whole pass ran after the call.
	passes := func(p *agenttest.Proc, running []*agenttest.Proc, stoppedDurable uint64) {
		t.Helper()
		start := metric(t, p, "quire_retention_passes_total")
		waitFor(p.Opts.Node+"'s next retention passes", 30*time.Second, running, stoppedDurable, func() bool {
			return metric(t, p, "quire_retention_passes_total") >= start+2
		})
	}

	// Phase 1: one schema only. The replicas' other channels stay at the
	// last DDL, so their appliers would restart there: they keep their logs.
	write(24)
	total := binlogTransactions(t, dbs[0])
	durable(total, procs...)
	applied(total, db2, db3)
	waitFor("the primary to purge", 60*time.Second, procs, 0, func() bool { return status(primary).FirstSeqno > 1 })
	for _, p := range []*agenttest.Proc{db2, db3} {
		passes(p, procs, 0)
		st := status(p)
		row, _ := lowestRow(st)
		if row >= total/2 || st.FirstSeqno > row+1 {
			t.Fatalf("%s: lowest restart row %d, log from %d: an idle channel should hold it back", p.Opts.Node, row, st.FirstSeqno)
		}
	}
	// A serialization point moves every row: now the replicas purge too.
	serialize()
	total = binlogTransactions(t, dbs[0])
	applied(total, db2, db3)
	waitFor("the replicas to purge", 60*time.Second, procs, 0, func() bool {
		return status(db2).FirstSeqno > 1 && status(db3).FirstSeqno > 1
	})

	// Phase 2: db3's agent stops. The primary must keep db3's records.
	stopped := status(db3).DurableSeqno
	db3.Kill()
	running := procs[:2]
	write(24)
	serialize()
	total = binlogTransactions(t, dbs[0])
	durable(total, primary, db2)
	applied(total, db2)
	// db2 purges past db3's position: the records there are old enough and
	// db2 needs them no more (a replica without managers has no cluster
	// floor). The primary, which could purge as far, must not.
	waitFor("db2 to purge past db3's position", 60*time.Second, running, stopped, func() bool {
		return status(db2).FirstSeqno > stopped+1
	})
	passes(primary, running, stopped)
	if f := status(primary).FirstSeqno; f > stopped {
		t.Fatalf("primary's log starts at %d, after stopped db3's durable seqno %d", f, stopped)
	}
	if floor := metric(t, primary, "quire_retention_floor_seqno"); floor == 0 || uint64(floor) > stopped {
		t.Fatalf("primary's retention floor %v, want db3's position (≤ %d)", floor, stopped)
	}
	t.Logf("db3 stopped at %d; primary's log from %d, db2's from %d, last %d",
		stopped, status(primary).FirstSeqno, status(db2).FirstSeqno, total)

	// db3 comes back, streams what it missed from the primary and applies it.
	if err := db3.Restart(); err != nil {
		t.Fatal(err)
	}
	durable(total, db3)
	applied(total, db3)
	var n2, n3 int
	if err := dbs[0].DB.QueryRow("SELECT COUNT(*) FROM r.t").Scan(&n2); err != nil {
		t.Fatal(err)
	}
	if err := dbs[2].DB.QueryRow("SELECT COUNT(*) FROM r.t").Scan(&n3); err != nil {
		t.Fatal(err)
	}
	if n2 != 48 || n3 != 48 {
		t.Fatalf("rows in r.t: primary %d, db3 %d; want 48", n2, n3)
	}
	// Now the primary purges past db3's old position too.
	waitFor("the primary to purge past db3's old position", 60*time.Second, procs, 0, func() bool {
		return status(primary).FirstSeqno > stopped
	})
	if m := metric(t, primary, "quire_txlog_purged_segments_total"); m == 0 {
		t.Fatalf("quire_txlog_purged_segments_total = %v on the primary", m)
	}
	if b := metric(t, primary, "quire_txlog_bytes"); b <= 0 || b > 4<<20 {
		t.Fatalf("quire_txlog_bytes = %v on the primary, want the few segments left (> 0, ≤ 4 MiB)", b)
	}

	// What the logs still hold is the same everywhere.
	for _, p := range procs {
		p.Kill()
	}
	logs := map[string][]summary{}
	for _, p := range procs {
		logs[p.Opts.Node] = readLog(t, p.LogDir())
	}
	bySeqno := map[uint64]summary{}
	for _, s := range logs["db1"] {
		bySeqno[s.seqno] = s
	}
	for _, p := range procs[1:] {
		for _, s := range logs[p.Opts.Node] {
			if ps, ok := bySeqno[s.seqno]; ok && ps != s {
				t.Fatalf("%s record %d differs from the primary's", p.Opts.Node, s.seqno)
			}
		}
		if got := logs[p.Opts.Node]; len(got) == 0 || got[len(got)-1].seqno != total {
			t.Fatalf("%s's log does not end at %d", p.Opts.Node, total)
		}
	}
}
