package server_test

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/authz"
	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/consensus"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
	"github.com/quire-ha/quire/manager/server"
)

// Tests run three real managers in-process (consensus nodes and gRPC
// servers on loopback, mutual TLS) through manager.Client. Set
// QUIRE_TEST_LOG=debug (or info, warn) to see their logs with -v.

func member(id string, port int) manager.Member {
	p := func(base int) string { return "127.0.0.1:" + strconv.Itoa(base+port) }
	return manager.Member{ID: id, MySQLAddr: p(33060), AgentAddr: p(7400), Priority: port, MayBePrimary: true}
}

// setup adds members a, b, c, makes a the primary of epoch 1 with sync set
// {b, c} and K 1.
func setup(t *testing.T, cl *manager.Client) manager.ClusterState {
	t.Helper()
	ctx := managertest.Context(t)
	for i, id := range []string{"a", "b", "c"} {
		if _, err := cl.AddMember(ctx, member(id, i+1)); err != nil {
			t.Fatalf("add member %s: %v", id, err)
		}
	}
	if _, err := cl.InitCluster(ctx, "a", []string{"b", "c"}); err != nil {
		t.Fatalf("init: %v", err)
	}
	st, err := cl.SetK(ctx, 1)
	if err != nil {
		t.Fatalf("set k: %v", err)
	}
	return st
}

func wantCode(t *testing.T, what string, err error, code codes.Code, contains ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %s", what, code)
	}
	if got := status.Code(err); got != code {
		t.Fatalf("%s: code %s (%v), want %s", what, got, err, code)
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: error %q does not mention %q", what, err, s)
		}
	}
}

func TestLeaderLossElectsNewLeader(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	cl := c.Client("operator")
	ctx := managertest.Context(t)
	setup(t, cl)
	before, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := c.Leader()
	if before.Leader != c.Managers[old].ID {
		t.Errorf("status names leader %q, want %q", before.Leader, c.Managers[old].ID)
	}
	c.Stop(old)
	now := c.Leader()
	if now == old {
		t.Fatalf("manager %d still leads after it stopped", old)
	}
	after, err := cl.Status(ctx)
	if err != nil {
		t.Fatalf("status after the leader stopped: %v", err)
	}
	if after.Leader != c.Managers[now].ID {
		t.Errorf("status names leader %q, want %q", after.Leader, c.Managers[now].ID)
	}
	if !reflect.DeepEqual(after.ClusterState, before.ClusterState) {
		t.Errorf("state changed across the election:\n before %+v\n after  %+v", before.ClusterState, after.ClusterState)
	}
	// Writes work too.
	if st, err := cl.SetPolicy(ctx, "degrade"); err != nil || st.Policy != "degrade" {
		t.Fatalf("set policy after the election: %v %+v", err, st)
	}
}

func TestRestartKeepsState(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	cl := c.Client("operator")
	ctx := managertest.Context(t)
	setup(t, cl)
	if _, err := cl.SetPolicy(ctx, "degrade"); err != nil {
		t.Fatal(err)
	}
	before, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.StopAll()
	for i := range c.Managers {
		c.Restart(i)
	}
	c.Leader()
	after, err := cl.Status(ctx)
	if err != nil {
		t.Fatalf("status after restart: %v", err)
	}
	if !reflect.DeepEqual(after.ClusterState, before.ClusterState) {
		t.Errorf("state changed across the restart:\n before %+v\n after  %+v", before.ClusterState, after.ClusterState)
	}
	for _, m := range c.Managers {
		managertest.WaitFor(t, m.ID+" to apply its log after the restart", func() bool {
			got := m.Node.State()
			return got.Epoch == 1 && got.Primary == "a" && got.K == 1 && got.Policy == consensus.PolicyDegrade && len(got.Members) == 3
		})
	}
}

func TestFollowerForwardsWrites(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	l := c.Leader()
	f := (l + 1) % 3
	// A client that knows only the follower.
	cl, err := manager.NewClient(manager.ClientConfig{Addrs: []string{c.Managers[f].GRPCAddr}, TLS: c.ClientTLS("operator")})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	setup(t, cl)
	if got := cl.Leader(); got != c.Managers[f].GRPCAddr {
		t.Errorf("client's last answer came from %s, want the follower %s", got, c.Managers[f].GRPCAddr)
	}
	if st := c.Managers[l].Node.State(); st.K != 1 || st.Primary != "a" || len(st.Members) != 3 {
		t.Errorf("leader state after forwarded writes: %+v", st)
	}
	// Heartbeats and reads are forwarded too; the positions are the
	// leader's. The leader judges the agent the follower vouches for.
	ctx := managertest.Context(t)
	ag, err := manager.NewClient(manager.ClientConfig{Addrs: []string{c.Managers[f].GRPCAddr}, TLS: c.ClientTLS("b")})
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	if _, err := ag.Heartbeat(ctx, manager.Report{NodeID: "c", Role: manager.RoleReplica, Epoch: 1, DatabaseHealthy: true, DurableSeqno: 7}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("b's heartbeat for c through the follower: %v, want PermissionDenied", err)
	}
	if _, err := ag.Heartbeat(ctx, manager.Report{NodeID: "b", Role: manager.RoleReplica, Epoch: 1, DatabaseHealthy: true, DurableSeqno: 7}); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Managers[l].Server.Positions()["b"]; !ok {
		t.Error("the leader holds no position for b after a heartbeat sent to a follower")
	}
	if len(c.Managers[f].Server.Positions()) != 0 {
		t.Error("the follower keeps positions")
	}
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := node(t, st, "b"); n.DurableSeqno != 7 {
		t.Errorf("status through the follower: b durable %d, want 7", n.DurableSeqno)
	}
}

// A forwarded call that reaches a manager that is not the leader is not
// forwarded again: it is answered UNAVAILABLE with a hint.
func TestForwardedCallIsNotForwardedAgain(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	l := c.Leader()
	f := (l + 1) % 3
	// The third manager forwards an operator's call to the follower.
	other := c.Managers[3-l-f].ID
	tc := c.ClientTLS(other)
	conn, err := grpc.NewClient(c.Managers[f].GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := managertest.Context(t)
	_, err = managerpb.NewManagerServiceClient(conn).SetK(metadata.AppendToOutgoingContext(ctx, server.ForwardedByKey, other), &managerpb.SetKRequest{K: 0})
	wantCode(t, "forwarded call without its original caller", err, codes.PermissionDenied, "upgrade it")
	ctx = metadata.AppendToOutgoingContext(ctx, server.ForwardedByKey, other, authz.ForwardedForKey, "operator/operator")
	_, err = managerpb.NewManagerServiceClient(conn).SetK(ctx, &managerpb.SetKRequest{K: 0})
	wantCode(t, "forwarded call on a follower", err, codes.Unavailable, "not the leader")
	st := status.Convert(err)
	var hint *managerpb.LeaderHint
	for _, d := range st.Details() {
		if h, ok := d.(*managerpb.LeaderHint); ok {
			hint = h
		}
	}
	if hint == nil || hint.GetLeaderId() != c.Managers[l].ID || hint.GetGrpcAddr() != c.Managers[l].GRPCAddr {
		t.Errorf("leader hint %v, want %s at %s", hint, c.Managers[l].ID, c.Managers[l].GRPCAddr)
	}
}

func TestMinorityCannotWrite(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	cl := c.Client("operator")
	setup(t, cl)
	l := c.Leader()
	keep := (l + 1) % 3
	want := c.Managers[l].Node.State()
	managertest.WaitFor(t, "the follower to apply every committed change", func() bool {
		return reflect.DeepEqual(c.Managers[keep].Node.State(), want)
	})
	for i := range c.Managers {
		if i != keep {
			c.Stop(i)
		}
	}
	managertest.WaitFor(t, "the lone manager to stop leading", func() bool { return !c.Managers[keep].Node.IsLeader() })
	before := c.Managers[keep].Node.State()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := cl.SetK(ctx, 2)
	wantCode(t, "set k in a minority", err, codes.Unavailable)
	_, err = cl.Status(ctx)
	wantCode(t, "status in a minority", err, codes.Unavailable)
	if after := c.Managers[keep].Node.State(); !reflect.DeepEqual(after, before) {
		t.Errorf("minority state changed: %+v -> %+v", before, after)
	}
	if c.Managers[keep].Node.IsLeader() {
		t.Error("a lone manager of three became leader")
	}
}

// Every RPC refuses malformed input with INVALID_ARGUMENT naming the field,
// and changes nothing.
func TestInvalidInputChangesNothing(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	cl := c.Client("operator")
	setup(t, cl)
	ctx := managertest.Context(t)
	conn, err := grpc.NewClient(c.Managers[c.Leader()].GRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(c.ClientTLS("operator"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := managerpb.NewManagerServiceClient(conn)
	long := strings.Repeat("x", manager.MaxErrorLen+1)
	// Agents speak for themselves (an empty node id is nobody's).
	agentFor := func(id string) *manager.Client {
		if id == "" {
			id = "b"
		}
		return c.Client(id)
	}
	hb := func(r manager.Report) func() error {
		return func() error { _, err := agentFor(r.NodeID).Heartbeat(ctx, r); return err }
	}
	cases := []struct {
		name    string
		call    func() error
		mention []string
	}{
		{"add member empty id", func() error { _, err := cl.AddMember(ctx, member("", 4)); return err }, []string{"member.id", "empty"}},
		{"add member bad address", func() error {
			m := member("d", 4)
			m.MySQLAddr = "nohost"
			_, err := cl.AddMember(ctx, m)
			return err
		}, []string{"member.mysql_addr", "nohost"}},
		{"add member twice", func() error { _, err := cl.AddMember(ctx, member("b", 2)); return err }, []string{"member.id", `"b"`, "already"}},
		{"add member missing", func() error { _, err := raw.AddMember(ctx, &managerpb.AddMemberRequest{}); return err }, []string{"member"}},
		{"update unknown member", func() error { _, err := cl.UpdateMember(ctx, member("zz", 9)); return err }, []string{"member.id", `"zz"`, "not a member"}},
		{"update member missing", func() error { _, err := raw.UpdateMember(ctx, &managerpb.UpdateMemberRequest{}); return err }, []string{"member"}},
		{"remove empty id", func() error { _, err := cl.RemoveMember(ctx, ""); return err }, []string{"id", "empty"}},
		{"remove unknown", func() error { _, err := cl.RemoveMember(ctx, "zz"); return err }, []string{`"zz"`, "not a member"}},
		{"remove primary", func() error { _, err := cl.RemoveMember(ctx, "a"); return err }, []string{`"a"`, "primary"}},
		{"negative k", func() error { _, err := cl.SetK(ctx, -1); return err }, []string{"k=-1", "negative"}},
		{"k too large", func() error { _, err := cl.SetK(ctx, 3); return err }, []string{"k=3", "exceeds"}},
		{"unknown policy", func() error { _, err := cl.SetPolicy(ctx, "lax"); return err }, []string{"policy", "lax"}},
		{"sync set unknown node", func() error { _, err := cl.SetSyncSet(ctx, []string{"b", "zz"}); return err }, []string{`"zz"`, "not a member"}},
		{"sync set empty id", func() error { _, err := cl.SetSyncSet(ctx, []string{""}); return err }, []string{"empty"}},
		{"sync set with primary", func() error { _, err := cl.SetSyncSet(ctx, []string{"a"}); return err }, []string{`"a"`, "primary"}},
		{"settings nothing", func() error { _, err := cl.SetSettings(ctx, manager.Settings{}); return err }, []string{"nothing to set"}},
		{"settings negative timeout", func() error {
			d := -time.Second
			_, err := cl.SetSettings(ctx, manager.Settings{FailoverTimeout: &d})
			return err
		}, []string{"failover_timeout", "positive"}},
		{"init empty primary", func() error { _, err := cl.InitCluster(ctx, "", nil); return err }, []string{"primary", "empty"}},
		{"acknowledge without failover", func() error { _, err := cl.AcknowledgeFailover(ctx, "op"); return err }, []string{"last_failover"}},
		{"heartbeat empty node", hb(manager.Report{Role: manager.RoleReplica}), []string{`may not speak for node ""`}},
		{"heartbeat unknown node", hb(manager.Report{NodeID: "zz", Role: manager.RoleReplica}), []string{"node_id", `"zz"`, "not a member"}},
		{"heartbeat bad role", hb(manager.Report{NodeID: "b", Role: "boss"}), []string{"role", "boss"}},
		{"heartbeat last epoch ahead", hb(manager.Report{NodeID: "b", Role: manager.RoleReplica, Epoch: 1, LastEpoch: 2}), []string{"last_epoch=2"}},
		{"heartbeat long error", hb(manager.Report{NodeID: "b", Role: manager.RoleReplica, Error: long}), []string{"error", "4097"}},
		{"heartbeat empty channel", hb(manager.Report{NodeID: "b", Role: manager.RoleReplica, Applied: map[string]uint64{"": 1}}), []string{"applied", "channel"}},
		{"register empty node", func() error {
			_, err := agentFor("").RegisterAgent(ctx, manager.Registration{AgentAddr: "127.0.0.1:7402", MySQLAddr: "127.0.0.1:33062"})
			return err
		}, []string{`may not speak for node ""`}},
		{"register unknown node", func() error {
			_, err := agentFor("zz").RegisterAgent(ctx, manager.Registration{NodeID: "zz", AgentAddr: "127.0.0.1:1", MySQLAddr: "127.0.0.1:2"})
			return err
		}, []string{"node_id", `"zz"`}},
		{"register bad address", func() error {
			_, err := agentFor("b").RegisterAgent(ctx, manager.Registration{NodeID: "b", AgentAddr: "b-host", MySQLAddr: "127.0.0.1:33062"})
			return err
		}, []string{"agent_addr", "b-host"}},
	}
	l := c.Managers[c.Leader()]
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, pos := l.Node.State(), l.Server.Positions()
			code := codes.InvalidArgument
			if strings.Contains(tc.name, "empty node") {
				code = codes.PermissionDenied // authorization answers first
			}
			wantCode(t, tc.name, tc.call(), code, tc.mention...)
			if after := l.Node.State(); !reflect.DeepEqual(after, before) {
				t.Errorf("state changed:\n before %+v\n after  %+v", before, after)
			}
			if after := l.Server.Positions(); !reflect.DeepEqual(after, pos) {
				t.Errorf("positions changed: %+v -> %+v", pos, after)
			}
		})
	}
	// InitCluster on an initialised cluster: same primary is a no-op,
	// another fails.
	if st, err := cl.InitCluster(ctx, "a", nil); err != nil || st.Epoch != 1 {
		t.Errorf("repeated init: %v %+v", err, st)
	}
	_, err = cl.InitCluster(ctx, "b", nil)
	wantCode(t, "init with another primary", err, codes.FailedPrecondition, "already initialised")
}

func TestForeignCertificateRefused(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	cl := c.Client("operator")
	setup(t, cl)
	rogueDir := filepath.Join(t.TempDir(), "rogue")
	if err := certs.InitCA(rogueDir, "rogue CA"); err != nil {
		t.Fatal(err)
	}
	if err := certs.Issue(rogueDir, rogueDir, "operator", certs.RoleOperator, nil); err != nil {
		t.Fatal(err)
	}
	// The rogue client trusts the real CA (so only the managers' check of
	// its certificate can refuse it).
	rogueTLS, err := certs.ClientConfig(certs.Files{
		CA: filepath.Join(c.CADir(), certs.CACert), Cert: certs.CertFile(rogueDir, "operator"), Key: certs.KeyFile(rogueDir, "operator"),
	}, "")
	if err != nil {
		t.Fatal(err)
	}
	noCert := &tls.Config{RootCAs: rogueTLS.RootCAs, MinVersion: tls.VersionTLS13}
	l := c.Managers[c.Leader()]
	before := l.Node.State()
	for name, tc := range map[string]*tls.Config{"foreign CA": rogueTLS, "no certificate": noCert} {
		t.Run(name, func(t *testing.T) {
			rc, err := manager.NewClient(manager.ClientConfig{Addrs: c.Addrs(), TLS: tc, RetryTimeout: 600 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			ctx := context.Background()
			calls := map[string]func() error{
				"status":  func() error { _, err := rc.Status(ctx); return err },
				"members": func() error { _, err := rc.Members(ctx); return err },
				"set k":   func() error { _, err := rc.SetK(ctx, 0); return err },
				"heartbeat": func() error {
					_, err := rc.Heartbeat(ctx, manager.Report{NodeID: "b", Role: manager.RoleReplica})
					return err
				},
				"add": func() error { _, err := rc.AddMember(ctx, member("d", 4)); return err },
			}
			for what, call := range calls {
				err := call()
				if err == nil {
					t.Fatalf("%s with %s: no error", what, name)
				}
				if code := status.Code(err); code != codes.Unavailable {
					t.Errorf("%s with %s: code %s (%v), want Unavailable", what, name, code, err)
				}
				t.Logf("%s: %v", what, err)
			}
		})
	}
	if after := l.Node.State(); !reflect.DeepEqual(after, before) {
		t.Errorf("state changed: %+v -> %+v", before, after)
	}
	if len(l.Server.Positions()) != 0 {
		t.Errorf("positions recorded from refused clients: %+v", l.Server.Positions())
	}
}

func node(t *testing.T, st manager.Status, id string) manager.NodeStatus {
	t.Helper()
	for _, n := range st.Nodes {
		if n.ID == id {
			return n
		}
	}
	t.Fatalf("status has no node %s: %+v", id, st.Nodes)
	return manager.NodeStatus{}
}

func TestHeartbeatPositionsAndHealth(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	cl := c.Client("operator")
	setup(t, cl)
	ctx := managertest.Context(t)
	timeout := 1500 * time.Millisecond
	if _, err := cl.SetSettings(ctx, manager.Settings{FailoverTimeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	agent := c.Client("b") // a fake agent with its own certificate
	agentA := c.Client("a")

	asg, err := agent.RegisterAgent(ctx, manager.Registration{NodeID: "b", AgentAddr: "0.0.0.0:7402", MySQLAddr: "127.0.0.1:33999"})
	if err != nil {
		t.Fatal(err)
	}
	if asg.Role != manager.RoleReplica || asg.Primary != "a" || asg.PrimaryAgentAddr != "127.0.0.1:7401" || !asg.InSyncSet || asg.K != 1 {
		t.Errorf("registration assignment: %+v", asg)
	}
	if len(asg.Warnings) != 1 || !strings.Contains(asg.Warnings[0], "mysql_addr") {
		t.Errorf("warnings %q, want one about mysql_addr", asg.Warnings)
	}

	t0 := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	primary := manager.Report{NodeID: "a", Role: manager.RolePrimary, Epoch: 1, LastEpoch: 1, DatabaseHealthy: true,
		DurableSeqno: 100, CommitIndex: 90, LastCommitTime: t0.Add(10 * time.Second)}
	replica := manager.Report{NodeID: "b", Role: manager.RoleReplica, Epoch: 1, LastEpoch: 1, DatabaseHealthy: true, ReadOnly: true,
		DurableSeqno: 95, CommitIndex: 90, Applied: map[string]uint64{"0": 88, "1": 90}, AppliedCommitTime: t0.Add(7 * time.Second)}
	pa, err := agentA.Heartbeat(ctx, primary)
	if err != nil {
		t.Fatal(err)
	}
	if pa.Role != manager.RolePrimary || pa.Epoch != 1 {
		t.Errorf("primary's assignment: %+v", pa)
	}
	ra, err := agent.Heartbeat(ctx, replica)
	if err != nil {
		t.Fatal(err)
	}
	lastB := time.Now() // after the leader received b's last heartbeat
	if ra.Role != manager.RoleReplica || ra.PrimaryAgentAddr != "127.0.0.1:7401" || ra.PrimaryMySQLAddr != "127.0.0.1:33061" ||
		!reflect.DeepEqual(ra.SyncSet, []string{"b", "c"}) || ra.Degraded != nil || ra.FailoverTimeout != timeout {
		t.Errorf("replica's assignment: %+v", ra)
	}
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := node(t, st, "b")
	if !b.Healthy || !b.Reachable || b.DurableSeqno != 95 || b.AppliedSeqno != 88 || b.Role != manager.RoleReplica ||
		b.ReportedRole != manager.RoleReplica || !b.InSyncSet || !b.ReadOnly || b.LastHeartbeat.IsZero() {
		t.Errorf("b's status: %+v", b)
	}
	if b.LagTx == nil || *b.LagTx != 5 || b.ApplyLagTx == nil || *b.ApplyLagTx != 12 || b.LagSeconds == nil || *b.LagSeconds != 3 {
		t.Errorf("b's lag: tx %v apply %v s %v, want 5, 12, 3", deref(b.LagTx), deref(b.ApplyLagTx), deref(b.LagSeconds))
	}
	if a := node(t, st, "a"); !a.Healthy || a.Role != manager.RolePrimary || a.LagTx == nil || *a.LagTx != 0 {
		t.Errorf("a's status: %+v", a)
	}
	if cn := node(t, st, "c"); cn.Healthy || cn.Reachable || cn.LagTx != nil || !cn.LastHeartbeat.IsZero() {
		t.Errorf("c never heartbeated but: %+v", cn)
	}
	if st.CommitSeqno != 90 {
		t.Errorf("commit seqno %d, want 90", st.CommitSeqno)
	}
	// The leader records the primary's commit index in Raft.
	managertest.WaitFor(t, "the commit index to be recorded", func() bool {
		st, err := cl.Status(ctx)
		return err == nil && st.CommitIndex == 90
	})

	// b stops heartbeating; a keeps going. b turns unhealthy after the
	// failover timeout, a stays healthy.
	managertest.WaitFor(t, "b to turn unhealthy", func() bool {
		if _, err := agentA.Heartbeat(ctx, primary); err != nil {
			t.Fatal(err)
		}
		st, err := cl.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !node(t, st, "a").Healthy {
			t.Fatal("a turned unhealthy while heartbeating")
		}
		return !node(t, st, "b").Healthy
	})
	if waited := time.Since(lastB); waited < timeout-50*time.Millisecond {
		t.Errorf("b turned unhealthy %s after its last heartbeat, before the failover timeout %s", waited, timeout)
	}
	st, _ = cl.Status(ctx)
	if b := node(t, st, "b"); b.Reachable || b.DurableSeqno != 95 {
		t.Errorf("b after its heartbeats stopped: %+v (want unreachable, last position kept)", b)
	}
	// An unhealthy database is unhealthy at once.
	sick := replica
	sick.DatabaseHealthy, sick.Error = false, "mariadbd: connection refused"
	if _, err := agent.Heartbeat(ctx, sick); err != nil {
		t.Fatal(err)
	}
	st, _ = cl.Status(ctx)
	if b := node(t, st, "b"); b.Healthy || !b.Reachable || b.Error != sick.Error {
		t.Errorf("b with a sick database: %+v", b)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestDegradedMarker(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	cl := c.Client("operator")
	setup(t, cl)
	agentA, agentB := c.Client("a"), c.Client("b")
	ctx := managertest.Context(t)
	primary := manager.Report{NodeID: "a", Role: manager.RolePrimary, Epoch: 1, LastEpoch: 1, DatabaseHealthy: true,
		DurableSeqno: 50, CommitIndex: 40, Degraded: true}
	// Under policy strict the marker is never set.
	a, err := agentA.Heartbeat(ctx, primary)
	if err != nil {
		t.Fatal(err)
	}
	if a.Degraded != nil {
		t.Fatalf("degraded under policy strict: %+v", a.Degraded)
	}
	if _, err := cl.SetPolicy(ctx, "degrade"); err != nil {
		t.Fatal(err)
	}
	// A replica cannot degrade the cluster.
	rep := manager.Report{NodeID: "b", Role: manager.RoleReplica, Epoch: 1, Degraded: true}
	if a, err := agentB.Heartbeat(ctx, rep); err != nil || a.Degraded != nil {
		t.Fatalf("replica's degraded flag: %v %+v", err, a.Degraded)
	}
	a, err = agentA.Heartbeat(ctx, primary)
	if err != nil {
		t.Fatal(err)
	}
	if a.Degraded == nil || a.Degraded.AsyncSince != 41 || !strings.Contains(a.Degraded.Reason, "k=1") {
		t.Fatalf("primary's degraded heartbeat answered %+v, want the marker async since 41", a.Degraded)
	}
	// Not cleared while the sync set lags.
	primary.Degraded, primary.DurableSeqno, primary.CommitIndex = false, 60, 55
	if a, err := agentA.Heartbeat(ctx, primary); err != nil || a.Degraded == nil {
		t.Fatalf("marker cleared while commit index 55 < durable 60: %v %+v", err, a)
	}
	// Cleared once K members hold everything.
	primary.CommitIndex = 60
	managertest.WaitFor(t, "the degraded marker to clear", func() bool {
		a, err := agentA.Heartbeat(ctx, primary)
		if err != nil {
			t.Fatal(err)
		}
		return a.Degraded == nil
	})
}

// TestRetainFromInAssignment: the leader sends the retain-from floor only
// once every member has reported, then the lowest durable seqno.
func TestRetainFromInAssignment(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	cl := c.Client("operator")
	setup(t, cl)
	ctx := managertest.Context(t)
	report := func(id string, role manager.Role, durable uint64) manager.Assignment {
		t.Helper()
		a, err := c.Client(id).Heartbeat(ctx, manager.Report{NodeID: id, Role: role, Epoch: 1, LastEpoch: 1, DatabaseHealthy: true, DurableSeqno: durable})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if a := report("a", manager.RolePrimary, 100); a.RetainFrom != 0 {
		t.Errorf("only a reported: retain from %d, want 0", a.RetainFrom)
	}
	if a := report("b", manager.RoleReplica, 95); a.RetainFrom != 0 {
		t.Errorf("c has not reported: retain from %d, want 0", a.RetainFrom)
	}
	if a := report("c", manager.RoleReplica, 97); a.RetainFrom != 95 {
		t.Errorf("all reported: retain from %d, want 95", a.RetainFrom)
	}
	if a := report("a", manager.RolePrimary, 120); a.RetainFrom != 95 {
		t.Errorf("primary's answer: retain from %d, want 95", a.RetainFrom)
	}
	if a := report("b", manager.RoleReplica, 110); a.RetainFrom != 97 {
		t.Errorf("b moved on: retain from %d, want 97 (c)", a.RetainFrom)
	}
}
