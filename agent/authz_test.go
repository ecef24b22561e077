package agent_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/api/shippb"
	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/internal/agenttest"
	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

// TestClusterWithRoles runs three managers and three agent processes over
// mutual TLS with role certificates: the cluster works (registration,
// heartbeats, log streams, acks, all as each node itself), and on the live
// system a role that may not give an order, or a node speaking for
// another, is refused; the application account cannot write on a replica.
func TestClusterWithRoles(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	mc := managertest.Start(t, 3, managertest.Options{})
	dbs := mariadbtest.Start(t, 3, mariadbtest.Options{Settings: mariadbtest.SemiSyncPrimary})
	managers := "managers: [" + strings.Join(mc.Addrs(), ", ") + "]\n"
	var procs []*agenttest.Proc
	for i, n := range []string{"db1", "db2", "db3"} {
		procs = append(procs, agenttest.Start(t, agenttest.Options{Node: n, DB: dbs[i], Extra: managers, CADir: mc.CADir()}))
	}
	cli := mc.Client("operator")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, p := range procs {
		if _, err := cli.AddMember(ctx, manager.Member{ID: p.Opts.Node, MySQLAddr: dbs[i].Addr(), AgentAddr: p.GRPCAddr, MayBePrimary: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.SetK(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.InitCluster(ctx, "db1", []string{"db2", "db3"}); err != nil {
		t.Fatal(err)
	}
	procs[0].WaitStatus("db1 primary of epoch 1", time.Minute, func(s agent.Status) bool {
		return s.Role.Kind == agent.RolePrimary && s.Role.Epoch == 1 && s.Serving
	})
	// The application writes through the primary; K=1 of the sync set
	// acknowledges over the authenticated streams.
	app, err := sql.Open("mysql", dbs[0].AppDSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	for _, q := range []string{"CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1)"} {
		if _, err := app.ExecContext(ctx, q); err != nil {
			t.Fatalf("application on the primary: %s: %v", q, err)
		}
	}
	for _, p := range procs[1:] {
		p.WaitStatus(p.Opts.Node+" applied 3", time.Minute, func(s agent.Status) bool { return s.Apply != nil && s.Apply.AppliedSeqno >= 3 })
	}
	replicaApp, err := sql.Open("mysql", dbs[1].AppDSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer replicaApp.Close()
	var me *mysql.MySQLError
	if _, err := replicaApp.ExecContext(ctx, "INSERT INTO app.t VALUES (2)"); !errors.As(err, &me) || me.Number != 1290 {
		t.Errorf("application on replica db2: %v, want error 1290", err)
	}

	// Orders from the wrong roles, on the live agents.
	dial := func(f certs.Files, addr string) *grpc.ClientConn {
		tc, err := certs.ClientConfig(f, "")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	agentFiles := func(p *agenttest.Proc) certs.Files {
		return certs.Files{CA: filepath.Join(mc.CADir(), certs.CACert), Cert: certs.CertFile(p.Dir, p.Opts.Node), Key: certs.KeyFile(p.Dir, p.Opts.Node)}
	}
	opToDB2 := agentpb.NewAgentControlClient(dial(mc.Files("operator"), procs[1].GRPCAddr))
	if _, err := opToDB2.Promote(ctx, &agentpb.PromoteRequest{Epoch: 2}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("operator promoting db2 directly: %v, want PermissionDenied", err)
	}
	if st, err := opToDB2.Status(ctx, &agentpb.StatusRequest{}); err != nil || st.NodeId != "db2" {
		t.Errorf("operator reading db2's status: %v %v", st, err)
	}
	db2ToDB3 := agentpb.NewAgentControlClient(dial(agentFiles(procs[1]), procs[2].GRPCAddr))
	if _, err := db2ToDB3.Repoint(ctx, &agentpb.RepointRequest{Epoch: 1, PrimaryAgent: procs[1].GRPCAddr}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("db2 repointing db3 at itself: %v, want PermissionDenied", err)
	}
	// db3's certificate opening a log stream on db1 as db2.
	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	st, err := shippb.NewLogShippingClient(dial(agentFiles(procs[2]), procs[0].GRPCAddr)).Stream(sctx)
	if err == nil {
		err = st.Send(&shippb.Up{Msg: &shippb.Up_Hello{Hello: &shippb.Hello{NodeId: "db2", Epoch: 1, NextSeqno: 1}}})
	}
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `may not speak for node "db2"`) {
		t.Errorf("db3 streaming as db2: %v, want PermissionDenied", err)
	}
	// The refusals changed nothing: the cluster still acknowledges writes.
	if _, err := app.ExecContext(ctx, "INSERT INTO app.t VALUES (3)"); err != nil {
		t.Errorf("a write after the refusals: %v", err)
	}
}
