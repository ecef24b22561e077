package agent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
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
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

// An agent in plaintext refuses to start unless every address is on
// loopback; the error names the key. No database is needed: the check
// comes before the agent touches it.
func TestPlaintextOffLoopbackRefused(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "node_id: db1\ndata_dir: " + filepath.Join(dir, "data") + "\nmysql: {host: 127.0.0.1, port: 1, user: u, password_file: " + pw + "}\n" +
		"tls: {insecure_plaintext: true}\n"
	for _, tc := range []struct{ yaml, key string }{
		{"listen: 0.0.0.0:0\nhttp_listen: 127.0.0.1:0\n", "listen"},
		{"listen: 127.0.0.1:0\nhttp_listen: 127.0.0.1:0\nmanagers: [\"10.1.2.3:7301\"]\n", "managers[0]"},
	} {
		cfg, err := config.ParseAgent([]byte(base+tc.yaml), filepath.Join(dir, "agent.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err == nil {
			a.Close()
			t.Fatalf("%q: the agent started", tc.yaml)
		}
		if !strings.Contains(err.Error(), tc.key+": ") || !strings.Contains(err.Error(), "not a loopback address") {
			t.Errorf("%q: %v, want an error naming %s", tc.yaml, err, tc.key)
		}
	}
}

func wantRefused(t *testing.T, what string, err error, code codes.Code, text string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), text) {
		t.Errorf("%s: %v, want %s with %q", what, err, code, text)
	}
}

// TestControlBounds: control verbs with epochs the managers never issued,
// or a truncation below what is committed, are refused and change
// nothing.
func TestControlBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs := mariadbtest.Start(t, 2)
	a1, c1 := inProcess(t, "db1", dbs[0], "static: {role: primary}")
	waitAgent(t, a1, "db1 serving", func(s agent.Status) bool { return s.Serving })
	a2, c2 := inProcess(t, "db2", dbs[1], "static: {role: replica, primary_agent: "+a1.GRPCAddr()+"}")
	ctx := context.Background()
	mustExec(t, dbs[0], "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1)")
	waitAgent(t, a2, "db2 applied 3", func(s agent.Status) bool { return s.Apply != nil && s.Apply.AppliedSeqno >= 3 && s.CommitSeqno >= 3 })

	_, err := c2.Promote(ctx, &agentpb.PromoteRequest{Epoch: math.MaxUint64})
	wantRefused(t, "promote to epoch 2^64-1", err, codes.FailedPrecondition, "more than one beyond")
	_, err = c1.Fence(ctx, &agentpb.FenceRequest{Epoch: math.MaxUint64})
	wantRefused(t, "fence with epoch 2^64-1", err, codes.FailedPrecondition, "more than one beyond")
	_, err = c2.Repoint(ctx, &agentpb.RepointRequest{Epoch: 1, PrimaryAgent: a1.GRPCAddr(), HasTruncate: true, TruncateAfter: 1})
	wantRefused(t, "truncate below the commit index", err, codes.FailedPrecondition, "would drop records up to 3")
	_, err = c2.Drain(ctx, &agentpb.DrainRequest{TimeoutMs: math.MaxUint32})
	wantRefused(t, "drain for 49 days", err, codes.InvalidArgument, "longer than the limit")
	if s := a1.Status(); s.Role.Kind != agent.RolePrimary || s.Role.Epoch != 1 || !s.Serving {
		t.Errorf("refused verbs changed db1: %+v", s.Role)
	}
	if s := a2.Status(); s.Role.Kind != agent.RoleReplica || s.Role.Epoch != 1 || s.LastSeqno != 3 {
		t.Errorf("refused verbs changed db2: %+v, last %d", s.Role, s.LastSeqno)
	}
	// Fencing db1 into epoch 2 is allowed; an order of the older epoch 1
	// afterwards (a deposed manager's) is not.
	if _, err := c1.Fence(ctx, &agentpb.FenceRequest{Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	_, err = c1.Repoint(ctx, &agentpb.RepointRequest{Epoch: 1, PrimaryAgent: a2.GRPCAddr()})
	wantRefused(t, "repoint into an older epoch", err, codes.FailedPrecondition, "older than this agent's epoch 2")
}

// TestManagedEpochBounds: a managed agent accepts only epochs its managers
// issued; for a newer one than it knows it asks them.
func TestManagedEpochBounds(t *testing.T) {
	mc := managertest.Start(t, 3, managertest.Options{Insecure: true})
	cli := mc.Client("operator")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// No database: the agent reports it unhealthy, which is enough here.
	yaml := fmt.Sprintf("node_id: db1\nlisten: 127.0.0.1:0\nhttp_listen: 127.0.0.1:0\ndata_dir: %s\nmysql: {host: 127.0.0.1, port: 1, user: u, password_file: %s}\n"+
		"tls: {insecure_plaintext: true}\nreplication: {heartbeat: 200ms}\nmanagers: [%s]\n", filepath.Join(dir, "data"), pw, strings.Join(mc.Addrs(), ", "))
	cfg, err := config.ParseAgent([]byte(yaml), filepath.Join(dir, "agent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	actx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(actx); close(done) }()
	defer func() { stop(); <-done }()
	if _, err := cli.AddMember(ctx, manager.Member{ID: "db1", MySQLAddr: "127.0.0.1:1", AgentAddr: a.GRPCAddr(), MayBePrimary: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AddMember(ctx, manager.Member{ID: "db2", MySQLAddr: "127.0.0.1:2", AgentAddr: "127.0.0.1:3", MayBePrimary: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.InitCluster(ctx, "db2", nil); err != nil { // epoch 1, db1 a replica
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := agentpb.NewAgentControlClient(conn)
	_, err = c.Promote(ctx, &agentpb.PromoteRequest{Epoch: 2})
	wantRefused(t, "promote into an epoch the managers have not issued", err, codes.FailedPrecondition, "epoch 2 was not issued by the managers (the newest they have answered is 1)")
	_, err = c.Fence(ctx, &agentpb.FenceRequest{Epoch: math.MaxUint64})
	wantRefused(t, "fence with epoch 2^64-1", err, codes.FailedPrecondition, "not issued by the managers")
	if r := a.Status().Role; r.Epoch > 1 {
		t.Errorf("refused verbs raised the agent's epoch: %+v", r)
	}
}
