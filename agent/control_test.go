package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/config"
	"github.com/quire-ha/quire/internal/mariadbtest"
)

// inProcess starts an agent for db inside the test process.
func inProcess(t *testing.T, node string, db *mariadbtest.Instance, static string) (*agent.Agent, agentpb.AgentControlClient) {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(db.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`node_id: %s
listen: 127.0.0.1:0
http_listen: 127.0.0.1:0
data_dir: %s
mysql: {host: 127.0.0.1, port: %d, user: %s, password_file: %s}
tls: {insecure_plaintext: true}
replication: {heartbeat: 200ms, k: 0}
%s`, node, filepath.Join(dir, "data"), db.Port, db.User, pw, static)
	cfg, err := config.ParseAgent([]byte(yaml), filepath.Join(dir, "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return a, agentpb.NewAgentControlClient(conn)
}

func waitAgent(t *testing.T, a *agent.Agent, what string, cond func(agent.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond(a.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, a.Status())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestControlVerbs exercises fence, promote, repoint and drain against real
// MariaDB: a switchover from db1 to db2 done by hand.
func TestControlVerbs(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs := mariadbtest.Start(t, 2)
	a1, c1 := inProcess(t, "db1", dbs[0], "static: {role: primary}")
	waitAgent(t, a1, "db1 serving", func(s agent.Status) bool { return s.Serving })
	a2, c2 := inProcess(t, "db2", dbs[1], "static: {role: replica, primary_agent: "+a1.GRPCAddr()+"}")
	ctx := context.Background()

	// Write on db1; the replica's log follows.
	mustExec(t, dbs[0], "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1)")
	st, err := c2.Drain(ctx, &agentpb.DrainRequest{Seqno: 3, TimeoutMs: 20000})
	if err != nil || st.DurableSeqno < 3 {
		t.Fatalf("drain db2: %v %+v", err, st)
	}

	// Fence db1: read-only, client sessions killed, no longer serving.
	victim, err := dbs[0].DB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	var victimID int64
	if err := victim.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&victimID); err != nil {
		t.Fatal(err)
	}
	st, err = c1.Fence(ctx, &agentpb.FenceRequest{Epoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !st.ReadOnly || st.Serving || st.Role != agent.RoleNone {
		t.Fatalf("after fence: %+v", st)
	}
	if err := victim.PingContext(ctx); err == nil {
		t.Fatal("a client session on the fenced primary survived")
	}

	// Promote db2 in epoch 2; its database opens for writes.
	if _, err := c2.Promote(ctx, &agentpb.PromoteRequest{Epoch: 2, ExpectLastSeqno: 99}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("promote with a wrong expected seqno: %v", err)
	}
	st, err = c2.Promote(ctx, &agentpb.PromoteRequest{Epoch: 2, ExpectLastSeqno: 3})
	if err != nil {
		t.Fatal(err)
	}
	if st.ReadOnly || !st.Serving || st.Role != agent.RolePrimary || st.Epoch != 2 {
		t.Fatalf("after promote: %+v", st)
	}
	// Promotion applied the whole log before opening writes.
	var rows int
	if err := dbs[1].DB.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("db2 opened writes without db1's row: %d rows, %v", rows, err)
	}
	// db2's applier applied db1's records 1..3 (keeping their GTIDs 0-<db1>-1..3):
	// db2's own writes continue domain 0 at sequence 4.
	mustExec(t, dbs[1], "CREATE DATABASE app2", "CREATE TABLE app2.t (id INT PRIMARY KEY)")

	// Repoint db1 to db2; it receives epoch-2 records after its own.
	if _, err := c1.Repoint(ctx, &agentpb.RepointRequest{Epoch: 2, PrimaryAgent: a2.GRPCAddr()}); err != nil {
		t.Fatal(err)
	}
	st, err = c1.Drain(ctx, &agentpb.DrainRequest{Seqno: 5, TimeoutMs: 20000})
	if err != nil {
		t.Fatal(err)
	}
	if st.LastSeqno != 5 || st.LastEpoch != 2 {
		t.Fatalf("db1 after repoint: %+v", st)
	}
	rec, err := a1.Log().Read(4)
	if err != nil || rec.Epoch != 2 || rec.GTID != fmt.Sprintf("0-%d-4", dbs[1].ServerID) {
		t.Fatalf("record 4 on db1: %+v %v", rec, err)
	}

	// The new primary's gate takes a sync set; bad ones are refused.
	if _, err := c2.SetSyncSet(ctx, &agentpb.SetSyncSetRequest{Members: []string{"db1"}, K: 1, Policy: "strict"}); err != nil || a2.Status().Gate == nil || a2.Status().Gate.K != 1 {
		t.Fatalf("set sync set: %v %+v", err, a2.Status().Gate)
	}
	for _, bad := range []*agentpb.SetSyncSetRequest{
		{Members: []string{"db1"}, K: 2, Policy: "strict"},
		{Members: []string{"db2"}, K: 1, Policy: "strict"},
		{Members: []string{"db1", "db1"}, K: 1, Policy: "strict"},
		{Members: []string{"db1"}, K: 1, Policy: "lenient"},
		{Members: []string{""}, K: 0, Policy: "strict"},
	} {
		if _, err := c2.SetSyncSet(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("SetSyncSet(%v): %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := c1.SetSyncSet(ctx, &agentpb.SetSyncSetRequest{Members: []string{"db2"}, K: 1, Policy: "strict"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("SetSyncSet on a replica: %v", err)
	}
	if g := a2.Status().Gate; g.K != 1 || len(g.Replicas) == 0 {
		t.Fatalf("refused requests changed the gate: %+v", g)
	}

	// Bad input changes nothing.
	for _, call := range []func() error{
		func() error { _, err := c1.Promote(ctx, &agentpb.PromoteRequest{}); return err },
		func() error { _, err := c1.Repoint(ctx, &agentpb.RepointRequest{Epoch: 2}); return err },
		func() error { _, err := c1.Repoint(ctx, &agentpb.RepointRequest{PrimaryAgent: "x:1"}); return err },
	} {
		if err := call(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("bad request: %v, want InvalidArgument", err)
		}
	}
	if s := a1.Status(); s.Role.Kind != agent.RoleReplica || s.LastSeqno != 5 {
		t.Fatalf("bad requests changed db1: %+v", s)
	}
	// Drain that cannot complete reports the deadline.
	if _, err := c1.Drain(ctx, &agentpb.DrainRequest{Seqno: 100, TimeoutMs: 200}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("drain beyond the end: %v", err)
	}
}

func mustExec(t *testing.T, in *mariadbtest.Instance, qs ...string) {
	t.Helper()
	for _, q := range qs {
		if _, err := in.DB.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
