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
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

// retentionConfig makes segments small (a 1 MiB segment holds three of the
// tests' 300 KiB transactions), records old enough to purge after a second,
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
	if st.Apply == nil {
		return 0, false
	}
	lo, ok := uint64(0), false
	for _, c := range st.Apply.Channels {
		if c.Channel < 0 {
			continue // the serial channel has no row of its own
		}
		if !ok || c.Seqno < lo {
			lo, ok = c.Seqno, true
		}
	}
	return lo, ok
}

// retentionRig is a three-node cluster whose agents run with
// retentionConfig: procs[0] is the primary (db1), procs[1] and procs[2]
// the replicas.
type retentionRig struct {
	t     *testing.T
	dbs   []*mariadbtest.Instance
	procs []*agenttest.Proc
	// managed: the managers' floor binds every node, not only the primary.
	managed bool
	// stopped is the durable seqno of a stopped agent, 0 if none is.
	stopped uint64
	ddl     int
}

func (r *retentionRig) status(p *agenttest.Proc) agent.Status {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := p.Status(ctx)
	if err != nil {
		r.t.Fatalf("%s /status: %v", p.Opts.Node, err)
	}
	return st
}

// setup creates the schemas: r.t for the data, other for the DDL that
// makes serialization points.
func (r *retentionRig) setup() {
	r.t.Helper()
	for _, q := range []string{
		"CREATE DATABASE r",
		"CREATE TABLE r.t (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB NOT NULL)",
		"CREATE DATABASE other",
	} {
		if _, err := r.dbs[0].DB.Exec(q); err != nil {
			r.t.Fatalf("%s: %v", q, err)
		}
	}
}

// write commits n transactions of 300 KiB each into one schema.
func (r *retentionRig) write(n int) {
	r.t.Helper()
	blob := strings.Repeat("x", 300<<10)
	for range n {
		if _, err := r.dbs[0].DB.Exec("INSERT INTO r.t (b) VALUES (?)", blob); err != nil {
			r.t.Fatal(err)
		}
	}
}

// serialize commits a DDL: the replicas' appliers run it alone and move
// every channel's restart row to it.
func (r *retentionRig) serialize() {
	r.t.Helper()
	r.ddl++
	if _, err := r.dbs[0].DB.Exec(fmt.Sprintf("CREATE TABLE other.sync%d (id INT PRIMARY KEY)", r.ddl)); err != nil {
		r.t.Fatal(err)
	}
}

// running is the agents that run.
func (r *retentionRig) running() []*agenttest.Proc {
	var out []*agenttest.Proc
	for _, p := range r.procs {
		if p.Alive() {
			out = append(out, p)
		}
	}
	return out
}

// check asserts what no log may ever do: purge what a member needs. The
// primary (and, with managers, every node) keeps the lowest durable seqno
// of any member; a replica keeps what its applier restarts from.
func (r *retentionRig) check() {
	r.t.Helper()
	sts := map[string]agent.Status{}
	var firsts []agent.Status
	lowest := r.stopped
	// The first seqnos are read before the durable seqnos they are
	// compared with, which never go down.
	for _, p := range r.running() {
		st := r.status(p)
		sts[p.Opts.Node] = st
		if p == r.procs[0] || r.managed {
			firsts = append(firsts, st)
		}
		if p != r.procs[0] && (lowest == 0 || st.DurableSeqno < lowest) {
			lowest = st.DurableSeqno
		}
	}
	for _, st := range firsts {
		if st.FirstSeqno > lowest {
			r.t.Fatalf("%s's log starts at %d, above a member's durable seqno %d", st.Node, st.FirstSeqno, lowest)
		}
	}
	for _, p := range r.procs[1:] {
		st, ok := sts[p.Opts.Node]
		if !ok {
			continue // stopped
		}
		if row, ok := lowestRow(st); ok && st.FirstSeqno > row+1 {
			r.t.Fatalf("%s's log starts at %d, but its applier restarts at %d (lowest restart row %d)", p.Opts.Node, st.FirstSeqno, row+1, row)
		}
	}
}

// waitFor polls cond every 100 ms until d passes, checking the invariants
// each time.
func (r *retentionRig) waitFor(what string, d time.Duration, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r.check()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range r.running() {
				r.t.Logf("%s: %+v\n%s", p.Opts.Node, r.status(p), p.LogTail(20))
			}
			r.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
}

// caughtUp waits until ps hold and have applied everything the primary's
// binlog holds, and returns that seqno.
func (r *retentionRig) caughtUp(ps ...*agenttest.Proc) uint64 {
	r.t.Helper()
	total := binlogTransactions(r.t, r.dbs[0])
	for _, p := range ps {
		p.WaitStatus(fmt.Sprintf("durable seqno %d", total), time.Minute, func(s agent.Status) bool {
			return s.DurableSeqno >= total && (p == r.procs[0] || s.Apply != nil && s.Apply.AppliedSeqno >= total)
		})
	}
	return total
}

// passes waits until each of ps has run two more retention passes: at
// least one whole pass ran after the call.
func (r *retentionRig) passes(ps ...*agenttest.Proc) {
	r.t.Helper()
	for _, p := range ps {
		start := metric(r.t, p, "quire_retention_passes_total")
		r.waitFor(p.Opts.Node+"'s next retention passes", 30*time.Second, func() bool {
			return metric(r.t, p, "quire_retention_passes_total") >= start+2
		})
	}
}

// aged waits until everything committed so far is older than the
// retention (1s, whole seconds of commit time) and each of ps has run a
// retention pass after that.
func (r *retentionRig) aged(ps ...*agenttest.Proc) {
	r.t.Helper()
	old := time.Now().Add(2 * time.Second)
	r.waitFor("the records to age", 10*time.Second, func() bool { return time.Now().After(old) })
	r.passes(ps...)
}

// logsAgree stops the agents and checks that the records the logs still
// hold are the same on every node and that every log ends at total.
func (r *retentionRig) logsAgree(total uint64) {
	r.t.Helper()
	for _, p := range r.procs {
		p.Kill()
	}
	primary := map[uint64]summary{}
	for _, s := range readLog(r.t, r.procs[0].LogDir()) {
		primary[s.seqno] = s
	}
	for _, p := range r.procs {
		got := readLog(r.t, p.LogDir())
		for _, s := range got {
			if ps, ok := primary[s.seqno]; ok && ps != s {
				r.t.Fatalf("%s record %d differs from the primary's", p.Opts.Node, s.seqno)
			}
		}
		if len(got) == 0 || got[len(got)-1].seqno != total {
			r.t.Fatalf("%s's log does not end at %d", p.Opts.Node, total)
		}
	}
}

// TestRetention runs a static cluster (db1 primary, db2 and db3 replicas,
// K=1) with tiny segments and a one-second retention and checks that
//   - a replica never purges below its applier's lowest restart row (an idle
//     channel's row holds its log back until a serialization point moves
//     every row), then purges once the rows have moved;
//   - the primary purges only below what every replica has reported durable:
//     with db3's agent stopped, it keeps the records from db3's position on
//     while db2 purges past it, and db3 catches up after its restart;
//   - the records left in the logs are the same on every node.
func TestRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	r := &retentionRig{t: t, dbs: mariadbtest.Start(t, 3)}
	primary := agenttest.Start(t, agenttest.Options{Node: "db1", DB: r.dbs[0], Role: agent.RolePrimary, K: 1,
		SyncSet: []string{"db2", "db3"}, Extra: retentionConfig})
	primary.WaitStatus("primary serving", 60*time.Second, func(s agent.Status) bool { return s.Serving })
	r.procs = []*agenttest.Proc{primary}
	for i, n := range []string{"db2", "db3"} {
		r.procs = append(r.procs, agenttest.Start(t, agenttest.Options{Node: n, DB: r.dbs[i+1], Role: agent.RoleReplica,
			PrimaryAgent: primary.GRPCAddr, Extra: retentionConfig}))
	}
	db2, db3 := r.procs[1], r.procs[2]
	r.setup()

	// Phase 1: one schema only. The replicas' other channels stay at the
	// last DDL, so their appliers would restart there: they keep their logs.
	r.write(24)
	total := r.caughtUp(r.procs...)
	r.waitFor("the primary to purge", time.Minute, func() bool { return r.status(primary).FirstSeqno > 1 })
	r.passes(db2, db3)
	for _, p := range []*agenttest.Proc{db2, db3} {
		st := r.status(p)
		if row, _ := lowestRow(st); row >= total/2 || st.FirstSeqno > row+1 {
			t.Fatalf("%s: lowest restart row %d, log from %d: an idle channel should hold it back", p.Opts.Node, row, st.FirstSeqno)
		}
	}
	// A serialization point moves every row: now the replicas purge too.
	r.serialize()
	r.caughtUp(r.procs...)
	r.waitFor("the replicas to purge", time.Minute, func() bool {
		return r.status(db2).FirstSeqno > 1 && r.status(db3).FirstSeqno > 1
	})

	// Phase 2: db3's agent stops. The primary must keep db3's records.
	r.stopped = r.status(db3).DurableSeqno
	db3.Kill()
	r.write(24)
	r.serialize()
	total = r.caughtUp(primary, db2)
	// db2 purges past db3's position: the records there are old enough and
	// db2 needs them no more (a replica without managers has no cluster
	// floor). The primary, which could purge as far, must not.
	r.waitFor("db2 to purge past db3's position", time.Minute, func() bool {
		return r.status(db2).FirstSeqno > r.stopped+1
	})
	r.passes(primary)
	if floor := metric(t, primary, "quire_retention_floor_seqno"); floor == 0 || uint64(floor) > r.stopped {
		t.Fatalf("primary's retention floor %v, want db3's position (≤ %d)", floor, r.stopped)
	}
	t.Logf("db3 stopped at %d; primary's log from %d, db2's from %d, last %d",
		r.stopped, r.status(primary).FirstSeqno, r.status(db2).FirstSeqno, total)

	// db3 comes back, streams what it missed from the primary, applies it.
	if err := db3.Restart(); err != nil {
		t.Fatal(err)
	}
	stopped := r.stopped
	r.stopped = 0
	r.caughtUp(db3)
	var n1, n3 int
	if err := r.dbs[0].DB.QueryRow("SELECT COUNT(*) FROM r.t").Scan(&n1); err != nil {
		t.Fatal(err)
	}
	if err := r.dbs[2].DB.QueryRow("SELECT COUNT(*) FROM r.t").Scan(&n3); err != nil {
		t.Fatal(err)
	}
	if n1 != 48 || n3 != 48 {
		t.Fatalf("rows in r.t: primary %d, db3 %d; want 48", n1, n3)
	}
	// Now the primary purges past db3's old position too.
	r.waitFor("the primary to purge past db3's old position", time.Minute, func() bool {
		return r.status(primary).FirstSeqno > stopped
	})
	if m := metric(t, primary, "quire_txlog_purged_segments_total"); m == 0 {
		t.Fatalf("quire_txlog_purged_segments_total = %v on the primary", m)
	}
	if b := metric(t, primary, "quire_txlog_bytes"); b <= 0 || b > 4<<20 {
		t.Fatalf("quire_txlog_bytes = %v on the primary, want the few segments left (> 0, ≤ 4 MiB)", b)
	}
	r.logsAgree(total)
}

// TestRetentionManaged runs the same cluster under three managers: the
// managers' retain-from floor binds every node, so while db3's agent is
// stopped neither the primary nor db2 (which a failover could promote)
// purges db3's records; once db3 is back, all purge past them.
func TestRetentionManaged(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	mc := managertest.Start(t, 3, managertest.Options{Insecure: true})
	r := &retentionRig{t: t, managed: true, dbs: mariadbtest.Start(t, 3, mariadbtest.Options{Settings: mariadbtest.SemiSyncPrimary})}
	extra := retentionConfig + "managers: [" + strings.Join(mc.Addrs(), ", ") + "]\n"
	for i, n := range []string{"db1", "db2", "db3"} {
		r.procs = append(r.procs, agenttest.Start(t, agenttest.Options{Node: n, DB: r.dbs[i], Extra: extra}))
	}
	primary, db2, db3 := r.procs[0], r.procs[1], r.procs[2]
	cli := mc.Client("operator")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for i, p := range r.procs {
		if _, err := cli.AddMember(ctx, manager.Member{ID: p.Opts.Node, MySQLAddr: r.dbs[i].Addr(), AgentAddr: p.GRPCAddr, MayBePrimary: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.SetK(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.InitCluster(ctx, "db1", []string{"db2", "db3"}); err != nil {
		t.Fatal(err)
	}
	primary.WaitStatus("db1 primary", time.Minute, func(s agent.Status) bool { return s.Role.Kind == agent.RolePrimary && s.Serving })
	for _, p := range r.procs[1:] {
		p.WaitStatus(p.Opts.Node+" replica", time.Minute, func(s agent.Status) bool { return s.Role.Kind == agent.RoleReplica })
	}
	r.setup()
	r.write(24)
	r.serialize()
	r.caughtUp(r.procs...)
	r.waitFor("every node to purge", time.Minute, func() bool {
		for _, p := range r.procs {
			if r.status(p).FirstSeqno == 1 {
				return false
			}
		}
		return true
	})

	// db3's agent stops: its last heartbeat holds the floor on every node.
	r.stopped = r.status(db3).DurableSeqno
	db3.Kill()
	r.write(24)
	r.serialize()
	total := r.caughtUp(primary, db2)
	r.aged(primary, db2)
	for _, p := range []*agenttest.Proc{primary, db2} {
		if floor := metric(t, p, "quire_retention_floor_seqno"); floor == 0 || uint64(floor) > r.stopped {
			t.Fatalf("%s's retention floor %v, want db3's last reported position (≤ %d)", p.Opts.Node, floor, r.stopped)
		}
		if local := metric(t, p, "quire_retention_local_seqno"); uint64(local) <= r.stopped {
			t.Fatalf("%s's own need %v is not past db3's position %d: the test shows nothing", p.Opts.Node, local, r.stopped)
		}
	}
	r.check()
	t.Logf("db3 stopped at %d; primary's log from %d, db2's from %d, last %d",
		r.stopped, r.status(primary).FirstSeqno, r.status(db2).FirstSeqno, total)

	if err := db3.Restart(); err != nil {
		t.Fatal(err)
	}
	stopped := r.stopped
	r.stopped = 0
	r.caughtUp(db3)
	r.waitFor("every node to purge past db3's old position", time.Minute, func() bool {
		for _, p := range r.procs {
			if r.status(p).FirstSeqno <= stopped {
				return false
			}
		}
		return true
	})
	r.logsAgree(total)
}
