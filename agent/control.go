package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/localdb"
	"github.com/quire-ha/quire/semisync"
)

// control implements the AgentControl gRPC service on an Agent.
type control struct {
	agentpb.UnimplementedAgentControlServer
	a *Agent
}

func (c *control) status(ctx context.Context) *agentpb.AgentStatus {
	st := c.a.Status()
	out := &agentpb.AgentStatus{
		NodeId: st.Node, Role: st.Role.Kind, Epoch: st.Role.Epoch, PrimaryAgent: st.Role.PrimaryAgent,
		RoleError: st.RoleError, FirstSeqno: st.FirstSeqno, LastSeqno: st.LastSeqno, LastEpoch: st.LastEpoch,
		DurableSeqno: st.DurableSeqno, CommitSeqno: st.CommitSeqno, Serving: st.Serving, Version: st.Version,
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := c.a.db.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&out.ReadOnly); err == nil {
		out.DatabaseHealthy = true
	}
	return out
}

// Status implements agentpb.AgentControlServer.
func (c *control) Status(ctx context.Context, _ *agentpb.StatusRequest) (*agentpb.AgentStatus, error) {
	return c.status(ctx), nil
}

// Fence implements agentpb.AgentControlServer.
func (c *control) Fence(ctx context.Context, req *agentpb.FenceRequest) (*agentpb.AgentStatus, error) {
	c.a.log.Warn("fencing: stopping the primary role, read_only=ON, killing client sessions", "fencing_epoch", req.Epoch)
	// Stop serving first: no replica may count this node's records any more.
	if err := c.a.SetRole(Role{Kind: RoleNone, Epoch: max(req.Epoch, c.a.Status().Role.Epoch)}); err != nil {
		return nil, status.Errorf(codes.Internal, "fence: %v", err)
	}
	killed, err := c.a.Fence(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "fence: %v", err)
	}
	c.a.log.Warn("fenced", "sessions_killed", killed)
	return c.status(ctx), nil
}

// Fence makes the local database refuse client writes (localdb.Fence). It
// returns how many client sessions it killed.
func (a *Agent) Fence(ctx context.Context) (int, error) {
	return localdb.Fence(ctx, a.db)
}

// Drain implements agentpb.AgentControlServer.
func (c *control) Drain(ctx context.Context, req *agentpb.DrainRequest) (*agentpb.AgentStatus, error) {
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	target := req.Seqno
	if target == 0 {
		target = c.a.Status().CommitSeqno
	}
	ctx2, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.a.txl.WaitDurable(ctx2, target); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, status.Errorf(codes.DeadlineExceeded, "drain: seqno %d not reached within %s (durable %d)", target, timeout, c.a.txl.DurableSeqno())
		}
		return nil, status.Errorf(codes.Unavailable, "drain: %v", err)
	}
	// A replica is drained once its database holds the target, too.
	if err := c.a.waitApplied(ctx2, target); err != nil {
		applied := uint64(0)
		if ap := c.a.Status().Apply; ap != nil {
			applied = ap.AppliedSeqno
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, status.Errorf(codes.DeadlineExceeded, "drain: seqno %d not applied within %s (applied %d)", target, timeout, applied)
		}
		return nil, status.Errorf(codes.Unavailable, "drain: apply: %v (applied %d)", err, applied)
	}
	return c.status(ctx), nil
}

// Promote implements agentpb.AgentControlServer.
func (c *control) Promote(ctx context.Context, req *agentpb.PromoteRequest) (*agentpb.AgentStatus, error) {
	if req.Epoch == 0 {
		return nil, status.Error(codes.InvalidArgument, "promote: epoch must be at least 1")
	}
	if err := c.a.Promote(ctx, req.Epoch, req.ExpectLastSeqno); err != nil {
		return nil, err
	}
	return c.status(ctx), nil
}

// Promote makes the agent the primary of epoch: extraction of the new term
// starts (its start recorded), and only then the database opens for writes.
// expectLast, if not 0, must equal the log's last seqno. Errors carry gRPC
// status codes.
func (a *Agent) Promote(ctx context.Context, epoch, expectLast uint64) error {
	last, lastEpoch := a.txl.Last()
	if lastEpoch > epoch {
		return status.Errorf(codes.FailedPrecondition, "promote: this log already holds epoch %d, newer than %d", lastEpoch, epoch)
	}
	if expectLast != 0 && expectLast != last {
		return status.Errorf(codes.FailedPrecondition, "promote: the election expected last seqno %d, this log ends at %d", expectLast, last)
	}
	// The new primary's database must hold its whole log before it takes
	// writes: apply everything, the old term's uncommitted tail included.
	actx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	err := a.applyWholeLog(actx, last)
	cancel()
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "promote: could not apply the whole log up to seqno %d before opening writes: %v", last, err)
	}
	if err := a.SetRole(Role{Kind: RolePrimary, Epoch: epoch}); err != nil {
		return status.Errorf(codes.Internal, "promote: %v", err)
	}
	// Writes open only once extraction of the new term has recorded where
	// it starts; otherwise a write could slip past the log.
	deadline := time.Now().Add(30 * time.Second)
	for !a.serving.Load() {
		if err := a.roleError(); err != nil {
			return status.Errorf(codes.Internal, "promote: %v", err)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return status.Error(codes.DeadlineExceeded, "promote: extraction did not start within 30s")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	if _, err := a.db.ExecContext(ctx, "SET GLOBAL read_only = OFF"); err != nil {
		return status.Errorf(codes.Unavailable, "promote: SET GLOBAL read_only = OFF: %v", err)
	}
	a.log.Warn("promoted: writes open", "epoch", epoch, "first_seqno", last+1)
	return nil
}

// Repoint implements agentpb.AgentControlServer.
func (c *control) Repoint(ctx context.Context, req *agentpb.RepointRequest) (*agentpb.AgentStatus, error) {
	if req.Epoch == 0 || req.PrimaryAgent == "" {
		return nil, status.Error(codes.InvalidArgument, "repoint: epoch (≥ 1) and primary_agent are required")
	}
	var truncate *uint64
	if req.HasTruncate {
		truncate = &req.TruncateAfter
	}
	if err := c.a.Repoint(ctx, req.Epoch, req.PrimaryAgent, truncate); err != nil {
		return nil, err
	}
	return c.status(ctx), nil
}

// Repoint makes the agent a replica of the primary agent at addr in epoch:
// read_only=ON, optionally drop records after *truncate, stream. Errors
// carry gRPC status codes.
func (a *Agent) Repoint(ctx context.Context, epoch uint64, addr string, truncate *uint64) error {
	if _, err := a.db.ExecContext(ctx, "SET GLOBAL read_only = ON"); err != nil {
		return status.Errorf(codes.Unavailable, "repoint: SET GLOBAL read_only = ON: %v", err)
	}
	if err := a.SetRole(Role{Kind: RoleNone, Epoch: epoch}); err != nil {
		return status.Errorf(codes.Internal, "repoint: %v", err)
	}
	if truncate != nil {
		if err := a.txl.TruncateAfter(*truncate); err != nil {
			return status.Errorf(codes.FailedPrecondition, "repoint: truncate after %d: %v", *truncate, err)
		}
	}
	if err := a.SetRole(Role{Kind: RoleReplica, Epoch: epoch, PrimaryAgent: addr}); err != nil {
		return status.Errorf(codes.Internal, "repoint: %v", err)
	}
	return nil
}

func (a *Agent) roleError() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.roleErr
}

// SetSyncSet implements agentpb.AgentControlServer: it sets the primary's
// ack gate (members whose acks count, K, policy). Without managers this is
// how an operator changes them; with managers the heartbeat carries them.
func (c *control) SetSyncSet(ctx context.Context, req *agentpb.SetSyncSetRequest) (*agentpb.AgentStatus, error) {
	spec := gateSpec{Members: req.Members, K: int(req.K), Policy: req.Policy}
	if err := checkGateSpec(spec, c.a.cfg.NodeID); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "set sync set: %v", err)
	}
	c.a.mu.Lock()
	gate := c.a.gate
	c.a.mu.Unlock()
	if gate == nil {
		return nil, status.Error(codes.FailedPrecondition, "set sync set: this agent is not a serving primary")
	}
	gate.follow(spec)
	return c.status(ctx), nil
}

// checkGateSpec validates a sync set, K and policy.
func checkGateSpec(spec gateSpec, self string) error {
	seen := map[string]bool{}
	for _, m := range spec.Members {
		switch {
		case m == "":
			return errors.New("members: an empty member id")
		case m == self:
			return fmt.Errorf("members: %q is this node, the primary; the sync set lists replicas", m)
		case seen[m]:
			return fmt.Errorf("members: %q is listed twice", m)
		}
		seen[m] = true
	}
	if spec.K > len(spec.Members) {
		return fmt.Errorf("k=%d is larger than the sync set [%s]: commits could never be acknowledged", spec.K, strings.Join(spec.Members, ", "))
	}
	if _, err := semisync.ParsePolicy(spec.Policy); err != nil {
		return fmt.Errorf("policy: %q is not allowed (allowed: strict, degrade)", spec.Policy)
	}
	return nil
}

// SetChannels implements agentpb.AgentControlServer: it changes a
// replica's applier channel count (Agent.SetChannels).
func (c *control) SetChannels(ctx context.Context, req *agentpb.SetChannelsRequest) (*agentpb.SetChannelsResponse, error) {
	if req.Count == 0 {
		return nil, status.Errorf(codes.InvalidArgument, "set channels: count is required (1..%d)", MaxChannels)
	}
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx2, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := c.a.SetChannels(ctx2, int(min(req.Count, MaxChannels+1)))
	if err != nil {
		return nil, err
	}
	out := &agentpb.SetChannelsResponse{
		OldCount: uint32(res.OldCount), Count: uint32(res.Count), DrainedSeqno: res.DrainedSeqno,
		Running: res.Running, ConfigNote: res.ConfigNote, Status: c.status(ctx),
	}
	if res.ApplierErr != nil {
		out.ApplierError = res.ApplierErr.Error()
	}
	return out, nil
}
