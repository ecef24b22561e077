package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/authz"
	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/manager"
)

// Upper bounds of the control verbs' arguments.
const (
	// MaxDrainTimeout bounds DrainRequest.timeout_ms.
	MaxDrainTimeout = time.Hour
	// MaxSetChannelsTimeout bounds SetChannelsRequest.timeout_ms.
	MaxSetChannelsTimeout = time.Hour
	// MaxSyncSet bounds the members of SetSyncSetRequest.
	MaxSyncSet = 64
	// confirmTimeout bounds asking the managers about an epoch.
	confirmTimeout = 5 * time.Second
)

// guard is what stands between the agent's gRPC server and its handlers:
// authorization (package authz) and the bounds of the control verbs.
type guard struct {
	a  *Agent
	az *authz.Authorizer
}

// newGuard makes the agent's guard. TLS may be off only with every
// address on loopback (config.Agent.CheckPlaintext); then it says so
// loudly and in quire_tls_plaintext.
func (a *Agent) newGuard() (*guard, error) {
	if err := a.cfg.CheckPlaintext(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	plain := a.cfg.TLS.InsecurePlaintext
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "quire_tls_plaintext",
		Help: "1 when this process runs without TLS (tls.insecure_plaintext: allowed on loopback only); then nobody is authenticated.",
	})
	if plain {
		g.Set(1)
		a.log.Error("TLS is OFF (tls.insecure_plaintext: true): callers are not authenticated and every call is allowed; loopback tests only")
	}
	if err := a.reg.Register(g); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	az, err := authz.New(authz.Config{Plaintext: plain, Logger: a.log, Registerer: a.reg, Revoked: a.revoked})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return &guard{a: a, az: az}, nil
}

// options returns the gRPC server options: authorization first, then the
// bounds of the control verbs. The keepalive that ends a vanished peer's
// streams (rpcopts.Server: within about 8 s) is set in New: a replica that
// vanished (power loss, partition) loses its log stream with it, so that
// its reconnection is not refused for long as a second live stream of the
// same node (authz.Rule.OneStream).
func (g *guard) options() []grpc.ServerOption {
	return append(g.az.ServerOptions(), grpc.ChainUnaryInterceptor(g.bounds))
}

// verify refuses to start a server with a method that has no rule.
func (g *guard) verify(s *grpc.Server) error {
	if err := g.az.Verify(s); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// bounds checks the arguments of a control verb before it runs.
func (g *guard) bounds(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := g.a.checkBounds(ctx, req); err != nil {
		g.a.log.Warn("control verb refused", "err", err)
		return nil, err
	}
	return handler(ctx, req)
}

func (a *Agent) checkBounds(ctx context.Context, req any) error {
	switch r := req.(type) {
	case *agentpb.FenceRequest:
		return a.checkEpoch(ctx, "fence", r.Epoch)
	case *agentpb.PromoteRequest:
		return a.checkEpoch(ctx, "promote", r.Epoch)
	case *agentpb.RepointRequest:
		if err := a.checkEpoch(ctx, "repoint", r.Epoch); err != nil {
			return err
		}
		if r.HasTruncate {
			if err := truncateAllowed(r.TruncateAfter, a.keepFloor()); err != nil {
				return status.Error(codes.FailedPrecondition, "repoint: "+err.Error())
			}
		}
	case *agentpb.DrainRequest:
		return durationAllowed("drain", "timeout_ms", r.TimeoutMs, MaxDrainTimeout)
	case *agentpb.SetChannelsRequest:
		return durationAllowed("set channels", "timeout_ms", r.TimeoutMs, MaxSetChannelsTimeout)
	case *agentpb.SetSyncSetRequest:
		if len(r.Members) > MaxSyncSet {
			return status.Errorf(codes.InvalidArgument, "set sync set: %d members; at most %d", len(r.Members), MaxSyncSet)
		}
	}
	return nil
}

func durationAllowed(verb, field string, ms uint32, limit time.Duration) error {
	if d := time.Duration(ms) * time.Millisecond; d > limit {
		return status.Errorf(codes.InvalidArgument, "%s: %s=%d is %s, longer than the limit of %s", verb, field, ms, d, limit)
	}
	return nil
}

// epochView is what an agent knows of epochs when a verb names one.
type epochView struct {
	// Role is the epoch of the agent's current role; Log the epoch of its
	// last log record.
	Role, Log uint64
	// Managed: the agent has managers; Managers is the newest epoch they
	// have told it (0 before their first answer).
	Managed  bool
	Managers uint64
}

// errUnconfirmed is epochAllowed's answer when only the managers can tell
// whether they issued the epoch.
type errUnconfirmed struct{ epoch, known uint64 }

func (e errUnconfirmed) Error() string {
	return fmt.Sprintf("epoch %d was not issued by the managers (the newest they have answered is %d)", e.epoch, e.known)
}

// epochAllowed decides whether a verb may carry epoch. Epochs come only as
// the managers issue them: never older than the agent's own (a deposed
// manager's order), and never newer than the managers' newest — without
// managers, at most one more than the newest the agent knows. fence is
// true for Fence, whose epoch 0 means "the current one" and whose epoch
// only ever raises the agent's. An errUnconfirmed answer means: ask the
// managers, then decide again.
func epochAllowed(epoch uint64, v epochView, fence bool) error {
	if epoch == 0 {
		return nil // "no epoch": the verb's own check answers (fence: the current one)
	}
	known := max(v.Role, v.Log)
	if !fence && epoch < known {
		return fmt.Errorf("epoch %d is older than this agent's epoch %d (an order from a deposed manager?)", epoch, known)
	}
	if v.Managed {
		if epoch > v.Managers {
			return errUnconfirmed{epoch: epoch, known: v.Managers}
		}
		return nil
	}
	if epoch > known+1 {
		return fmt.Errorf("epoch %d is more than one beyond this agent's epoch %d; without managers epochs advance by one", epoch, known)
	}
	return nil
}

// checkEpoch applies epochAllowed, asking the managers once when only they
// can tell.
func (a *Agent) checkEpoch(ctx context.Context, verb string, epoch uint64) error {
	fence := verb == "fence"
	v := a.epochView()
	err := epochAllowed(epoch, v, fence)
	if _, ok := err.(errUnconfirmed); ok {
		var cerr error
		v.Managers, cerr = a.confirmEpoch(ctx)
		err = epochAllowed(epoch, v, fence)
		if _, still := err.(errUnconfirmed); still && cerr != nil {
			err = fmt.Errorf("%w; asking the managers failed: %v", err, cerr)
		}
	}
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "%s: %v", verb, err)
	}
	return nil
}

func (a *Agent) epochView() epochView {
	_, logEpoch := a.txl.Last()
	a.mu.Lock()
	defer a.mu.Unlock()
	v := epochView{Role: a.role.Epoch, Log: logEpoch, Managed: a.managed()}
	if a.hasAsg {
		v.Managers = a.asg.Epoch
	}
	return v
}

// confirmEpoch asks the managers for this node's assignment (a heartbeat
// with the agent's current report) and returns their epoch.
func (a *Agent) confirmEpoch(ctx context.Context) (uint64, error) {
	ccfg := manager.ClientConfig{Addrs: a.cfg.Managers, Logger: a.log, Insecure: a.cfg.TLS.InsecurePlaintext}
	if !a.cfg.TLS.InsecurePlaintext {
		tc, err := certs.ClientConfig(certs.Files{CA: a.cfg.TLS.CAFile, Cert: a.cfg.TLS.CertFile, Key: a.cfg.TLS.KeyFile}, "")
		if err != nil {
			return 0, err
		}
		certs.RequirePeer(tc, certs.WantRole(certs.RoleManager))
		certs.CheckRevoked(tc, a.revoked)
		ccfg.TLS = tc
	}
	cli, err := manager.NewClient(ccfg)
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	asg, err := cli.Heartbeat(ctx, a.report(ctx))
	if err != nil {
		return 0, err
	}
	return asg.Epoch, nil
}

// keepFloor is the lowest seqno the log may be truncated after: what the
// database holds (applied by any channel) and what is committed.
func (a *Agent) keepFloor() uint64 {
	st := a.Status()
	floor := st.CommitSeqno
	if st.Apply != nil {
		floor = max(floor, st.Apply.AppliedSeqno)
	}
	a.mu.Lock()
	ra := a.rep
	a.mu.Unlock()
	if ra != nil {
		floor = max(floor, ra.keepFrom())
	}
	return floor
}

// truncateAllowed decides whether the log may be cut after seqno: never
// below floor, since the records up to it are committed (acknowledged to
// clients) or in the database.
func truncateAllowed(seqno, floor uint64) error {
	if seqno < floor {
		return fmt.Errorf("truncate after %d would drop records up to %d that are committed or applied to the database; refused", seqno, floor)
	}
	return nil
}
