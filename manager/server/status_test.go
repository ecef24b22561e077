package server

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/consensus"
	"github.com/quire-ha/quire/manager"
)

func testState(t *testing.T) consensus.State {
	t.Helper()
	st := consensus.NewState()
	cmds := []consensus.Command{
		consensus.AddMember{Member: consensus.Member{ID: "a", MySQLAddr: "h1:3306", AgentAddr: "h1:7400", MayBePrimary: true}},
		consensus.AddMember{Member: consensus.Member{ID: "b", MySQLAddr: "h2:3306", AgentAddr: "h2:7400", MayBePrimary: true}},
		consensus.AddMember{Member: consensus.Member{ID: "c", MySQLAddr: "h3:3306", AgentAddr: "h3:7400", MayBePrimary: true}},
		consensus.SetPrimary{Epoch: 1, Primary: "a", FirstSeqno: 1, SyncSet: []string{"b", "c"}},
		consensus.SetK{K: 1},
	}
	for _, cmd := range cmds {
		var err error
		if st, err = st.Apply(cmd); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

func TestAssignment(t *testing.T) {
	st := testState(t)
	for _, tc := range []struct {
		st   consensus.State
		id   string
		want *managerpb.Assignment
	}{
		{consensus.NewState(), "a", &managerpb.Assignment{Role: "none", Policy: "strict", FailoverTimeoutMs: 10000, LeaderId: "m1"}},
		{st, "a", &managerpb.Assignment{Role: "primary", Epoch: 1, Primary: "a", PrimaryAgentAddr: "h1:7400", PrimaryMysqlAddr: "h1:3306",
			K: 1, SyncSet: []string{"b", "c"}, Policy: "strict", FailoverTimeoutMs: 10000, LeaderId: "m1"}},
		{st, "b", &managerpb.Assignment{Role: "replica", Epoch: 1, Primary: "a", PrimaryAgentAddr: "h1:7400", PrimaryMysqlAddr: "h1:3306",
			K: 1, SyncSet: []string{"b", "c"}, InSyncSet: true, Policy: "strict", FailoverTimeoutMs: 10000, LeaderId: "m1"}},
	} {
		got := assignment(tc.st, tc.id, "m1", nil, 0)
		if !proto.Equal(got, tc.want) {
			t.Errorf("assignment(%s):\n got  %v\n want %v", tc.id, got, tc.want)
		}
	}
}

func TestCheckReport(t *testing.T) {
	st := testState(t)
	ok := manager.Report{NodeID: "b", Role: manager.RoleReplica, Epoch: 2, LastEpoch: 1, Applied: map[string]uint64{"0": 3}}
	if err := checkReport(st, ok); err != nil {
		t.Fatalf("valid report: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mod    func(r *manager.Report)
		inside string
	}{
		{"empty node", func(r *manager.Report) { r.NodeID = "" }, `node_id="": is empty`},
		{"unknown node", func(r *manager.Report) { r.NodeID = "x" }, `node_id="x": is not a member`},
		{"empty role", func(r *manager.Report) { r.Role = "" }, `role="": unknown role`},
		{"bad role", func(r *manager.Report) { r.Role = "leader" }, `role="leader"`},
		{"last epoch ahead", func(r *manager.Report) { r.LastEpoch = 3 }, "last_epoch=3: is above the node's epoch 2"},
		{"empty channel", func(r *manager.Report) { r.Applied = map[string]uint64{"": 1} }, "applied"},
		{"long error", func(r *manager.Report) { r.Error = strings.Repeat("e", manager.MaxErrorLen+1) }, "error: is 4097 bytes"},
	} {
		r := ok
		tc.mod(&r)
		err := checkReport(st, r)
		if err == nil || !strings.Contains(err.Error(), tc.inside) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.inside)
		}
	}
}

func TestSameAddr(t *testing.T) {
	for _, tc := range []struct {
		reported, recorded string
		want               bool
	}{
		{"h1:7400", "h1:7400", true},
		{":7400", "h1:7400", true},
		{"0.0.0.0:7400", "h1:7400", true},
		{"[::]:7400", "h1:7400", true},
		{"h2:7400", "h1:7400", false},
		{"h1:7401", "h1:7400", false},
		{"0.0.0.0:7401", "h1:7400", false},
		{"127.0.0.1:7400", "h1:7400", false},
	} {
		if got := sameAddr(tc.reported, tc.recorded); got != tc.want {
			t.Errorf("sameAddr(%q, %q) = %v, want %v", tc.reported, tc.recorded, got, tc.want)
		}
	}
}

func TestCheckRegistration(t *testing.T) {
	st := testState(t)
	w, err := checkRegistration(st, &managerpb.RegisterAgentRequest{NodeId: "b", AgentAddr: ":7400", MysqlAddr: "h9:3306"})
	if err != nil || len(w) != 1 || !strings.Contains(w[0], `mysql_addr "h9:3306" differs from the member record's "h2:3306"`) {
		t.Errorf("warnings %q, err %v", w, err)
	}
	for _, tc := range []struct {
		req    *managerpb.RegisterAgentRequest
		inside string
	}{
		{&managerpb.RegisterAgentRequest{AgentAddr: "h2:7400", MysqlAddr: "h2:3306"}, `node_id="": is empty`},
		{&managerpb.RegisterAgentRequest{NodeId: "q", AgentAddr: "h2:7400", MysqlAddr: "h2:3306"}, `node_id="q": is not a member`},
		{&managerpb.RegisterAgentRequest{NodeId: "b", MysqlAddr: "h2:3306"}, `agent_addr="": is empty`},
		{&managerpb.RegisterAgentRequest{NodeId: "b", AgentAddr: "h2:7400", MysqlAddr: "h2"}, `mysql_addr="h2": is not host:port`},
		{&managerpb.RegisterAgentRequest{NodeId: "b", AgentAddr: "h2:", MysqlAddr: "h2:3306"}, `agent_addr="h2:": is not host:port`},
	} {
		if _, err := checkRegistration(st, tc.req); err == nil || !strings.Contains(err.Error(), tc.inside) {
			t.Errorf("%v: error %v, want one containing %q", tc.req, err, tc.inside)
		}
	}
}

func TestPrimaryFollowUp(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	strict := testState(t)
	strict.CommitIndex = 10
	degrade := strict.Clone()
	degrade.Policy = consensus.PolicyDegrade
	marked := degrade.Clone()
	marked.Degraded = &consensus.Degraded{AsyncSince: 11, Reason: "r", At: now}
	prim := manager.Report{NodeID: "a", Role: manager.RolePrimary, Epoch: 1, DurableSeqno: 30, CommitIndex: 20}
	with := func(f func(r *manager.Report)) manager.Report { r := prim; f(&r); return r }
	for _, tc := range []struct {
		name  string
		st    consensus.State
		r     manager.Report
		mark  uint64 // AsyncSince of the mark, 0 for none
		clear bool
		rec   uint64
	}{
		{"records a newer commit index", strict, prim, 0, false, 20},
		{"not an older one", strict, with(func(r *manager.Report) { r.CommitIndex = 9 }), 0, false, 0},
		{"replica reports count for nothing", strict, with(func(r *manager.Report) { r.NodeID, r.Role = "b", manager.RoleReplica }), 0, false, 0},
		{"old epoch counts for nothing", strict, with(func(r *manager.Report) { r.Epoch = 0 }), 0, false, 0},
		{"primary not yet in role", strict, with(func(r *manager.Report) { r.Role = manager.RoleNone }), 0, false, 0},
		{"strict never marks", strict, with(func(r *manager.Report) { r.Degraded = true }), 0, false, 20},
		{"degrade marks after the commit index", degrade, with(func(r *manager.Report) { r.Degraded = true }), 21, false, 20},
		{"marks after the recorded index if higher", degrade, with(func(r *manager.Report) { r.Degraded, r.CommitIndex = true, 5 }), 11, false, 0},
		{"already marked", marked, with(func(r *manager.Report) { r.Degraded = true }), 0, false, 20},
		{"not cleared while lagging", marked, prim, 0, false, 20},
		{"cleared once caught up", marked, with(func(r *manager.Report) { r.CommitIndex = 30 }), 0, true, 30},
	} {
		f := primaryFollowUp(tc.st, tc.r, now)
		var mark uint64
		if f.mark != nil {
			mark = f.mark.AsyncSince
			if f.mark.Reason == "" || !f.mark.At.Equal(now) {
				t.Errorf("%s: mark %+v lacks reason or time", tc.name, f.mark)
			}
			if err := tc.st.Validate(*f.mark); err != nil {
				t.Errorf("%s: mark is invalid: %v", tc.name, err)
			}
		}
		if mark != tc.mark || f.clear != tc.clear || f.record != tc.rec {
			t.Errorf("%s: mark %d clear %v record %d, want %d %v %d", tc.name, mark, f.clear, f.record, tc.mark, tc.clear, tc.rec)
		}
	}
}

func TestNodeStatuses(t *testing.T) {
	st := testState(t)
	st.CommitIndex = 80
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	t0 := now.Add(-time.Hour)
	pos := map[string]Position{
		"a": {Report: manager.Report{NodeID: "a", Role: manager.RolePrimary, Epoch: 1, DatabaseHealthy: true, DurableSeqno: 100,
			CommitIndex: 90, LastCommitTime: t0.Add(10 * time.Second)}, Received: now.Add(-time.Second)},
		"b": {Report: manager.Report{NodeID: "b", Role: manager.RoleReplica, Epoch: 1, DatabaseHealthy: true, DurableSeqno: 97,
			AppliedSeqno: 90, AppliedCommitTime: t0.Add(8500 * time.Millisecond)}, Received: now.Add(-11 * time.Second)},
		"c": {Report: manager.Report{NodeID: "c", Role: manager.RoleReplica, Epoch: 1, DatabaseHealthy: false, DurableSeqno: 100,
			AppliedSeqno: 100}, Received: now},
		"gone": {Report: manager.Report{NodeID: "gone"}, Received: now},
	}
	nodes, commit := nodeStatuses(st, pos, now)
	if commit != 90 {
		t.Errorf("commit %d, want the primary's 90", commit)
	}
	if len(nodes) != 3 {
		t.Fatalf("%d nodes, want the 3 members", len(nodes))
	}
	type row struct {
		id                 string
		role               string
		reachable, healthy bool
		lag, applyLag      any
		lagS               any
	}
	got := func(n *managerpb.NodeStatus) row {
		r := row{id: n.GetMember().GetId(), role: n.GetRole(), reachable: n.GetReachable(), healthy: n.GetHealthy()}
		if n.LagTx != nil {
			r.lag = *n.LagTx
		}
		if n.ApplyLagTx != nil {
			r.applyLag = *n.ApplyLagTx
		}
		if n.LagSeconds != nil {
			r.lagS = *n.LagSeconds
		}
		return r
	}
	want := []row{
		{"a", "primary", true, true, uint64(0), nil, 0.0},
		{"b", "replica", false, false, uint64(3), uint64(10), 1.5},
		{"c", "replica", true, false, uint64(0), uint64(0), 0.0},
	}
	for i, n := range nodes {
		if g := got(n); !reflect.DeepEqual(g, want[i]) {
			t.Errorf("node %d: %+v, want %+v", i, g, want[i])
		}
	}
	if !nodes[1].GetInSyncSet() || nodes[0].GetInSyncSet() {
		t.Error("in_sync_set wrong")
	}

	// Without the primary's position, lags are unknown and the commit seqno
	// is the recorded one.
	delete(pos, "a")
	nodes, commit = nodeStatuses(st, pos, now)
	if commit != 80 {
		t.Errorf("commit %d, want the recorded 80", commit)
	}
	for _, n := range nodes {
		if n.LagTx != nil || n.LagSeconds != nil {
			t.Errorf("%s: lag known without the primary's position: %v", n.GetMember().GetId(), n)
		}
	}
	// Lag in seconds is unknown without commit times.
	pos["a"] = Position{Report: manager.Report{NodeID: "a", Role: manager.RolePrimary, Epoch: 1, DurableSeqno: 100}, Received: now}
	nodes, _ = nodeStatuses(st, pos, now)
	if nodes[1].LagSeconds != nil || nodes[1].GetLagTx() != 3 {
		t.Errorf("b without commit times: %v", nodes[1])
	}
}

func TestNodeHealthy(t *testing.T) {
	st := consensus.State{Epoch: 4, Primary: "a"}
	ok := func(role manager.Role, epoch uint64) manager.Report {
		return manager.Report{Role: role, Epoch: epoch, DatabaseHealthy: true}
	}
	for _, tc := range []struct {
		name      string
		st        consensus.State
		id        string
		r         manager.Report
		reachable bool
		want      bool
	}{
		{"primary as assigned", st, "a", ok(manager.RolePrimary, 4), true, true},
		{"primary read-only", st, "a", manager.Report{Role: manager.RolePrimary, Epoch: 4, DatabaseHealthy: true, ReadOnly: true}, true, false},
		{"replica read-only", st, "b", manager.Report{Role: manager.RoleReplica, Epoch: 4, DatabaseHealthy: true, ReadOnly: true}, true, true},
		{"replica as assigned", st, "b", ok(manager.RoleReplica, 4), true, true},
		{"unreachable", st, "b", ok(manager.RoleReplica, 4), false, false},
		{"database down", st, "b", manager.Report{Role: manager.RoleReplica, Epoch: 4}, true, false},
		{"reports an error", st, "b", manager.Report{Role: manager.RoleReplica, Epoch: 4, DatabaseHealthy: true, Error: "replica role: stream lost"}, true, false},
		{"has not taken its role (restarted agent)", st, "b", ok(manager.RoleNone, 4), true, false},
		{"an old epoch's replica", st, "b", ok(manager.RoleReplica, 3), true, false},
		{"a deposed primary still primary", st, "b", ok(manager.RolePrimary, 3), true, false},
		{"no primary yet: any role", consensus.State{}, "b", ok(manager.RoleNone, 0), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nodeHealthy(tc.st, tc.id, tc.r, tc.reachable); got != tc.want {
				t.Fatalf("nodeHealthy = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRetainFrom(t *testing.T) {
	one := testState(t) // epoch 1 (a), members a, b, c
	three := one
	for _, cmd := range []consensus.Command{
		consensus.SetPrimary{Epoch: 2, Primary: "b", FirstSeqno: 101},
		consensus.SetPrimary{Epoch: 3, Primary: "c", FirstSeqno: 201},
	} {
		var err error
		if three, err = three.Apply(cmd); err != nil {
			t.Fatal(err)
		}
	}
	short := three.Clone()
	short.EpochHistory = short.EpochHistory[:1] // damaged: does not cover epoch 2
	noPrimary := consensus.NewState()
	noPrimary.Members = one.Members

	now := time.Now()
	at := func(lastEpoch, durable uint64) Position {
		return Position{Report: manager.Report{Role: manager.RoleReplica, Epoch: lastEpoch, LastEpoch: lastEpoch, DurableSeqno: durable}, Received: now}
	}
	for _, tc := range []struct {
		name string
		st   consensus.State
		pos  map[string]Position
		want uint64
	}{
		{"no primary yet", noPrimary, map[string]Position{"a": at(0, 0), "b": at(0, 0), "c": at(0, 0)}, 0},
		{"every member reported: the lowest durable seqno", one, map[string]Position{"a": at(1, 100), "b": at(1, 95), "c": at(1, 97)}, 95},
		{"the primary counts too", one, map[string]Position{"a": at(1, 90), "b": at(1, 95), "c": at(1, 97)}, 90},
		{"a replica outside the sync set counts", one, map[string]Position{"a": at(1, 100), "b": at(1, 95), "c": at(1, 3)}, 3},
		{"a member has not reported to this leader", one, map[string]Position{"a": at(1, 100), "b": at(1, 95)}, 0},
		{"no positions at all (new leader)", one, map[string]Position{}, 0},
		{"a position never received", one, map[string]Position{"a": at(1, 100), "b": at(1, 95), "c": {Report: manager.Report{DurableSeqno: 97}}}, 0},
		{"an empty log needs everything", one, map[string]Position{"a": at(1, 100), "b": at(1, 95), "c": at(0, 0)}, 0},
		{"positions of non-members are ignored", one, map[string]Position{"a": at(1, 100), "b": at(1, 95), "c": at(1, 97), "x": at(1, 1)}, 95},
		{"all in the current epoch", three, map[string]Position{"a": at(3, 300), "b": at(3, 290), "c": at(3, 310)}, 290},
		// a's last record is of epoch 1, and epoch 2 began at 101: a's log
		// may fork from the current one anywhere after 100.
		{"an old epoch's tail: the fork point", three, map[string]Position{"a": at(1, 150), "b": at(3, 290), "c": at(3, 310)}, 100},
		{"an old epoch, durable below the fork point", three, map[string]Position{"a": at(1, 60), "b": at(3, 290), "c": at(3, 310)}, 60},
		{"epoch 2's tail forks after 200", three, map[string]Position{"a": at(3, 300), "b": at(2, 250), "c": at(3, 310)}, 200},
		{"epoch history does not cover a member's epoch", short, map[string]Position{"a": at(3, 300), "b": at(2, 250), "c": at(3, 310)}, 0},
	} {
		if got := retainFrom(tc.st, tc.pos); got != tc.want {
			t.Errorf("%s: retainFrom = %d, want %d", tc.name, got, tc.want)
		}
	}
	// The assignment carries it.
	if a := assignment(one, "b", "m1", nil, 95); a.GetRetainFromSeqno() != 95 {
		t.Errorf("assignment carries retain_from_seqno %d, want 95", a.GetRetainFromSeqno())
	}
}
