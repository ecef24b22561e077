package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/internal/agenttest"
	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/txlog"
)

// gateCluster starts three databases (the primary with the semi-sync
// settings in my.cnf) and three agents; db1's agent is the primary with the
// given K, sync set and policy.
func gateCluster(t *testing.T, k int, policy string) ([]*mariadbtest.Instance, []*agenttest.Proc) {
	t.Helper()
	dbs := mariadbtest.Start(t, 3, mariadbtest.Options{Settings: mariadbtest.SemiSyncPrimary})
	for _, q := range []string{"CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)"} {
		// No agent yet: with wait_no_slave=ON these would wait, so create
		// the schema with the semi-sync wait off for this session's server.
		if _, err := dbs[0].DB.Exec("SET GLOBAL rpl_semi_sync_master_enabled = OFF"); err != nil {
			t.Fatal(err)
		}
		if _, err := dbs[0].DB.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	primary := agenttest.Start(t, agenttest.Options{Node: "db1", DB: dbs[0], Role: agent.RolePrimary, K: k, SyncSet: []string{"db2", "db3"}, Policy: policy})
	primary.WaitStatus("primary serving", time.Minute, func(s agent.Status) bool { return s.Serving })
	procs := []*agenttest.Proc{primary}
	for i, n := range []string{"db2", "db3"} {
		procs = append(procs, agenttest.Start(t, agenttest.Options{Node: n, DB: dbs[i+1], Role: agent.RoleReplica, PrimaryAgent: primary.GRPCAddr}))
	}
	return dbs, procs
}

// commit runs one INSERT in the background and reports when it returned.
func commit(db *mariadbtest.Instance, id int) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := db.DB.Exec("INSERT INTO app.t VALUES (?, 0)", id)
		done <- err
	}()
	return done
}

// pending fails the test if the commit returned within d.
func pending(t *testing.T, done <-chan error, d time.Duration, why string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("commit returned (err %v) although %s", err, why)
	case <-time.After(d): // observation window for a negative
	}
}

func returned(t *testing.T, done <-chan error, d time.Duration) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(d):
		t.Fatalf("commit did not return within %s", d)
	}
}

func durable(t *testing.T, p *agenttest.Proc) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := p.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.DurableSeqno
}

// TestCommitWaitsForKReplicas: K=2 — a commit returns only after both sync
// replicas hold it; with one replica stopped it waits (strict), and the
// restarted replica catches up and counts again.
func TestCommitWaitsForKReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs, procs := gateCluster(t, 2, "strict")
	returned(t, commit(dbs[0], 1), 30*time.Second)
	seq := durable(t, procs[0])
	for _, p := range procs[1:] {
		if d := durable(t, p); d < seq {
			t.Fatalf("commit returned but %s holds only %d < %d", p.Opts.Node, d, seq)
		}
	}

	procs[2].Kill()
	done := commit(dbs[0], 2)
	procs[0].WaitStatus("primary log holds the new transaction", 30*time.Second, func(s agent.Status) bool { return s.DurableSeqno > seq })
	procs[1].WaitStatus("db2 holds it", 30*time.Second, func(s agent.Status) bool { return s.DurableSeqno > seq })
	pending(t, done, time.Second, "only one of K=2 sync replicas holds it")
	if err := procs[2].Restart(); err != nil {
		t.Fatal(err)
	}
	returned(t, done, 30*time.Second)
	if d := durable(t, procs[2]); d <= seq {
		t.Fatalf("commit returned before the restarted db3 held it (durable %d)", d)
	}
	st := procs[0].WaitStatus("db3 counted again", 30*time.Second, func(s agent.Status) bool {
		for _, r := range s.Gate.Replicas {
			if r.ID == "db3" && !r.Counted {
				return false
			}
		}
		return s.Gate != nil && len(s.Gate.Replicas) == 2
	})
	if st.Gate.K != 2 || st.Gate.Degraded {
		t.Fatalf("gate %+v", st.Gate)
	}
	// The ACK wait histogram saw the commits.
	resp, err := http.Get("http://" + procs[0].HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^quire_semisync_ack_wait_seconds_count (\d+)`).FindSubmatch(body)
	if m == nil || string(m[1]) == "0" {
		t.Fatalf("quire_semisync_ack_wait_seconds_count missing or 0: %q", m)
	}
}

// TestDegradePolicy: K=2 with one replica down continues only after the
// degraded marker is recorded, says so in /status, and clears the marker once
// the replica is back.
func TestDegradePolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs, procs := gateCluster(t, 2, "degrade")
	returned(t, commit(dbs[0], 1), 30*time.Second)
	marker := filepath.Join(procs[0].Dir, "data", "degraded.json")
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("degraded marker recorded while both replicas were healthy")
	}
	procs[2].Kill()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("db1 log:\n%s", procs[0].Logs())
		}
	})
	returned(t, commit(dbs[0], 2), 30*time.Second)
	b, err := os.ReadFile(marker)
	if err != nil {
		t.Fatalf("commit returned without K replicas but no degraded marker was recorded: %v", err)
	}
	t.Logf("marker: %s", b)
	st := procs[0].WaitStatus("degraded in status", 10*time.Second, func(s agent.Status) bool { return s.Gate != nil && s.Gate.Degraded })
	if st.Gate.DegradedSince == 0 {
		t.Fatalf("gate %+v", st.Gate)
	}
	if err := procs[2].Restart(); err != nil {
		t.Fatal(err)
	}
	procs[0].WaitStatus("degraded cleared", 30*time.Second, func(s agent.Status) bool { return s.Gate != nil && !s.Gate.Degraded })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(marker); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("degraded marker not cleared after the replica caught up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	returned(t, commit(dbs[0], 3), 30*time.Second)
}

// TestAsyncK0: K=0 acknowledges with every replica down.
func TestAsyncK0(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs, procs := gateCluster(t, 0, "strict")
	procs[1].Kill()
	procs[2].Kill()
	returned(t, commit(dbs[0], 1), 30*time.Second)
}

// TestPrimaryAgentCrashKeepsCommitsWaiting: with the replicas' agents down a
// commit waits; killing and restarting the primary's agent must not release
// it; once a replica holds it, it returns, and no seqno is doubled.
func TestPrimaryAgentCrashKeepsCommitsWaiting(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs, procs := gateCluster(t, 1, "strict")
	returned(t, commit(dbs[0], 1), 30*time.Second)
	seq := durable(t, procs[0])
	procs[1].Kill()
	procs[2].Kill()
	done := commit(dbs[0], 2)
	procs[0].WaitStatus("primary log holds the transaction", 30*time.Second, func(s agent.Status) bool { return s.DurableSeqno > seq })
	pending(t, done, 500*time.Millisecond, "no replica holds it")
	procs[0].Kill()
	if err := procs[0].Restart(); err != nil {
		t.Fatal(err)
	}
	procs[0].WaitStatus("restarted primary serving", time.Minute, func(s agent.Status) bool { return s.Serving })
	pending(t, done, time.Second, "the restarted primary agent has no replica holding it")
	if err := procs[1].Restart(); err != nil {
		t.Fatal(err)
	}
	returned(t, done, 30*time.Second)
	if d := durable(t, procs[1]); d <= seq {
		t.Fatalf("commit returned before db2 held it (durable %d)", d)
	}
	if err := procs[2].Restart(); err != nil {
		t.Fatal(err)
	}
	total := binlogTransactions(t, dbs[0])
	waitDurable(t, procs, total, time.Minute)
	checkLogsFrom(t, dbs, procs, total)
}

// TestNoAsyncSlipAtStartup: with the semi-sync settings in my.cnf, a commit
// made before any agent runs waits, and returns only once a sync replica
// holds it — the primary's agent starting must not release it.
func TestNoAsyncSlipAtStartup(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs := mariadbtest.Start(t, 2, mariadbtest.Options{Settings: mariadbtest.SemiSyncPrimary})
	var name, status string
	if err := dbs[0].DB.QueryRow("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'").Scan(&name, &status); err != nil {
		t.Fatal(err)
	}
	t.Logf("before any agent: Rpl_semi_sync_master_status=%s", status)
	done := make(chan error, 1)
	go func() {
		_, err := dbs[0].DB.Exec("CREATE DATABASE app")
		done <- err
	}()
	pending(t, done, time.Second, "no agent runs (rpl_semi_sync_master_wait_no_slave=ON)")
	primary := agenttest.Start(t, agenttest.Options{Node: "db1", DB: dbs[0], Role: agent.RolePrimary, K: 1, SyncSet: []string{"db2"}})
	primary.WaitStatus("primary serving", time.Minute, func(s agent.Status) bool { return s.Serving && s.DurableSeqno >= 1 })
	pending(t, done, time.Second, "the primary agent runs but no replica holds the transaction")
	replica := agenttest.Start(t, agenttest.Options{Node: "db2", DB: dbs[1], Role: agent.RoleReplica, PrimaryAgent: primary.GRPCAddr})
	returned(t, done, 30*time.Second)
	if d := durable(t, replica); d < 1 {
		t.Fatalf("commit returned before the replica held it (durable %d)", d)
	}
}

// checkLogsFrom is checkLogs for a cluster whose schema set-up is in the log.
func checkLogsFrom(t *testing.T, dbs []*mariadbtest.Instance, procs []*agenttest.Proc, n uint64) {
	t.Helper()
	checkLogs(t, dbs, procs, n)
}

// TestPrimaryLogTailLost: records are shipped before the primary's own
// fsync, so after a power loss the replicas may hold records the primary's
// log lost. Emulated here: with the primary's agent stopped its log loses
// its last records (and acked.json, written only after the primary's fsync,
// points no further than the surviving log). The restarted agent numbers
// the same binlog transactions the same way again, the replicas' streams are
// taken back once it has caught up, every log ends equal, and commits
// return again.
func TestPrimaryLogTailLost(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs, procs := gateCluster(t, 1, "strict")
	for i := 1; i <= 40; i++ {
		returned(t, commit(dbs[0], i), 30*time.Second)
	}
	total := binlogTransactions(t, dbs[0])
	waitDurable(t, procs, total, time.Minute)
	procs[0].Kill()

	keep := total - 15
	l, err := txlog.Open(procs[0].LogDir(), txlog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := l.Read(keep)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.TruncateAfter(keep); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	acked := fmt.Sprintf(`{"epoch":%d,"seqno":%d,"file":%q,"pos":%d}`+"\n", rec.Epoch, keep, rec.SourceFile, rec.SourcePos)
	if err := os.WriteFile(filepath.Join(procs[0].Dir, "data", "acked.json"), []byte(acked), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("primary log cut back from %d to %d records; replicas hold %d", total, keep, total)

	if err := procs[0].Restart(); err != nil {
		t.Fatal(err)
	}
	procs[0].WaitStatus("primary re-extracted its lost tail", time.Minute, func(s agent.Status) bool {
		return s.Serving && s.DurableSeqno >= total
	})
	returned(t, commit(dbs[0], 1000), 30*time.Second)
	total = binlogTransactions(t, dbs[0])
	waitDurable(t, procs, total, time.Minute)
	refused := strings.Count(procs[1].Logs()+procs[2].Logs(), "is beyond this log's end")
	checkLogs(t, dbs, procs, total)
	t.Logf("the replicas' streams were refused %d times while the primary re-extracted", refused)
}
