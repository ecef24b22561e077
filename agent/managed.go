package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/config"
	"github.com/quire-ha/quire/localdb"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/semisync"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

// newManagerClient builds the client of the managers from the agent's
// configuration. It fails at start-up, not later: an agent whose TLS files
// cannot be used must not run on as if it were managed.
func newManagerClient(cfg *config.Agent, log *slog.Logger, revoked *certs.RevocationList) (*manager.Client, error) {
	ccfg := manager.ClientConfig{Addrs: cfg.Managers, Logger: log, Insecure: cfg.TLS.InsecurePlaintext}
	if !cfg.TLS.InsecurePlaintext {
		tc, err := certs.ClientConfig(certs.Files{CA: cfg.TLS.CAFile, Cert: cfg.TLS.CertFile, Key: cfg.TLS.KeyFile}, "")
		if err != nil {
			return nil, fmt.Errorf("agent: managers: TLS: %w", err)
		}
		certs.RequirePeer(tc, certs.WantRole(certs.RoleManager)) // only managers give orders
		certs.CheckRevoked(tc, revoked)
		ccfg.TLS = tc
	}
	cli, err := manager.NewClient(ccfg)
	if err != nil {
		return nil, fmt.Errorf("agent: managers: %w", err)
	}
	return cli, nil
}

// refused reports whether the managers refused a heartbeat for what it
// says (not for being unreachable): the agent registers again.
func refused(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.FailedPrecondition, codes.PermissionDenied:
		return true
	}
	return false
}

// heartbeatTimeout bounds one heartbeat call, retries included.
func (a *Agent) heartbeatTimeout() time.Duration {
	return max(2*a.cfg.Replication.Heartbeat, 2*time.Second)
}

// runManaged registers with the managers and heartbeats until ctx ends.
// Each answer is stored and handed to the follower (follow), which takes
// the assigned role off this goroutine: a slow or failing role change never
// delays or stops heartbeats. A refused heartbeat makes the agent register
// again.
func (a *Agent) runManaged(ctx context.Context) {
	kick := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() { defer close(done); a.follow(ctx, kick) }()
	defer func() { <-done }()
	store := func(asg manager.Assignment, seq uint64) {
		a.mu.Lock()
		a.asg, a.hasAsg, a.asgSeq = asg, true, seq
		a.mu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	mysqlAddr := net.JoinHostPort(a.cfg.MySQL.Host, fmt.Sprint(a.cfg.MySQL.Port))
	t := time.NewTicker(a.cfg.Replication.Heartbeat)
	defer t.Stop()
	registered := false
	var b backoff
	for {
		if !registered {
			rctx, cancel := context.WithTimeout(ctx, a.heartbeatTimeout())
			sent := time.Now()
			asg, err := a.mcli.RegisterAgent(rctx, manager.Registration{NodeID: a.cfg.NodeID, AgentAddr: a.advertisedAgentAddr(), MySQLAddr: mysqlAddr})
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				wait := b.Next()
				a.log.Warn("managers: registration failed; retrying", "err", err, "in", wait)
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				continue
			}
			b.Reset()
			registered = true
			a.renewLease(asg, sent)
			a.log.Info("registered with the managers", "leader", asg.Leader, "role", asg.Role, "epoch", asg.Epoch)
			for _, w := range asg.Warnings {
				a.log.Warn("managers: " + w)
			}
			store(asg, a.hbSeq.Load())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.hbNow:
		}
		r := a.report(ctx)
		seq := a.hbSeq.Add(1)
		hctx, cancel := context.WithTimeout(ctx, a.heartbeatTimeout())
		sent := time.Now()
		asg, err := a.mcli.Heartbeat(hctx, r)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if refused(err) {
				a.log.Error("managers refused the heartbeat; registering again", "err", err)
				registered = false
			} else {
				a.log.Warn("managers: heartbeat failed", "err", err)
			}
			continue
		}
		a.renewLease(asg, sent)
		store(asg, seq)
	}
}

// probeTimeout bounds the heartbeat's database probe, apart from the
// heartbeat call's own deadline.
const probeTimeout = time.Second

// report is this agent's heartbeat. Its epoch is the newest the agent
// knows: its role's, or its log's last record's when higher (an agent that
// restarted has no role yet, but its log remembers).
func (a *Agent) report(ctx context.Context) manager.Report {
	st := a.Status()
	r := manager.Report{
		NodeID: a.cfg.NodeID, Role: manager.Role(st.Role.Kind), Epoch: max(st.Role.Epoch, st.LastEpoch),
		DurableSeqno: st.DurableSeqno, LastEpoch: st.LastEpoch, CommitIndex: st.CommitSeqno,
		Error: st.errorText(), Degraded: a.wantDegraded.Load() != 0,
	}
	if st.Apply != nil {
		r.AppliedSeqno = st.Apply.AppliedSeqno
	}
	if len(r.Error) > manager.MaxErrorLen {
		r.Error = r.Error[:manager.MaxErrorLen]
	}
	ro, err := localdb.Probe(ctx, a.db, probeTimeout)
	if err == nil {
		r.DatabaseHealthy, r.ReadOnly = true, ro
		a.dbSeen.Store(time.Now().UnixNano())
	} else {
		a.dbSeen.Store(-1)
	}
	r.DatabaseGone = localdb.Gone(err)
	a.mu.Lock()
	recv := a.recv
	a.mu.Unlock()
	if st.Role.Kind == RoleReplica && recv != nil {
		r.PrimaryStream, r.StreamLost = recv.Stream()
	}
	return r
}

// follow takes the role the managers assign, every time kick fires and,
// while the last attempt failed, again after a backoff: an assignment is
// followed until it is carried out or replaced, never given up.
func (a *Agent) follow(ctx context.Context, kick <-chan struct{}) {
	var b backoff
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-retry:
		}
		asg, ok := a.assignment()
		if !ok {
			continue
		}
		err := a.followAssignment(ctx, asg)
		a.mu.Lock()
		a.followErr = err
		a.mu.Unlock()
		if err == nil {
			b.Reset()
			retry = nil
			continue
		}
		if ctx.Err() != nil {
			return
		}
		wait := b.Next()
		a.sup.follow.Inc()
		a.log.Error("managers: could not take the assigned role; trying again", "role", asg.Role, "epoch", asg.Epoch, "err", err, "retry_in", wait)
		retry = time.After(wait)
	}
}

// followTimeout bounds one attempt to take an assigned role (promotion
// applies the whole local log first, which may take a while).
const followTimeout = 5 * time.Minute

// followAssignment carries out what asg implies for the agent now.
func (a *Agent) followAssignment(ctx context.Context, asg manager.Assignment) error {
	a.mu.Lock()
	cur, gate := a.role, a.gate
	a.mu.Unlock()

	if gate != nil && cur.Kind == RolePrimary && asg.Role == manager.RolePrimary && asg.Epoch == cur.Epoch {
		gate.follow(specFromAssignment(asg))
	}
	plan := Follow(cur, asg)
	if plan.Ignore != "" {
		if !a.ignored.Swap(true) {
			a.log.Warn("managers: assignment not followed", "why", plan.Ignore)
		}
		return nil
	}
	a.ignored.Store(false)
	if !plan.Change {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, followTimeout)
	defer cancel()
	a.log.Warn("managers assign a new role", "from", cur.Kind, "from_epoch", cur.Epoch, "to", plan.Next.Kind, "epoch", plan.Next.Epoch, "primary_agent", plan.Next.PrimaryAgent)
	if plan.Fence {
		if err := a.SetRole(Role{Kind: RoleNone, Epoch: plan.Next.Epoch}); err != nil {
			return err
		}
		killed, err := a.fenceLocal(ctx)
		if err != nil {
			return fmt.Errorf("fence: %w", err)
		}
		a.log.Warn("fenced: a newer term has another primary", "sessions_killed", killed)
	}
	switch plan.Next.Kind {
	case RolePrimary:
		return a.Promote(ctx, plan.Next.Epoch, 0)
	case RoleReplica:
		return a.Repoint(ctx, plan.Next.Epoch, plan.Next.PrimaryAgent, nil)
	}
	return nil
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
// assignment that carries the marker lets the gate acknowledge early. The
// marker counts only in an answer to a heartbeat that already carried the
// wish (so the leader had seen it: it never clears a marker a primary
// still asks for), and only if it covers since: a marker left from an
// earlier episode, which the leader may be clearing, is not trusted.
func (a *Agent) recordMarker(epoch, since uint64) error {
	if a.wantDegraded.Load() != since {
		a.wantDegraded.Store(since)
		a.askedSeq.Store(a.hbSeq.Load() + 1)
	}
	a.mu.Lock()
	asg, ok, seq := a.asg, a.hasAsg, a.asgSeq
	a.mu.Unlock()
	if ok && markerCurrent(asg, seq, a.askedSeq.Load(), epoch, since) {
		a.log.Error("DEGRADED (recorded by the managers): commits are acknowledged WITHOUT K sync-set replicas. A failover may lose transactions from this seqno on.",
			"async_since", asg.Degraded.AsyncSince)
		return nil
	}
	return errMarkerPending
}

// markerCurrent decides whether assignment asg, the answer to heartbeat
// number seq, confirms the degraded marker the primary of epoch asked for
// from heartbeat number asked on, for acknowledging from seqno since.
func markerCurrent(asg manager.Assignment, seq, asked, epoch, since uint64) bool {
	return asg.Degraded != nil && asg.Epoch == epoch && asg.Role == manager.RolePrimary &&
		asked > 0 && seq >= asked && asg.Degraded.AsyncSince <= since
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
