package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/semisync"
)

// Plan is what the agent must do to match the managers' assignment.
type Plan struct {
	// Change is false when the agent already has the assigned role.
	Change bool
	// Next is the role to take.
	Next Role
	// Fence: the agent is primary and must stop being one first (read-only,
	// client sessions killed) — a newer term made someone else primary.
	Fence bool
	// Ignore names why an assignment was not followed (it is older than
	// what the agent knows), empty otherwise.
	Ignore string
}

// Follow decides how an agent in role cur follows an assignment. It is pure:
// the heartbeat loop carries the plan out.
func Follow(cur Role, asg manager.Assignment) Plan {
	want := Role{Kind: string(asg.Role), Epoch: asg.Epoch}
	if asg.Role == manager.RoleReplica {
		want.PrimaryAgent = asg.PrimaryAgentAddr
	}
	switch {
	case asg.Role == manager.RoleNone || asg.Epoch == 0:
		// No primary yet: keep what we do (a static role, or nothing).
		return Plan{}
	case asg.Epoch < cur.Epoch:
		return Plan{Ignore: fmt.Sprintf("assignment of epoch %d is older than this agent's epoch %d", asg.Epoch, cur.Epoch)}
	case asg.Role == manager.RoleReplica && asg.PrimaryAgentAddr == "":
		return Plan{Ignore: "replica assignment without the primary agent's address"}
	case want == cur:
		return Plan{}
	}
	return Plan{Change: true, Next: want, Fence: cur.Kind == RolePrimary && want.Kind != RolePrimary}
}

// gateSpec is what the ack gate counts: the recorded sync set, K, policy.
type gateSpec struct {
	Members []string
	K       int
	Policy  string
}

// specFromAssignment reads the gate's settings from an assignment.
func specFromAssignment(asg manager.Assignment) gateSpec {
	return gateSpec{Members: slices.Clone(asg.SyncSet), K: asg.K, Policy: asg.Policy}
}

// gateSpec returns the settings for a new gate: the managers' when the
// agent has managers, its configuration's otherwise.
func (a *Agent) currentGateSpec() gateSpec {
	if a.managed() {
		if asg, ok := a.assignment(); ok {
			return specFromAssignment(asg)
		}
	}
	rc := a.cfg.Replication
	return gateSpec{Members: slices.Clone(rc.SyncSet), K: rc.K, Policy: rc.Policy}
}

func (a *Agent) managed() bool { return len(a.cfg.Managers) > 0 }

func (a *Agent) assignment() (manager.Assignment, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asg, a.hasAsg
}

// advertisedAgentAddr is the gRPC address other agents dial: the listen
// address, with a wildcard host replaced by this host's name.
func (a *Agent) advertisedAgentAddr() string {
	host, port, err := net.SplitHostPort(a.GRPCAddr())
	if err != nil {
		return a.GRPCAddr()
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// runManaged registers with the managers and heartbeats until ctx ends,
// following the role each answer assigns.
func (a *Agent) runManaged(ctx context.Context) {
	ccfg := manager.ClientConfig{Addrs: a.cfg.Managers, Logger: a.log, Insecure: a.cfg.TLS.InsecurePlaintext}
	if !a.cfg.TLS.InsecurePlaintext {
		tc, err := certs.ClientConfig(certs.Files{CA: a.cfg.TLS.CAFile, Cert: a.cfg.TLS.CertFile, Key: a.cfg.TLS.KeyFile}, "")
		if err != nil {
			a.log.Error("managers: TLS", "err", err)
			return
		}
		certs.RequirePeer(tc, certs.WantRole(certs.RoleManager)) // only managers give orders
		certs.CheckRevoked(tc, a.revoked)
		ccfg.TLS = tc
	}
	cli, err := manager.NewClient(ccfg)
	if err != nil {
		a.log.Error("managers: client", "err", err)
		return
	}
	defer cli.Close()
	mysqlAddr := net.JoinHostPort(a.cfg.MySQL.Host, fmt.Sprint(a.cfg.MySQL.Port))
	for {
		asg, err := cli.RegisterAgent(ctx, manager.Registration{NodeID: a.cfg.NodeID, AgentAddr: a.advertisedAgentAddr(), MySQLAddr: mysqlAddr})
		if err == nil {
			a.log.Info("registered with the managers", "leader", asg.Leader, "role", asg.Role, "epoch", asg.Epoch)
			for _, w := range asg.Warnings {
				a.log.Warn("managers: " + w)
			}
			a.apply(ctx, asg)
			break
		}
		a.log.Warn("managers: registration failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	t := time.NewTicker(a.cfg.Replication.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		asg, err := cli.Heartbeat(hctx, a.report(hctx))
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("managers: heartbeat failed", "err", err)
			}
			continue
		}
		a.apply(ctx, asg)
	}
}

// report is this agent's heartbeat.
func (a *Agent) report(ctx context.Context) manager.Report {
	st := a.Status()
	r := manager.Report{
		NodeID: a.cfg.NodeID, Role: manager.Role(st.Role.Kind), Epoch: st.Role.Epoch,
		DurableSeqno: st.DurableSeqno, LastEpoch: st.LastEpoch, CommitIndex: st.CommitSeqno,
		Error: st.RoleError, Degraded: a.wantDegraded.Load() != 0,
	}
	if st.Apply != nil {
		r.AppliedSeqno = st.Apply.AppliedSeqno
	}
	if len(r.Error) > manager.MaxErrorLen {
		r.Error = r.Error[:manager.MaxErrorLen]
	}
	if err := a.db.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&r.ReadOnly); err == nil {
		r.DatabaseHealthy = true
	}
	return r
}

// apply stores the assignment and carries out what it implies.
func (a *Agent) apply(ctx context.Context, asg manager.Assignment) {
	a.mu.Lock()
	a.asg, a.hasAsg = asg, true
	cur, gate := a.role, a.gate
	a.mu.Unlock()

	if gate != nil && cur.Kind == RolePrimary && asg.Role == manager.RolePrimary && asg.Epoch == cur.Epoch {
		gate.follow(specFromAssignment(asg))
	}
	plan := Follow(cur, asg)
	if plan.Ignore != "" {
		a.log.Warn("managers: assignment not followed", "why", plan.Ignore)
		return
	}
	if !plan.Change {
		return
	}
	a.log.Warn("managers assign a new role", "from", cur.Kind, "from_epoch", cur.Epoch, "to", plan.Next.Kind, "epoch", plan.Next.Epoch, "primary_agent", plan.Next.PrimaryAgent)
	var err error
	if plan.Fence {
		if err = a.SetRole(Role{Kind: RoleNone, Epoch: plan.Next.Epoch}); err == nil {
			var killed int
			killed, err = a.Fence(ctx)
			a.log.Warn("fenced: a newer term has another primary", "sessions_killed", killed, "err", err)
		}
	}
	if err == nil {
		switch plan.Next.Kind {
		case RolePrimary:
			err = a.Promote(ctx, plan.Next.Epoch, 0)
		case RoleReplica:
			err = a.Repoint(ctx, plan.Next.Epoch, plan.Next.PrimaryAgent, nil)
		}
	}
	if err != nil {
		a.log.Error("managers: could not take the assigned role", "role", plan.Next.Kind, "epoch", plan.Next.Epoch, "err", err)
	}
}

// follow brings a running gate to the managers' recorded sync set, K and
// policy. The managers record changes first, so each change reaches the
// gate as a recorded fact; facts that make the gate stricter are adopted at
// once, and any that would break an earlier acknowledgement are reported
// loudly by the gate (see semisync's "recorded out of order").
func (ag *ackGate) follow(spec gateSpec) {
	ag.mu.Lock()
	defer ag.mu.Unlock()
	st := ag.g.Status()
	have := map[string]bool{}
	for _, r := range st.Replicas {
		if r.Member {
			have[r.ID] = true
		}
	}
	for _, id := range spec.Members {
		if !have[id] {
			ag.log.Info("sync set: adding member", "replica", id)
			ag.check(ag.g.AddRecorded(id))
		}
	}
	for id := range have {
		if !slices.Contains(spec.Members, id) {
			ag.log.Warn("sync set: removing member", "replica", id)
			if err := ag.g.BeginRemove(id); err == nil {
				ag.check(ag.g.RemovalRecorded(id))
			} else {
				ag.check(err)
			}
		}
	}
	if spec.K != st.RecordedK {
		ag.log.Warn("K changes", "from", st.RecordedK, "to", spec.K)
		if err := ag.g.ProposeK(spec.K); err != nil {
			ag.check(err)
		} else {
			ag.check(ag.g.KRecorded(spec.K))
		}
	}
	if p, err := semisync.ParsePolicy(spec.Policy); err == nil && p != st.Policy {
		ag.check(ag.g.SetPolicy(p))
	}
	ag.step()
}

// recordMarker is the managed form of recording the degraded marker: the
// heartbeat reports the wish, the leader records it in Raft, and only an
// assignment that carries the marker lets the gate acknowledge early.
func (a *Agent) recordMarker(epoch, since uint64) error {
	a.wantDegraded.Store(since)
	a.mu.Lock()
	asg, ok := a.asg, a.hasAsg
	a.mu.Unlock()
	if ok && asg.Degraded != nil && asg.Epoch == epoch {
		a.log.Error("DEGRADED (recorded by the managers): commits are acknowledged WITHOUT K sync-set replicas. A failover may lose transactions from this seqno on.",
			"async_since", asg.Degraded.AsyncSince)
		return nil
	}
	return errMarkerPending
}

// errMarkerPending: the managers have not recorded the marker yet.
var errMarkerPending = errors.New("waiting for the managers to record the degraded marker")

// clearMarker stops asking for the marker; the managers clear it once the
// primary reports it no longer needs it.
func (a *Agent) clearMarker() error {
	a.wantDegraded.Store(0)
	a.log.Warn("no longer degraded: K sync-set replicas hold every acknowledged transaction again")
	return nil
}
