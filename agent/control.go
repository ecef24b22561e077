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
	"github.com/quire-ha/quire/apply"
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
	if _, err := c.a.Fence(ctx, req.Epoch); err != nil {
		return nil, grpcError("fence", err)
	}
	return c.status(ctx), nil
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
		return nil, grpcError("promote", err)
	}
	return c.status(ctx), nil
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
		return nil, grpcError("repoint", err)
	}
	return c.status(ctx), nil
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
		return nil, grpcError("set channels", err)
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

// grpcError maps an error of the agent's domain methods to a gRPC status:
// the one place that knows about codes. An error that already carries a
// status keeps it.
func grpcError(verb string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unavailable
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, apply.ErrBadChannels):
		code = codes.InvalidArgument
	case errors.Is(err, ErrConflict), errors.Is(err, apply.ErrNotRunning), errors.Is(err, apply.ErrChangeBusy),
		errors.Is(err, apply.ErrShardMapChanged), errors.Is(err, apply.ErrDrainFirst):
		code = codes.FailedPrecondition
	case errors.Is(err, apply.ErrSwitch):
		code = codes.Internal
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Errorf(code, "%s: %v", verb, err)
}
