package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/internal/agenttest"
	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

func TestFollow(t *testing.T) {
	primary1 := agent.Role{Kind: agent.RolePrimary, Epoch: 1}
	replicaOf := func(epoch uint64, addr string) agent.Role {
		return agent.Role{Kind: agent.RoleReplica, Epoch: epoch, PrimaryAgent: addr}
	}
	none := agent.Role{Kind: agent.RoleNone}
	asg := func(role manager.Role, epoch uint64, addr string) manager.Assignment {
		return manager.Assignment{Role: role, Epoch: epoch, PrimaryAgentAddr: addr}
	}
	for _, tc := range []struct {
		name   string
		cur    agent.Role
		asg    manager.Assignment
		change bool
		next   agent.Role
		fence  bool
		ignore string
	}{
		{"no primary yet keeps none", none, asg(manager.RoleNone, 0, ""), false, agent.Role{}, false, ""},
		{"no primary yet keeps a static role", primary1, asg(manager.RoleNone, 0, ""), false, agent.Role{}, false, ""},
		{"becomes primary", none, asg(manager.RolePrimary, 1, ""), true, primary1, false, ""},
		{"already primary", primary1, asg(manager.RolePrimary, 1, ""), false, agent.Role{}, false, ""},
		{"becomes replica", none, asg(manager.RoleReplica, 1, "a:1"), true, replicaOf(1, "a:1"), false, ""},
		{"already replica", replicaOf(1, "a:1"), asg(manager.RoleReplica, 1, "a:1"), false, agent.Role{}, false, ""},
		{"repoint to new primary", replicaOf(1, "a:1"), asg(manager.RoleReplica, 2, "b:1"), true, replicaOf(2, "b:1"), false, ""},
		{"replica promoted", replicaOf(1, "a:1"), asg(manager.RolePrimary, 2, ""), true, agent.Role{Kind: agent.RolePrimary, Epoch: 2}, false, ""},
		{"deposed primary is fenced", primary1, asg(manager.RoleReplica, 2, "b:1"), true, replicaOf(2, "b:1"), true, ""},
		{"older assignment ignored", replicaOf(3, "c:1"), asg(manager.RolePrimary, 2, ""), false, agent.Role{}, false, "older"},
		{"replica without address ignored", none, asg(manager.RoleReplica, 1, ""), false, agent.Role{}, false, "without the primary agent's address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := agent.Follow(tc.cur, tc.asg)
			if p.Change != tc.change || p.Fence != tc.fence || (tc.change && p.Next != tc.next) {
				t.Fatalf("Follow(%+v, %+v) = %+v", tc.cur, tc.asg, p)
			}
			if (tc.ignore == "") != (p.Ignore == "") || !strings.Contains(p.Ignore, tc.ignore) {
				t.Fatalf("ignore %q, want containing %q", p.Ignore, tc.ignore)
			}
		})
	}
}

// TestAgentsFollowManagers: three real managers, three agent processes that
// know only the managers. `init` makes db1 primary; the agents take their
// roles, a commit waits for the sync set, and `set-k` reaches the gate.
func TestAgentsFollowManagers(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	mc := managertest.Start(t, 3, managertest.Options{Insecure: true})
	dbs := mariadbtest.Start(t, 3, mariadbtest.Options{Settings: mariadbtest.SemiSyncPrimary})
	managers := "managers: [" + strings.Join(mc.Addrs(), ", ") + "]\n"
	var procs []*agenttest.Proc
	for i, n := range []string{"db1", "db2", "db3"} {
		procs = append(procs, agenttest.Start(t, agenttest.Options{Node: n, DB: dbs[i], Extra: managers}))
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
	for _, p := range procs[1:] {
		p.WaitStatus(p.Opts.Node+" replica of db1", time.Minute, func(s agent.Status) bool {
			return s.Role.Kind == agent.RoleReplica && s.Role.PrimaryAgent == procs[0].GRPCAddr
		})
	}
	if _, err := dbs[0].DB.Exec("CREATE DATABASE app"); err != nil {
		t.Fatal(err)
	}
	for _, p := range procs[1:] {
		p.WaitStatus("record 1 durable", 30*time.Second, func(s agent.Status) bool { return s.DurableSeqno >= 1 })
	}
	if _, err := cli.SetK(ctx, 2); err != nil {
		t.Fatal(err)
	}
	procs[0].WaitStatus("gate K=2", 30*time.Second, func(s agent.Status) bool { return s.Gate != nil && s.Gate.K == 2 })
	st, err := cli.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Primary != "db1" || st.Epoch != 1 || st.K != 2 {
		t.Fatalf("status %+v", st.ClusterState)
	}
}
