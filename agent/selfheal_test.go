package agent_test

import (
	"context"
	"database/sql"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/internal/agenttest"
	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

// Self-healing: no restart of any one process leaves the cluster stuck or
// ungated (issue "Self-healing agents"). Every test here runs a managed
// three-node cluster like the demo, whose servers start fail-closed
// (read_only=ON, semi-sync ON in their configuration).

type managedCluster struct {
	t     *testing.T
	mc    *managertest.Cluster
	dbs   []*mariadbtest.Instance
	procs []*agenttest.Proc
	// app is an application's connection to db1: an account without
	// READ_ONLY ADMIN, which read_only stops.
	app *sql.DB
}

// startManaged starts three managers, three fail-closed databases and
// three agents, and makes db1 the primary with sync set db2, db3 and K=1.
func startManaged(t *testing.T) *managedCluster {
	t.Helper()
	return startManagedWith(t, managertest.Options{Insecure: true})
}

// startManagedWith is startManaged with the managers' options.
func startManagedWith(t *testing.T, opts managertest.Options) *managedCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	c := &managedCluster{t: t}
	c.mc = managertest.Start(t, 3, opts)
	c.dbs = mariadbtest.Start(t, 3, mariadbtest.Options{Settings: mariadbtest.FailClosed})
	// The harness's application account (mariadbtest.AppDSN).
	app, err := sql.Open("mysql", c.dbs[0].AppDSN(mariadbtest.AppDatabase))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	c.app = app
	managers := "managers: [" + strings.Join(c.mc.Addrs(), ", ") + "]\n"
	for i, n := range []string{"db1", "db2", "db3"} {
		c.procs = append(c.procs, agenttest.Start(t, agenttest.Options{Node: n, DB: c.dbs[i], Extra: managers}))
	}
	cli := c.mc.Client("operator")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, p := range c.procs {
		if _, err := cli.AddMember(ctx, manager.Member{ID: p.Opts.Node, MySQLAddr: c.dbs[i].Addr(), AgentAddr: p.GRPCAddr, MayBePrimary: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.SetK(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.InitCluster(ctx, "db1", []string{"db2", "db3"}); err != nil {
		t.Fatal(err)
	}
	c.procs[0].WaitStatus("db1 writable primary of epoch 1", time.Minute, func(s agent.Status) bool {
		return s.Role.Kind == agent.RolePrimary && s.Role.Epoch == 1 && s.Writable
	})
	for _, p := range c.procs[1:] {
		p.WaitStatus(p.Opts.Node+" replica of db1", time.Minute, func(s agent.Status) bool {
			return s.Role.Kind == agent.RoleReplica && s.Role.PrimaryAgent == c.procs[0].GRPCAddr && s.RoleError == ""
		})
	}
	c.exec(0, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, who VARCHAR(16))")
	return c
}

func (c *managedCluster) exec(node int, qs ...string) {
	c.t.Helper()
	for _, q := range qs {
		if _, err := c.dbs[node].DB.Exec(q); err != nil {
			c.t.Fatalf("db%d: %s: %v", node+1, q, err)
		}
	}
}

// insertUntil inserts id on db1 through the application's account until a
// commit succeeds (the cluster may be unwritable for a while) or d passes.
func (c *managedCluster) insertUntil(id int, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = c.app.ExecContext(ctx, "INSERT INTO app.t VALUES (?, 'test')", id)
		cancel()
		if err == nil || strings.Contains(err.Error(), "Duplicate entry") {
			return
		}
		time.Sleep(100 * time.Millisecond) // retry interval
	}
	c.t.Fatalf("insert %d not acknowledged within %s: %v", id, d, err)
}

// waitRows polls until every node's app.t holds at least n rows.
func (c *managedCluster) waitRows(n int, d time.Duration, nodes ...int) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for _, i := range nodes {
		for {
			var got int
			err := c.dbs[i].DB.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&got)
			if err == nil && got >= n {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("db%d holds %d rows of app.t (err %v), want %d; agent log:\n%s", i+1, got, err, n, c.procs[i].LogTail(30))
			}
			time.Sleep(50 * time.Millisecond) // poll interval
		}
	}
}

// TestReplicaAgentRestartsWhileItsDatabaseIsDown: the agent of a replica
// restarts while its mariadbd is down. It used to fail its repoint once
// ("SET GLOBAL read_only = ON: invalid connection") and stay at epoch 0 for
// good, every heartbeat refused. Now it takes its role (streaming and
// acknowledging the log without its database) and applies everything once
// the database is back, without a restart.
func TestReplicaAgentRestartsWhileItsDatabaseIsDown(t *testing.T) {
	c := startManaged(t)
	c.insertUntil(1, 30*time.Second)
	c.waitRows(1, time.Minute, 1, 2)

	db3, a3 := c.dbs[2], c.procs[2]
	if err := db3.Kill(); err != nil {
		t.Fatal(err)
	}
	a3.Kill()
	if err := a3.Restart(); err != nil {
		t.Fatal(err)
	}
	pid := a3.PID()
	for id := 2; id <= 20; id++ {
		c.insertUntil(id, 30*time.Second)
	}
	// Without its database the replica still streams: its log holds the
	// writes durably (it can count for the gate).
	a3.WaitStatus("db3 replica of epoch 1 holding the log", time.Minute, func(s agent.Status) bool {
		return s.Role.Kind == agent.RoleReplica && s.Role.Epoch == 1 && s.DurableSeqno >= c.procsLast(0)
	})
	if err := db3.Restart(); err != nil {
		t.Fatal(err)
	}
	c.waitRows(20, 2*time.Minute, 2)
	if a3.PID() != pid || !a3.Alive() {
		t.Fatal("db3's agent was restarted; it must heal by itself")
	}
	// The managers see it healthy again.
	cli := c.mc.Client("operator")
	managertest.WaitFor(t, "db3 healthy in status", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := cli.Status(ctx)
		if err != nil {
			return false
		}
		for _, n := range st.Nodes {
			if n.ID == "db3" {
				return n.Healthy
			}
		}
		return false
	})
}

// procsLast is the last seqno of node i's log.
func (c *managedCluster) procsLast(i int) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.procs[i].Status(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	return st.LastSeqno
}

// TestPrimaryDatabaseRestarts: kill -9 of the primary's mariadbd, then its
// restart. Extraction used to stop for good (semi-sync found OFF on the
// restarted server) and the cluster stayed unwritable. Now the restarted
// server comes up read-only with semi-sync on, the primary agent's role runs
// again, checks the settings, and reopens writes.
func TestPrimaryDatabaseRestarts(t *testing.T) {
	c := startManaged(t)
	c.insertUntil(1, 30*time.Second)
	db1, a1 := c.dbs[0], c.procs[0]
	pid := a1.PID()
	if err := db1.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := db1.Restart(); err != nil {
		t.Fatal(err)
	}
	for id := 2; id <= 10; id++ {
		c.insertUntil(id, time.Minute)
	}
	c.waitRows(10, time.Minute, 1, 2)
	a1.WaitStatus("db1 writable primary again", time.Minute, func(s agent.Status) bool {
		return s.Role.Kind == agent.RolePrimary && s.Serving && s.Writable
	})
	if a1.PID() != pid || !a1.Alive() {
		t.Fatal("db1's agent was restarted; it must heal by itself")
	}
}

// TestRestartedPrimaryAcknowledgesNothingAlone: with both replica agents
// stopped (SIGSTOP), the primary's mariadbd is killed and restarts. A client
// with every privilege (READ_ONLY ADMIN included) commits: the commit must
// wait, since no replica holds it. After SIGCONT the commit is acknowledged
// and the cluster takes writes again, without restarting any agent.
func TestRestartedPrimaryAcknowledgesNothingAlone(t *testing.T) {
	c := startManaged(t)
	c.insertUntil(1, 30*time.Second)
	c.waitRows(1, time.Minute, 1, 2)
	for _, p := range c.procs[1:] {
		if err := p.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	stopped := true
	defer func() {
		if stopped {
			for _, p := range c.procs[1:] {
				p.Signal(syscall.SIGCONT)
			}
		}
	}()
	db1 := c.dbs[0]
	if err := db1.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := db1.Restart(); err != nil {
		t.Fatal(err)
	}
	// The privileged account writes through read_only; its commit must
	// wait for an ACK that only the gate can send.
	done := make(chan error, 1)
	go func() {
		db, err := sql.Open("mysql", db1.DSN(""))
		if err != nil {
			done <- err
			return
		}
		defer db.Close()
		_, err = db.Exec("INSERT INTO app.t VALUES (2, 'alone')")
		done <- err
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		var waiting int
		err := db1.DB.QueryRow(`SELECT COUNT(*) FROM information_schema.processlist
			WHERE info LIKE 'INSERT INTO app.t VALUES (2%' AND state LIKE '%semi-sync%'`).Scan(&waiting)
		if err == nil && waiting > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("a commit on the restarted primary returned (err %v) while no replica agent runs", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the commit never waited for a semi-sync ACK (err %v)", err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	select {
	case err := <-done:
		t.Fatalf("a commit on the restarted primary returned (err %v) while no replica agent runs", err)
	default:
	}
	for _, p := range c.procs[1:] {
		if err := p.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	stopped = false
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the waiting commit failed after the replicas came back: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the waiting commit was not acknowledged within a minute of the replicas' return")
	}
	for id := 3; id <= 5; id++ {
		c.insertUntil(id, 30*time.Second)
	}
	c.waitRows(5, time.Minute, 1, 2)
	for i, p := range c.procs {
		if !p.Alive() {
			t.Fatalf("agent db%d is not running", i+1)
		}
	}
	c.procs[0].WaitStatus("db1 writable primary", 30*time.Second, func(s agent.Status) bool { return s.Writable })
}

// TestPrimaryLeaseLost: the primary's agent loses every manager (all
// stopped, as behind a partition). Within its lease it stops acknowledging
// and makes its database read-only itself; once the managers are back and
// name it primary again, it reopens writes — no agent restarted.
func TestPrimaryLeaseLost(t *testing.T) {
	c := startManaged(t)
	c.insertUntil(1, 30*time.Second)
	c.mc.StopAll()
	// The default failover timeout (10 s) gives a 5 s lease.
	c.procs[0].WaitStatus("db1 fenced itself after losing its lease", 30*time.Second, func(s agent.Status) bool {
		return s.Role.Kind == agent.RolePrimary && !s.Writable
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ro bool
		err := c.dbs[0].DB.QueryRow("SELECT @@global.read_only").Scan(&ro)
		if err == nil && ro {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("db1 read_only = %v (%v) 30 s after it lost its lease; log:\n%s", ro, err, c.procs[0].LogTail(20))
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	if _, err := c.app.Exec("INSERT INTO app.t VALUES (2, 'no lease')"); err == nil {
		t.Fatal("the application wrote on a primary without a lease")
	}
	for i := range c.mc.Managers {
		c.mc.Restart(i)
	}
	c.insertUntil(3, time.Minute)
	c.waitRows(2, time.Minute, 1, 2)
	c.procs[0].WaitStatus("db1 writable again", 30*time.Second, func(s agent.Status) bool { return s.Writable })
}
