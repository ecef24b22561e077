package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

// cli runs the quire CLI in-process against the test managers.
type cli struct {
	t     *testing.T
	flags []string
}

func newCLI(t *testing.T, c *managertest.Cluster) *cli {
	f := c.Files("operator")
	return &cli{t: t, flags: []string{
		"--managers", strings.Join(c.Addrs(), ","), "--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key, "--timeout", "10s",
	}}
}

// run runs args (the command and its arguments) with the cluster flags
// appended and returns stdout and the error.
func (q *cli) run(args ...string) (string, error) {
	var out bytes.Buffer
	err := run(append(args, q.flags...), &out, io.Discard)
	return out.String(), err
}

func (q *cli) ok(args ...string) string {
	q.t.Helper()
	out, err := q.run(args...)
	if err != nil {
		q.t.Fatalf("quire %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func TestClusterCommands(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	q := newCLI(t, c)
	for _, m := range [][]string{
		{"--id", "a", "--mysql", "127.0.0.1:33061", "--agent", "127.0.0.1:7401", "--priority", "2"},
		{"--id", "b", "--mysql", "127.0.0.1:33062", "--agent", "127.0.0.1:7402"},
		{"--id", "c", "--mysql", "127.0.0.1:33063", "--agent", "127.0.0.1:7403", "--no-primary"},
	} {
		if out := q.ok(append([]string{"members", "add"}, m...)...); !strings.Contains(out, "added "+m[1]) {
			t.Errorf("members add: %q", out)
		}
	}
	if out := q.ok("init", "--primary", "a", "--sync-set", "b,c"); !strings.Contains(out, "epoch 1: primary a, sync set b,c") {
		t.Errorf("init: %q", out)
	}
	if out := q.ok("set-k", "1"); !strings.Contains(out, "k is 1") {
		t.Errorf("set-k: %q", out)
	}
	if out := q.ok("set-policy", "degrade"); out != "policy is degrade\n" {
		t.Errorf("set-policy: %q", out)
	}
	out := q.ok("members")
	for _, want := range []string{"ID ", "a ", "127.0.0.1:33062", "MAY BE PRIMARY"} {
		if !strings.Contains(out, want) {
			t.Errorf("members list lacks %q:\n%s", want, out)
		}
	}

	// The agents heartbeat, each as itself; status shows their positions.
	agent := c.Client("a")
	ctx := managertest.Context(t)
	if _, err := agent.Heartbeat(ctx, manager.Report{NodeID: "a", Role: manager.RolePrimary, Epoch: 1, LastEpoch: 1,
		DatabaseHealthy: true, DurableSeqno: 42, CommitIndex: 40}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client("b").Heartbeat(ctx, manager.Report{NodeID: "b", Role: manager.RoleReplica, Epoch: 1, LastEpoch: 1,
		DatabaseHealthy: true, ReadOnly: true, DurableSeqno: 40, AppliedSeqno: 39}); err != nil {
		t.Fatal(err)
	}

	raw := q.ok("status", "--json")
	var js map[string]any
	if err := json.Unmarshal([]byte(raw), &js); err != nil {
		t.Fatalf("status --json does not parse: %v\n%s", err, raw)
	}
	for _, key := range []string{"epoch", "primary", "k", "policy", "sync_set", "commit_seqno", "nodes", "leader", "members"} {
		if _, ok := js[key]; !ok {
			t.Errorf("status --json lacks %q", key)
		}
	}
	if js["epoch"] != 1.0 || js["primary"] != "a" || js["k"] != 1.0 || js["policy"] != "degrade" || js["commit_seqno"] != 40.0 {
		t.Errorf("status --json: epoch %v primary %v k %v policy %v commit_seqno %v", js["epoch"], js["primary"], js["k"], js["policy"], js["commit_seqno"])
	}
	nodes, _ := js["nodes"].([]any)
	if len(nodes) != 3 {
		t.Fatalf("status --json nodes: %v", js["nodes"])
	}
	for _, n := range nodes {
		n := n.(map[string]any)
		for _, key := range []string{"id", "role", "healthy", "durable_seqno", "applied_seqno", "mysql", "lag_tx", "in_sync_set"} {
			if _, ok := n[key]; !ok {
				t.Errorf("status --json node %v lacks %q", n["id"], key)
			}
		}
		if n["id"] == "b" && (n["durable_seqno"] != 40.0 || n["applied_seqno"] != 39.0 || n["healthy"] != true ||
			n["mysql"] != "127.0.0.1:33062" || n["lag_tx"] != 2.0 || n["role"] != "replica") {
			t.Errorf("status --json node b: %v", n)
		}
	}

	out = q.ok("status")
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "epoch 1  primary a  k 1  policy degrade  degraded no  commit seqno 40  leader m") {
		t.Errorf("status header: %q", lines[0])
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "NODE ROLE EPOCH HEALTHY DURABLE APPLIED LAG(TX) LAG(S) SYNC HEARTBEAT" {
		t.Errorf("status columns: %q", lines[1])
	}
	if f := strings.Fields(lines[3]); len(f) < 9 || strings.Join(f[:9], " ") != "b replica 1 yes 40 39 2 - yes" {
		t.Errorf("status row b: %q", lines[3])
	}
	if f := strings.Fields(lines[4]); len(f) < 10 || strings.Join(f, " ") != "c replica - no - - - - yes never" {
		t.Errorf("status row c: %q", lines[4])
	}

	// Changing and removing members.
	if out := q.ok("members", "update", "--id", "b", "--priority", "7"); !strings.Contains(out, "updated b") {
		t.Errorf("members update: %q", out)
	}
	ms, err := c.Client("operator").Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ms[1].ID != "b" || ms[1].Priority != 7 || ms[1].MySQLAddr != "127.0.0.1:33062" || !ms[1].MayBePrimary || ms[2].MayBePrimary {
		t.Errorf("members after update: %+v", ms)
	}
	q.ok("set-sync-set", "b")
	if out := q.ok("members", "remove", "--id", "c"); !strings.Contains(out, "removed c; 2 members") {
		t.Errorf("members remove: %q", out)
	}
	timeout := "2s"
	if out := q.ok("set-settings", "--failover-timeout", timeout); !strings.Contains(out, "failover timeout 2s") {
		t.Errorf("set-settings: %q", out)
	}
	var st manager.ClusterState
	if err := json.Unmarshal([]byte(q.ok("set-k", "0", "--json")), &st); err != nil || st.K != 0 || st.FailoverTimeout != 2*time.Second {
		t.Errorf("set-k --json: %v %+v", err, st)
	}
}

// Errors from the managers are one clear line and not usage errors; bad
// invocations are usage errors.
func TestClusterCommandErrors(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	q := newCLI(t, c)
	q.ok("members", "add", "--id", "a", "--mysql", "127.0.0.1:33061", "--agent", "127.0.0.1:7401")
	q.ok("members", "add", "--id", "b", "--mysql", "127.0.0.1:33062", "--agent", "127.0.0.1:7402")
	q.ok("init", "--primary", "a")
	for _, tc := range []struct {
		args    []string
		mention []string
	}{
		{[]string{"set-k", "5"}, []string{"k=5", "exceeds the 1 members"}},
		{[]string{"set-policy", "lax"}, []string{`policy="lax"`, "unknown policy"}},
		{[]string{"set-sync-set", "b,zz"}, []string{`"zz"`, "not a member"}},
		{[]string{"members", "add", "--id", "b", "--mysql", "127.0.0.1:1", "--agent", "127.0.0.1:2"}, []string{`"b"`, "already a member"}},
		{[]string{"members", "add", "--id", "d", "--mysql", "nohost", "--agent", "127.0.0.1:2"}, []string{"mysql_addr", "host:port"}},
		{[]string{"members", "remove", "--id", "zz"}, []string{`"zz"`, "not a member"}},
		{[]string{"members", "update", "--id", "zz"}, []string{`"zz"`, "not a member"}},
		{[]string{"init", "--primary", "b"}, []string{"already initialised"}},
		{[]string{"ack-failover"}, []string{"no automatic failover"}},
	} {
		out, err := q.run(tc.args...)
		if err == nil {
			t.Errorf("quire %s: no error (%q)", strings.Join(tc.args, " "), out)
			continue
		}
		if errors.Is(err, errUsage) {
			t.Errorf("quire %s: a usage error: %v", strings.Join(tc.args, " "), err)
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") {
			t.Errorf("quire %s: error is more than one line: %q", strings.Join(tc.args, " "), msg)
		}
		for _, m := range tc.mention {
			if !strings.Contains(msg, m) {
				t.Errorf("quire %s: error %q does not mention %q", strings.Join(tc.args, " "), msg, m)
			}
		}
	}
	for _, args := range [][]string{
		{"set-k"}, {"set-k", "two"}, {"set-k", "1", "2"}, {"set-policy"}, {"members", "frob"}, {"members", "add", "--mysql", "h:1"},
		{"init"}, {"set-settings"}, {"status", "--bogus"}, {"status", "--insecure"},
	} {
		if _, err := q.run(args...); !errors.Is(err, errUsage) {
			t.Errorf("quire %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
	// Without managers or TLS settings.
	for _, args := range [][]string{{"status"}, {"status", "--managers", "127.0.0.1:1"}} {
		t.Setenv("QUIRE_MANAGERS", "")
		t.Setenv("QUIRE_TLS_CA", "")
		if err := run(args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("quire %s: %v, want a usage error", strings.Join(args, " "), err)
		}
	}
}

// TestHistoryCommand: `quire history` prints the decision log and the
// epochs; --json the same as data. The commands go to a follower, which
// forwards them: the log still names the operator.
func TestHistoryCommand(t *testing.T) {
	c := managertest.Start(t, 3, managertest.Options{})
	q := newCLI(t, c)
	follower := c.Addrs()[(c.Leader()+1)%3]
	for i, f := range q.flags {
		if f == "--managers" {
			q.flags[i+1] = follower
		}
	}
	q.ok("members", "add", "--id", "a", "--mysql", "127.0.0.1:33061", "--agent", "127.0.0.1:7401")
	q.ok("members", "add", "--id", "b", "--mysql", "127.0.0.1:33062", "--agent", "127.0.0.1:7402")
	q.ok("init", "--primary", "a", "--sync-set", "b")
	out := q.ok("history")
	for _, want := range []string{"promotion  epoch 1  a by operator: cluster initialised with primary a",
		"EPOCH  PRIMARY  FIRST SEQNO", "1      a        1"} {
		if !strings.Contains(out, want) {
			t.Errorf("history lacks %q:\n%s", want, out)
		}
	}
	var h manager.History
	if err := json.Unmarshal([]byte(q.ok("history", "--json")), &h); err != nil {
		t.Fatal(err)
	}
	if len(h.Decisions) != 1 || h.Decisions[0].Kind != "promotion" || len(h.Epochs) != 1 || h.Epochs[0].Primary != "a" {
		t.Fatalf("history --json: %+v", h)
	}
}

func TestPrintHistory(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h := manager.History{
		Decisions: []manager.Decision{
			{At: at, Kind: "detection", Epoch: 1, Node: "a", By: "m1", Reason: "primary a: its agent reports the database gone"},
			{At: at.Add(time.Second), Kind: "refusal", Epoch: 1, Node: "b", By: "m1", Reason: "election refused: positions from 1 of 2"},
		},
		Epochs: []manager.EpochEntry{
			{Epoch: 1, Primary: "a", FirstSeqno: 1},
			{Epoch: 2, Primary: "b", FirstSeqno: 11, At: at, Automatic: true, Certificate: &manager.Certificate{
				CommitIndex: 9, CommitIndexFrom: "a", PrimarySeqno: 10, PrimaryEpoch: 1,
				Positions: map[string]string{"c": "1/9", "b": "1/10"}, LossPossibleSince: 8}},
		},
		LastFailover: &manager.Failover{At: at, Epoch: 2, From: "a", To: "b"},
	}
	var out bytes.Buffer
	if err := printHistory(&out, h); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"2026-03-01T12:00:00.000Z  detection  epoch 1  a by m1: primary a: its agent reports the database gone\n",
		"2026-03-01T12:00:01.000Z  refusal    epoch 1  b by m1: election refused",
		"2      b        11           2026-03-01T12:00:00Z  yes        commit index 9 (a), new primary at 1/10; positions b 1/10, c 1/9; LOSS POSSIBLE from seqno 8 (degraded)",
		"last automatic failover 2026-03-01T12:00:00Z: epoch 2, a -> b; not acknowledged (quire ack-failover)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("history lacks %q:\n%s", want, out.String())
		}
	}
}

// TestPrintStatusFailover: the failover driver's state is listed after the
// table when it is neither healthy nor off.
func TestPrintStatusFailover(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC)
	st := manager.Status{ClusterState: manager.ClusterState{Epoch: 1, Primary: "a", Policy: "strict"},
		Nodes: []manager.NodeStatus{{ID: "a", Role: manager.RolePrimary}}}
	for _, tt := range []struct {
		f    *manager.FailoverStatus
		want string
	}{
		{nil, ""},
		{&manager.FailoverStatus{Automatic: true, State: "healthy", Reason: "primary a is healthy"}, ""},
		{&manager.FailoverStatus{State: "off"}, ""},
		{&manager.FailoverStatus{Automatic: true, State: "refused", Reason: "election refused: missing c", Since: now.Add(-2 * time.Second)},
			"failover: refused (for 2.0s): election refused: missing c\n"},
	} {
		st.Failover = tt.f
		var out bytes.Buffer
		if err := printStatus(&out, st, now); err != nil {
			t.Fatal(err)
		}
		has := strings.Contains(out.String(), "failover:")
		if tt.want == "" && has || tt.want != "" && !strings.HasSuffix(out.String(), tt.want) {
			t.Errorf("status with %+v:\n%s\nwant the failover line %q", tt.f, out.String(), tt.want)
		}
	}
}
