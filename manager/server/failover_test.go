package server_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/managertest"
)

// The failover driver against real managers and fake agents: the test
// sends every node's heartbeats itself and answers the driver's
// AgentControl calls from a table.

// fakeAgents answers AgentControl calls for nodes a, b, c by their agent
// address and records the calls.
type fakeAgents struct {
	mu      sync.Mutex
	byAddr  map[string]string
	status  map[string]*agentpb.AgentStatus
	down    map[string]bool
	calls   []string
	promote func(node string, epoch, expect uint64) error
}

func newFakeAgents() *fakeAgents {
	f := &fakeAgents{byAddr: map[string]string{}, status: map[string]*agentpb.AgentStatus{}, down: map[string]bool{}}
	for i, id := range []string{"a", "b", "c"} {
		f.byAddr[member(id, i+1).AgentAddr] = id
		f.status[id] = &agentpb.AgentStatus{NodeId: id, DatabaseHealthy: true}
	}
	return f
}

func (f *fakeAgents) node(addr string, verb string, args ...any) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.byAddr[addr]
	call := verb + " " + id
	for _, a := range args {
		call += fmt.Sprintf(" %v", a)
	}
	f.calls = append(f.calls, call)
	if id == "" {
		return "", fmt.Errorf("no agent at %s", addr)
	}
	if f.down[id] {
		return "", fmt.Errorf("agent %s: connection refused", id)
	}
	return id, nil
}

func (f *fakeAgents) get(id string) *agentpb.AgentStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return proto.Clone(f.status[id]).(*agentpb.AgentStatus)
}

func (f *fakeAgents) set(id string, fn func(*agentpb.AgentStatus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f.status[id])
}

func (f *fakeAgents) setDown(id string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[id] = down
}

func (f *fakeAgents) called(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeAgents) Status(_ context.Context, addr string) (*agentpb.AgentStatus, error) {
	id, err := f.node(addr, "status")
	if err != nil {
		return nil, err
	}
	return f.get(id), nil
}

func (f *fakeAgents) Fence(_ context.Context, addr string, epoch uint64) (*agentpb.AgentStatus, error) {
	id, err := f.node(addr, "fence", epoch)
	if err != nil {
		return nil, err
	}
	return f.get(id), nil
}

func (f *fakeAgents) Promote(_ context.Context, addr string, epoch, expect uint64) (*agentpb.AgentStatus, error) {
	id, err := f.node(addr, "promote", epoch, expect)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	p := f.promote
	f.mu.Unlock()
	if p != nil {
		if err := p(id, epoch, expect); err != nil {
			return nil, err
		}
	}
	return f.get(id), nil
}

func (f *fakeAgents) Repoint(_ context.Context, addr string, epoch uint64, primary string) (*agentpb.AgentStatus, error) {
	id, err := f.node(addr, "repoint", epoch)
	if err != nil {
		return nil, err
	}
	return f.get(id), nil
}

func (f *fakeAgents) Close() error { return nil }

// heartbeats sends each node's report every 50ms until the test ends or
// the node is silenced.
type heartbeats struct {
	mu      sync.Mutex
	reports map[string]manager.Report
	silent  map[string]bool
}

func startHeartbeats(t *testing.T, cl *manager.Client, reports map[string]manager.Report) *heartbeats {
	h := &heartbeats{reports: reports, silent: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for id := range reports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				h.mu.Lock()
				r, silent := h.reports[id], h.silent[id]
				h.mu.Unlock()
				if silent {
					continue
				}
				hctx, hcancel := context.WithTimeout(ctx, 2*time.Second)
				cl.Heartbeat(hctx, r)
				hcancel()
			}
		}()
	}
	return h
}

func (h *heartbeats) update(id string, fn func(*manager.Report)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.reports[id]
	fn(&r)
	h.reports[id] = r
}

func (h *heartbeats) silence(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.silent[id] = true
}

// failoverCluster is three managers with automatic failover and fake
// agents; a is the primary of epoch 1 with sync set {b, c} and K 1; b holds
// seqno 10, c seqno 9, the commit index is 9.
func failoverCluster(t *testing.T) (*managertest.Cluster, *manager.Client, *fakeAgents, *heartbeats) {
	t.Helper()
	return failoverClusterAuto(t, true)
}

func failoverClusterAuto(t *testing.T, auto bool) (*managertest.Cluster, *manager.Client, *fakeAgents, *heartbeats) {
	t.Helper()
	fa := newFakeAgents()
	c := managertest.Start(t, 3, managertest.Options{Insecure: true, AutoFailover: auto, Agents: fa})
	cl := c.Client("operator")
	setup(t, cl)
	ctx := managertest.Context(t)
	timeout := 1 * time.Second
	if _, err := cl.SetSettings(ctx, manager.Settings{FailoverTimeout: &timeout}); err != nil {
		t.Fatal(err)
	}
	for id, last := range map[string]uint64{"a": 10, "b": 10, "c": 9} {
		fa.set(id, func(s *agentpb.AgentStatus) {
			s.LastSeqno, s.LastEpoch, s.DurableSeqno, s.CommitSeqno = last, 1, last, 9
		})
	}
	reports := map[string]manager.Report{
		"a": {NodeID: "a", Role: manager.RolePrimary, Epoch: 1, DatabaseHealthy: true, DurableSeqno: 10, LastEpoch: 1, CommitIndex: 9},
		"b": {NodeID: "b", Role: manager.RoleReplica, Epoch: 1, DatabaseHealthy: true, ReadOnly: true, DurableSeqno: 10, LastEpoch: 1, CommitIndex: 9, PrimaryStream: true},
		"c": {NodeID: "c", Role: manager.RoleReplica, Epoch: 1, DatabaseHealthy: true, ReadOnly: true, DurableSeqno: 9, LastEpoch: 1, CommitIndex: 9, PrimaryStream: true},
	}
	hb := startHeartbeats(t, cl, reports)
	waitStatus(t, cl, "the failover driver sees a healthy primary", func(st manager.Status) bool {
		return st.Failover != nil && (st.Failover.State == "healthy" || st.Failover.State == "off") && st.Failover.Reason == "primary a is healthy"
	})
	return c, cl, fa, hb
}

func waitStatus(t *testing.T, cl *manager.Client, what string, cond func(manager.Status) bool) manager.Status {
	t.Helper()
	var st manager.Status
	managertest.WaitFor(t, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		st, err = cl.Status(ctx)
		return err == nil && cond(st)
	})
	return st
}

func history(t *testing.T, cl *manager.Client) manager.History {
	t.Helper()
	h, err := cl.History(managertest.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func kinds(h manager.History) []string {
	var out []string
	for _, d := range h.Decisions {
		out = append(out, d.Kind)
	}
	return out
}

// TestFailoverFastPath: the primary's agent reports its database gone;
// the leader fails over at once to b, the most advanced sync-set member,
// with a certificate, and records every step.
func TestFailoverFastPath(t *testing.T) {
	_, cl, fa, hb := failoverCluster(t)
	fa.set("a", func(s *agentpb.AgentStatus) { s.DatabaseHealthy = false })
	hb.update("a", func(r *manager.Report) { r.DatabaseHealthy, r.DatabaseGone = false, true })
	st := waitStatus(t, cl, "epoch 2 with primary b", func(st manager.Status) bool { return st.Epoch == 2 })
	if st.Primary != "b" || !slices.Equal(st.SyncSet, []string{"c"}) {
		t.Fatalf("epoch 2: primary %s sync set %v, want b and [c]", st.Primary, st.SyncSet)
	}
	e := st.EpochHistory[1]
	if !e.Automatic || e.FirstSeqno != 11 || e.Certificate == nil || e.Certificate.PrimarySeqno != 10 || e.Certificate.CommitIndex < 9 {
		t.Fatalf("epoch entry %+v certificate %+v", e, e.Certificate)
	}
	if lf := st.LastFailover; lf == nil || lf.From != "a" || lf.To != "b" || lf.Epoch != 2 {
		t.Fatalf("last failover %+v", st.LastFailover)
	}
	managertest.WaitFor(t, "promote and fence calls", func() bool {
		return len(fa.called("promote b 2 10")) > 0 && len(fa.called("fence a 2")) > 0
	})
	// The fast path stopped the old primary's role in epoch 1 before it
	// collected positions.
	if len(fa.called("fence a 1")) == 0 {
		t.Errorf("the old primary was not fenced in its own epoch first; calls %v", fa.called(""))
	}
	managertest.WaitFor(t, "the promotion noted in the history", func() bool {
		h := history(t, cl)
		return slices.Contains(kinds(h), "note")
	})
	h := history(t, cl)
	if k := kinds(h); !slices.Equal(k[:3], []string{"promotion", "detection", "promotion"}) {
		t.Fatalf("decision kinds %v, want init, detection, promotion first", k)
	}
	if d := h.Decisions[1]; d.Node != "a" || !strings.Contains(d.Reason, "database gone") || d.By == "" {
		t.Errorf("detection %+v", d)
	}
	if d := h.Decisions[2]; d.Node != "b" || !strings.Contains(d.Reason, "promote b (1/10)") {
		t.Errorf("promotion %+v", d)
	}
}

// TestFailoverTooFewAnswers: c's agent does not answer; with K=1 both b and
// c must: the leader refuses, says why in the status and records it once.
func TestFailoverTooFewAnswers(t *testing.T) {
	_, cl, fa, hb := failoverCluster(t)
	fa.setDown("c", true)
	fa.set("a", func(s *agentpb.AgentStatus) { s.DatabaseHealthy = false })
	hb.update("a", func(r *manager.Report) { r.DatabaseHealthy, r.DatabaseGone = false, true })
	st := waitStatus(t, cl, "a refusal", func(st manager.Status) bool { return st.Failover.State == "refused" })
	for _, want := range []string{"positions from 1 of 2 sync-set members, need 2", "missing c", "connection refused"} {
		if !strings.Contains(st.Failover.Reason, want) {
			t.Errorf("reason %q does not mention %q", st.Failover.Reason, want)
		}
	}
	// The driver retries every second; the refusal is recorded once.
	n := len(fa.called("status c"))
	managertest.WaitFor(t, "two more attempts", func() bool { return len(fa.called("status c")) >= n+2 })
	if st, _ := cl.Status(managertest.Context(t)); st.Epoch != 1 {
		t.Fatalf("epoch %d after a refusal", st.Epoch)
	}
	refusals := 0
	for _, d := range history(t, cl).Decisions {
		if d.Kind == "refusal" {
			refusals++
		}
	}
	if refusals != 1 {
		t.Fatalf("%d refusals recorded, want 1: %+v", refusals, history(t, cl).Decisions)
	}
	// c answers again: the failover proceeds.
	fa.setDown("c", false)
	waitStatus(t, cl, "epoch 2", func(st manager.Status) bool { return st.Epoch == 2 && st.Primary == "b" })
}

// TestFailoverTimeout: the primary's agent stops heartbeating. While a
// replica still streams from it nothing happens; once both replicas lost
// their streams and the timeout passed, b is promoted.
func TestFailoverTimeout(t *testing.T) {
	_, cl, fa, hb := failoverCluster(t)
	fa.setDown("a", true)
	hb.silence("a")
	hb.update("b", func(r *manager.Report) { r.PrimaryStream, r.StreamLost = false, time.Second })
	waitStatus(t, cl, "suspect: c still streams", func(st manager.Status) bool {
		return st.Failover.State == "suspect" && strings.Contains(st.Failover.Reason, "c still stream(s) from it")
	})
	if st, _ := cl.Status(managertest.Context(t)); st.Epoch != 1 {
		t.Fatalf("failed over while c streams")
	}
	hb.update("c", func(r *manager.Report) { r.PrimaryStream, r.StreamLost = false, time.Second })
	st := waitStatus(t, cl, "epoch 2", func(st manager.Status) bool { return st.Epoch == 2 })
	if st.Primary != "b" {
		t.Fatalf("primary %s, want b", st.Primary)
	}
	h := history(t, cl)
	if d := h.Decisions[1]; d.Kind != "detection" || !strings.Contains(d.Reason, "replicas b, c lost their streams too") ||
		!strings.Contains(d.Reason, "does not answer the leader either") {
		t.Errorf("detection %+v", d)
	}
}

// TestFailoverShortAgentOutage: the primary's agent is silent for less than
// the timeout while its database lives: no failover.
func TestFailoverShortAgentOutage(t *testing.T) {
	_, cl, _, hb := failoverCluster(t)
	hb.silence("a")
	time.Sleep(700 * time.Millisecond) // the outage itself, shorter than the 1s timeout
	hb.mu.Lock()
	delete(hb.silent, "a")
	hb.mu.Unlock()
	waitStatus(t, cl, "healthy again", func(st manager.Status) bool { return st.Failover.State == "healthy" })
	st, err := cl.Status(managertest.Context(t))
	if err != nil || st.Epoch != 1 {
		t.Fatalf("epoch %d (err %v) after a short agent outage", st.Epoch, err)
	}
	if k := kinds(history(t, cl)); len(k) != 1 {
		t.Fatalf("decisions %v after a short outage, want only the init", k)
	}
}

// TestFailoverResumesAfterLeaderChange: the leader commits epoch 2 but b
// does not promote; the leader is stopped; the new leader tells b to
// promote again, with the certificate's expected seqno.
func TestFailoverResumesAfterLeaderChange(t *testing.T) {
	c, cl, fa, hb := failoverCluster(t)
	fa.mu.Lock()
	fa.promote = func(string, uint64, uint64) error { return errors.New("not yet") }
	fa.mu.Unlock()
	fa.set("a", func(s *agentpb.AgentStatus) { s.DatabaseHealthy = false })
	hb.update("a", func(r *manager.Report) { r.DatabaseHealthy, r.DatabaseGone = false, true })
	waitStatus(t, cl, "epoch 2", func(st manager.Status) bool { return st.Epoch == 2 && st.Failover.State == "promoting" })
	old := c.Leader()
	c.Stop(old)
	next := c.Leader()
	n := len(fa.called("promote b 2 10"))
	fa.mu.Lock()
	fa.promote = nil
	fa.mu.Unlock()
	managertest.WaitFor(t, "the new leader tells b to promote", func() bool { return len(fa.called("promote b 2 10")) > n })
	managertest.WaitFor(t, "the new leader notes the promotion", func() bool {
		for _, d := range history(t, cl).Decisions {
			if d.Kind == "note" && strings.Contains(d.Reason, "promotion continued by leader "+c.Managers[next].ID) {
				return true
			}
		}
		return false
	})
}

// TestFailoverNotConfirmed: the primary's heartbeat says its database is
// gone, but its agent, asked again, finds it healthy: no failover, and the
// refuted detection is noted.
func TestFailoverNotConfirmed(t *testing.T) {
	_, cl, _, hb := failoverCluster(t)
	hb.update("a", func(r *manager.Report) { r.DatabaseHealthy, r.DatabaseGone = false, true })
	managertest.WaitFor(t, "the refuted detection noted", func() bool {
		for _, d := range history(t, cl).Decisions {
			if d.Kind == "note" && strings.Contains(d.Reason, "detection not confirmed") && strings.Contains(d.Reason, "reports its database healthy") {
				return true
			}
		}
		return false
	})
	st, err := cl.Status(managertest.Context(t))
	if err != nil || st.Epoch != 1 {
		t.Fatalf("epoch %d (err %v) after a refuted detection", st.Epoch, err)
	}
	if k := kinds(history(t, cl)); slices.Contains(k, "detection") {
		t.Fatalf("a refuted detection was recorded as one: %v", k)
	}
}

// TestFailoverAutoOff: without failover.auto the leader finds the primary
// failed, says so and records it, and promotes nobody.
func TestFailoverAutoOff(t *testing.T) {
	_, cl, fa, hb := failoverClusterAuto(t, false)
	fa.set("a", func(s *agentpb.AgentStatus) { s.DatabaseHealthy = false })
	hb.update("a", func(r *manager.Report) { r.DatabaseHealthy, r.DatabaseGone = false, true })
	st := waitStatus(t, cl, "failed, automatic failover off", func(st manager.Status) bool {
		return st.Failover.State == "failed" && strings.Contains(st.Failover.Reason, "automatic failover is off")
	})
	if st.Epoch != 1 || st.Failover.Automatic {
		t.Fatalf("epoch %d automatic %t", st.Epoch, st.Failover.Automatic)
	}
	managertest.WaitFor(t, "the refusal recorded", func() bool { return slices.Contains(kinds(history(t, cl)), "refusal") })
	if calls := fa.called("promote"); len(calls) > 0 {
		t.Fatalf("promoted with automatic failover off: %v", calls)
	}
}

// TestFailoverPromotingCandidateErrors: while the new primary has not
// opened writes, the errors of the role it leaves (its database healthy)
// are not a new failure, however long they last.
func TestFailoverPromotingCandidateErrors(t *testing.T) {
	_, cl, fa, hb := failoverCluster(t)
	fa.mu.Lock()
	fa.promote = func(string, uint64, uint64) error { return errors.New("not yet") }
	fa.mu.Unlock()
	hb.update("b", func(r *manager.Report) { r.Error = "replica role: ship: the primary does not answer" })
	fa.set("a", func(s *agentpb.AgentStatus) { s.DatabaseHealthy = false })
	hb.update("a", func(r *manager.Report) { r.DatabaseHealthy, r.DatabaseGone = false, true })
	waitStatus(t, cl, "epoch 2 promoting", func(st manager.Status) bool { return st.Epoch == 2 && st.Failover.State == "promoting" })
	time.Sleep(2500 * time.Millisecond) // longer than the 1s failover timeout
	st := waitStatus(t, cl, "still promoting", func(st manager.Status) bool { return true })
	if st.Epoch != 2 || st.Failover.State != "promoting" {
		t.Fatalf("epoch %d failover %+v", st.Epoch, st.Failover)
	}
	for _, d := range history(t, cl).Decisions {
		if d.Epoch == 2 && (d.Kind == "detection" || d.Kind == "refusal") {
			t.Fatalf("the promoting candidate was judged failed: %+v", d)
		}
	}
}
