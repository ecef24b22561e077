// Package server implements Quire's ManagerService (api/managerpb) on top
// of a consensus.Node.
//
// Any manager answers. A follower forwards every call to the Raft leader,
// dialling the leader's gRPC address (found through the managers' peer
// list) with its own client certificate, and relays the answer; the
// forwarded call carries the metadata key "quire-forwarded-by", and a
// manager that receives a forwarded call while not leader answers
// UNAVAILABLE with a LeaderHint instead of forwarding again. When the
// leader cannot be reached the answer is UNAVAILABLE too, so that clients
// ([manager.Client]) retry.
//
// The leader keeps the agents' positions (their last heartbeats) in memory
// only, and forgets them whenever it gains leadership anew. Changes go
// through [consensus.Node.Propose], which validates them against the
// leader's state first: invalid input is answered INVALID_ARGUMENT naming
// the field and value, and nothing is proposed.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/authz"
	"github.com/quire-ha/quire/consensus"
	"github.com/quire-ha/quire/internal/rpcopts"
	"github.com/quire-ha/quire/manager"
)

// Defaults of [Config].
const (
	DefaultCommitRecordInterval = 5 * time.Second
	DefaultRequestTimeout       = 10 * time.Second
	// leaderWait bounds how long a follower waits for a leader to be known
	// before it answers UNAVAILABLE.
	leaderWait = 2 * time.Second
)

// ForwardedByKey is the metadata key that marks a call a follower forwarded
// to the leader; its value is the follower's ID.
const ForwardedByKey = authz.ForwardedByKey

// Peer is one manager: its Raft server ID and addresses.
type Peer struct {
	ID       string
	RaftAddr string
	GRPCAddr string
}

// Config configures a [Server].
type Config struct {
	// Node is this manager's Raft node. The server does not close it.
	Node *consensus.Node
	// Peers lists every manager (this one included); it maps the leader's
	// ID or Raft address to the gRPC address calls are forwarded to.
	Peers []Peer
	// TLS is the client side of mutual TLS (certs.ClientConfig) used to
	// forward calls to the leader. It must be set unless Insecure is.
	TLS *tls.Config
	// Insecure forwards in plaintext (tests, the sandbox).
	Insecure bool
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Registerer, if set, receives the server's metrics.
	Registerer prometheus.Registerer
	// InitSettings, if set, are committed by InitCluster (before the first
	// primary) when they differ from the cluster's: the failover timeout and
	// anti-flapping window of the manager's configuration file.
	InitSettings *consensus.Settings
	// CommitRecordInterval is how often at most the leader records the
	// primary's commit index in Raft (default 5s).
	CommitRecordInterval time.Duration
	// RequestTimeout bounds a call whose context has no deadline (default
	// 10s).
	RequestTimeout time.Duration
	// AutoFailover lets this manager, while it leads, fail the primary over
	// automatically (config failover.auto). Without it the leader still
	// detects failures and records them, and promotes nobody.
	AutoFailover bool
	// FailoverInterval is how often at most the leader runs a detection
	// step besides the heartbeats that trigger one (default 100ms).
	FailoverInterval time.Duration
	// AgentTLS is the client side of mutual TLS towards the agents
	// (AgentControl); nil means TLS (the same certificate).
	AgentTLS *tls.Config
	// Agents, if set, replaces the gRPC client of the agents (tests).
	Agents Agents
}

// Server implements managerpb.ManagerServiceServer.
type Server struct {
	managerpb.UnimplementedManagerServiceServer

	cfg    Config
	node   *consensus.Node
	id     string
	logger *slog.Logger
	creds  credentials.TransportCredentials
	byID   map[string]Peer
	byRaft map[string]Peer
	met    *metrics

	mu          sync.Mutex
	positions   map[string]Position
	leaderSince time.Time
	lastRecord  time.Time // last commit-index record or degraded clear started
	recording   bool      // a background proposal is running
	readTerm    string    // the Raft term in which reads were last synced
	conns       map[string]*grpc.ClientConn
	closed      bool
	// hbLocks serialize the heartbeats of each member: a heartbeat is
	// handled, its Raft changes included, before the member's next one, so
	// an answer always reflects every earlier report.
	hbLocks map[string]*sync.Mutex

	drv *failoverDriver

	done chan struct{}
	wg   sync.WaitGroup
}

var _ managerpb.ManagerServiceServer = (*Server)(nil)

// New returns a server for cfg.Node. Call Close when done.
func New(cfg Config) (*Server, error) {
	if cfg.Node == nil {
		return nil, errors.New("manager server: no consensus node")
	}
	if cfg.CommitRecordInterval <= 0 {
		cfg.CommitRecordInterval = DefaultCommitRecordInterval
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	s := &Server{
		cfg:       cfg,
		node:      cfg.Node,
		id:        cfg.Node.ID(),
		logger:    cfg.Logger,
		byID:      map[string]Peer{},
		byRaft:    map[string]Peer{},
		positions: map[string]Position{},
		conns:     map[string]*grpc.ClientConn{},
		done:      make(chan struct{}),
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.TLS != nil && cfg.Insecure:
		return nil, errors.New("manager server: TLS and Insecure are both set; choose one")
	case cfg.TLS != nil:
		s.creds = credentials.NewTLS(cfg.TLS)
	case cfg.Insecure:
		s.creds = insecure.NewCredentials()
	default:
		return nil, errors.New("manager server: no TLS configuration for forwarding (set TLS, or Insecure for plaintext)")
	}
	self := false
	for _, p := range cfg.Peers {
		if p.ID == "" || p.GRPCAddr == "" {
			return nil, fmt.Errorf("manager server: peer %q: id and gRPC address are required", p.ID)
		}
		if _, dup := s.byID[p.ID]; dup {
			return nil, fmt.Errorf("manager server: peer %q is listed twice", p.ID)
		}
		s.byID[p.ID] = p
		if p.RaftAddr != "" {
			s.byRaft[p.RaftAddr] = p
		}
		self = self || p.ID == s.id
	}
	if !self {
		return nil, fmt.Errorf("manager server: this manager %q is not in the peer list", s.id)
	}
	if cfg.FailoverInterval <= 0 {
		cfg.FailoverInterval = DefaultFailoverInterval
		s.cfg.FailoverInterval = cfg.FailoverInterval
	}
	agents := cfg.Agents
	if agents == nil {
		creds := s.creds
		if cfg.AgentTLS != nil {
			creds = credentials.NewTLS(cfg.AgentTLS)
		}
		agents = newGRPCAgents(creds)
	}
	s.drv = newFailoverDriver(s, agents, cfg.AutoFailover, cfg.FailoverInterval)
	if cfg.Registerer != nil {
		m, err := newMetrics(cfg.Registerer, s)
		if err != nil {
			return nil, err
		}
		s.met = m
		if s.drv.met, err = newFailoverMetrics(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	s.wg.Add(2)
	go s.watchLeadership()
	go s.drv.run()
	return s, nil
}

// Register registers the service on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { managerpb.RegisterManagerServiceServer(g, s) }

// Close stops the server's background work and closes its connections to
// other managers. It does not stop a grpc.Server or close the node.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	conns := s.conns
	s.conns = map[string]*grpc.ClientConn{}
	s.mu.Unlock()
	s.wg.Wait()
	var errs []error
	if err := s.drv.agents.Close(); err != nil {
		errs = append(errs, err)
	}
	for a, c := range conns {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("manager server: close connection to %s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// Positions returns the agents' last heartbeats as this manager received
// them while leader (empty on a follower that never led).
func (s *Server) Positions() map[string]Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.positions)
}

// watchLeadership forgets the positions whenever this node becomes leader:
// they may be from an earlier term.
func (s *Server) watchLeadership() {
	defer s.wg.Done()
	was := false
	for {
		ch := s.node.LeaderChanged()
		is := s.node.IsLeader()
		if is && !was {
			s.mu.Lock()
			s.positions = map[string]Position{}
			s.leaderSince = time.Now()
			s.mu.Unlock()
			s.logger.Info("manager: leading; waiting for agents' heartbeats")
		}
		was = is
		select {
		case <-ch:
		case <-s.done:
			return
		}
	}
}

// RegisterAgent implements managerpb.ManagerServiceServer.
func (s *Server) RegisterAgent(ctx context.Context, req *managerpb.RegisterAgentRequest) (*managerpb.Assignment, error) {
	if resp, err, done := forward(s, ctx, "RegisterAgent", req, managerpb.ManagerServiceClient.RegisterAgent); done {
		return resp, err
	}
	if err := s.syncRead(ctx); err != nil {
		return nil, err
	}
	st := s.node.State()
	warnings, err := checkRegistration(st, req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.logger.Info("manager: agent registered", "node", req.GetNodeId(), "agent_addr", req.GetAgentAddr(),
		"mysql_addr", req.GetMysqlAddr(), "peer", peerName(ctx))
	for _, w := range warnings {
		s.logger.Warn("manager: agent registration: "+w, "node", req.GetNodeId())
	}
	return assignment(st, req.GetNodeId(), s.id, warnings, s.retainFrom(st)), nil
}

// Heartbeat implements managerpb.ManagerServiceServer.
func (s *Server) Heartbeat(ctx context.Context, req *managerpb.HeartbeatRequest) (*managerpb.Assignment, error) {
	if resp, err, done := forward(s, ctx, "Heartbeat", req, managerpb.ManagerServiceClient.Heartbeat); done {
		return resp, err
	}
	if err := s.syncRead(ctx); err != nil {
		return nil, err
	}
	r := manager.ReportFromPB(req)
	st := s.node.State()
	if err := checkReport(st, r); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	s.mu.Lock()
	hl := s.hbLocks[r.NodeID]
	if hl == nil {
		if s.hbLocks == nil {
			s.hbLocks = map[string]*sync.Mutex{}
		}
		hl = &sync.Mutex{}
		s.hbLocks[r.NodeID] = hl
	}
	s.mu.Unlock()
	hl.Lock()
	defer hl.Unlock()
	st = s.node.State()
	now := time.Now()
	s.mu.Lock()
	s.positions[r.NodeID] = Position{Report: r, Received: now}
	s.mu.Unlock()
	if s.met != nil {
		s.met.heartbeats.Inc()
	}
	if r.NodeID == st.Primary || r.DatabaseGone || (r.Role == manager.RoleReplica && !r.PrimaryStream) {
		s.drv.poke() // may matter to failure detection: decide now, not at the next tick
	}
	f := primaryFollowUp(st, r, now)
	if f.mark != nil {
		ctx, cancel := s.requestContext(ctx)
		defer cancel()
		next, err := s.node.Propose(ctx, *f.mark)
		if err != nil {
			// The primary keeps waiting and asks again with its next
			// heartbeat.
			s.logger.Warn("manager: marking the cluster degraded failed", "node", r.NodeID, "err", err)
			st = s.node.State() // a concurrent heartbeat may have marked it
		} else {
			s.logger.Warn("manager: cluster degraded: commits no longer wait for k acknowledgements",
				"async_since", f.mark.AsyncSince, "reason", f.mark.Reason)
			st = next
		}
	}
	if f.clear {
		// Cleared before the answer, never behind it: a later heartbeat of
		// the primary asking for the marker again must find it cleared
		// first and have it marked anew, or it could trust a marker that
		// a late clear then removes.
		ctx, cancel := s.requestContext(ctx)
		next, err := s.node.Propose(ctx, consensus.ClearDegraded{})
		cancel()
		if err != nil {
			s.logger.Warn("manager: clearing the degraded marker failed", "err", err)
			st = s.node.State()
		} else {
			s.logger.Info("manager: cluster no longer degraded: k members hold every acknowledged commit")
			st = next
		}
	}
	if f.record > 0 {
		s.background(f, now)
	}
	return assignment(st, r.NodeID, s.id, nil, s.retainFrom(st)), nil
}

// retainFrom is the retain-from floor (status.go) from this leader's
// positions.
func (s *Server) retainFrom(st consensus.State) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return retainFrom(st, s.positions)
}

// background records a commit index without holding up the heartbeat, at
// most once per CommitRecordInterval and one at a time.
func (s *Server) background(f followUp, now time.Time) {
	s.mu.Lock()
	if s.closed || s.recording || now.Sub(s.lastRecord) < s.cfg.CommitRecordInterval {
		s.mu.Unlock()
		return
	}
	s.recording, s.lastRecord = true, now
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			s.recording = false
			s.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
		defer cancel()
		go func() {
			select {
			case <-s.done:
				cancel()
			case <-ctx.Done():
			}
		}()
		if _, err := s.node.Propose(ctx, consensus.RecordCommitIndex{Seqno: f.record}); err != nil {
			s.logger.Debug("manager: recording the commit index failed", "seqno", f.record, "err", err)
		}
	}()
}

// Status implements managerpb.ManagerServiceServer.
func (s *Server) Status(ctx context.Context, req *managerpb.StatusRequest) (*managerpb.StatusResponse, error) {
	if resp, err, done := forward(s, ctx, "Status", req, managerpb.ManagerServiceClient.Status); done {
		return resp, err
	}
	if err := s.syncRead(ctx); err != nil {
		return nil, err
	}
	st := s.node.State()
	pos := s.Positions()
	nodes, commit := nodeStatuses(st, pos, time.Now())
	resp := &managerpb.StatusResponse{
		State:          stateToPB(st),
		LeaderId:       s.id,
		LeaderGrpcAddr: s.byID[s.id].GRPCAddr,
		CommitSeqno:    commit,
		Nodes:          nodes,
		Failover:       s.drv.status(),
	}
	conf, err := s.node.Configuration()
	if err != nil {
		s.logger.Warn("manager: status: raft configuration", "err", err)
	}
	for _, p := range conf {
		resp.Managers = append(resp.Managers, &managerpb.ManagerInfo{
			Id: p.ID, RaftAddr: p.Addr, GrpcAddr: s.grpcAddr(p.ID, p.Addr), Leader: p.ID == s.id,
		})
	}
	return resp, nil
}

// History implements managerpb.ManagerServiceServer: the decision log and
// the epoch history with the promotions' certificates.
func (s *Server) History(ctx context.Context, req *managerpb.HistoryRequest) (*managerpb.HistoryResponse, error) {
	if resp, err, done := forward(s, ctx, "History", req, managerpb.ManagerServiceClient.History); done {
		return resp, err
	}
	if err := s.syncRead(ctx); err != nil {
		return nil, err
	}
	return historyToPB(s.node.State()), nil
}

// Members implements managerpb.ManagerServiceServer.
func (s *Server) Members(ctx context.Context, req *managerpb.MembersRequest) (*managerpb.MembersResponse, error) {
	if resp, err, done := forward(s, ctx, "Members", req, managerpb.ManagerServiceClient.Members); done {
		return resp, err
	}
	if err := s.syncRead(ctx); err != nil {
		return nil, err
	}
	return &managerpb.MembersResponse{Members: stateToPB(s.node.State()).Members}, nil
}

// syncRead makes sure that this node, the leader, has applied every entry
// committed before its term began, so that reads of its state are current:
// a barrier, once per term.
func (s *Server) syncRead(ctx context.Context) error {
	term := s.node.Stats()["term"]
	s.mu.Lock()
	synced := s.readTerm == term
	s.mu.Unlock()
	if synced {
		return nil
	}
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	if err := s.node.Barrier(ctx); err != nil {
		return s.rpcError(err)
	}
	s.mu.Lock()
	s.readTerm = term
	s.mu.Unlock()
	return nil
}

// AddMember implements managerpb.ManagerServiceServer.
func (s *Server) AddMember(ctx context.Context, req *managerpb.AddMemberRequest) (*managerpb.ClusterState, error) {
	if req.GetMember() == nil {
		return nil, status.Error(codes.InvalidArgument, "add_member: member: is missing")
	}
	if resp, err, done := forward(s, ctx, "AddMember", req, managerpb.ManagerServiceClient.AddMember); done {
		return resp, err
	}
	return s.propose(ctx, consensus.AddMember{Member: memberFromPB(req.GetMember())})
}

// UpdateMember implements managerpb.ManagerServiceServer.
func (s *Server) UpdateMember(ctx context.Context, req *managerpb.UpdateMemberRequest) (*managerpb.ClusterState, error) {
	if req.GetMember() == nil {
		return nil, status.Error(codes.InvalidArgument, "update_member: member: is missing")
	}
	if resp, err, done := forward(s, ctx, "UpdateMember", req, managerpb.ManagerServiceClient.UpdateMember); done {
		return resp, err
	}
	return s.propose(ctx, consensus.UpdateMember{Member: memberFromPB(req.GetMember())})
}

// RemoveMember implements managerpb.ManagerServiceServer.
func (s *Server) RemoveMember(ctx context.Context, req *managerpb.RemoveMemberRequest) (*managerpb.ClusterState, error) {
	if resp, err, done := forward(s, ctx, "RemoveMember", req, managerpb.ManagerServiceClient.RemoveMember); done {
		return resp, err
	}
	st, err := s.propose(ctx, consensus.RemoveMember{ID: req.GetId()})
	if err == nil {
		s.mu.Lock()
		delete(s.positions, req.GetId())
		s.mu.Unlock()
	}
	return st, err
}

// SetK implements managerpb.ManagerServiceServer.
func (s *Server) SetK(ctx context.Context, req *managerpb.SetKRequest) (*managerpb.ClusterState, error) {
	if resp, err, done := forward(s, ctx, "SetK", req, managerpb.ManagerServiceClient.SetK); done {
		return resp, err
	}
	return s.propose(ctx, consensus.SetK{K: int(req.GetK())})
}

// SetPolicy implements managerpb.ManagerServiceServer.
func (s *Server) SetPolicy(ctx context.Context, req *managerpb.SetPolicyRequest) (*managerpb.ClusterState, error) {
	if resp, err, done := forward(s, ctx, "SetPolicy", req, managerpb.ManagerServiceClient.SetPolicy); done {
		return resp, err
	}
	return s.propose(ctx, consensus.SetPolicy{Policy: consensus.Policy(req.GetPolicy())})
}

// SetSyncSet implements managerpb.ManagerServiceServer.
func (s *Server) SetSyncSet(ctx context.Context, req *managerpb.SetSyncSetRequest) (*managerpb.ClusterState, error) {
	if resp, err, done := forward(s, ctx, "SetSyncSet", req, managerpb.ManagerServiceClient.SetSyncSet); done {
		return resp, err
	}
	return s.propose(ctx, consensus.SetSyncSet{Members: req.GetMembers()})
}

// SetSettings implements managerpb.ManagerServiceServer.
func (s *Server) SetSettings(ctx context.Context, req *managerpb.SetSettingsRequest) (*managerpb.ClusterState, error) {
	if resp, err, done := forward(s, ctx, "SetSettings", req, managerpb.ManagerServiceClient.SetSettings); done {
		return resp, err
	}
	var cmd consensus.SetSettings
	if req.FailoverTimeoutMs != nil {
		d := time.Duration(req.GetFailoverTimeoutMs()) * time.Millisecond
		cmd.FailoverTimeout = &d
	}
	if req.AntiFlapWindowMs != nil {
		d := time.Duration(req.GetAntiFlapWindowMs()) * time.Millisecond
		cmd.AntiFlapWindow = &d
	}
	return s.propose(ctx, cmd)
}

// InitCluster implements managerpb.ManagerServiceServer.
func (s *Server) InitCluster(ctx context.Context, req *managerpb.InitClusterRequest) (*managerpb.ClusterState, error) {
	if req.GetPrimary() == "" {
		return nil, status.Error(codes.InvalidArgument, `init_cluster: primary="": is empty`)
	}
	if req.GetBy() == "" {
		// Name the caller before a forward replaces it with this manager.
		req = &managerpb.InitClusterRequest{Primary: req.GetPrimary(), FirstSeqno: req.GetFirstSeqno(), SyncSet: req.GetSyncSet(), By: peerName(ctx)}
	}
	if resp, err, done := forward(s, ctx, "InitCluster", req, managerpb.ManagerServiceClient.InitCluster); done {
		return resp, err
	}
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	if err := s.node.Barrier(ctx); err != nil {
		return nil, s.rpcError(err)
	}
	st := s.node.State()
	if st.Epoch > 0 {
		if st.Primary == req.GetPrimary() && st.Epoch == 1 && len(req.GetSyncSet()) == 0 {
			return stateToPB(st), nil
		}
		return nil, status.Errorf(codes.FailedPrecondition,
			"init_cluster: the cluster is already initialised: epoch %d, primary %s (use switchover to change the primary)", st.Epoch, st.Primary)
	}
	cmd := consensus.SetPrimary{Epoch: 1, Primary: req.GetPrimary(), FirstSeqno: max(req.GetFirstSeqno(), 1),
		At: time.Now(), Reason: "cluster initialised with primary " + req.GetPrimary(), By: req.GetBy()}
	if len(req.GetSyncSet()) > 0 {
		cmd.SyncSet = req.GetSyncSet()
	}
	// Validate before changing the settings so that bad input changes
	// nothing.
	if err := st.Validate(cmd); err != nil {
		return nil, s.rpcError(err)
	}
	if want := s.cfg.InitSettings; want != nil && *want != st.Settings {
		set := consensus.SetSettings{FailoverTimeout: &want.FailoverTimeout, AntiFlapWindow: &want.AntiFlapWindow}
		if _, err := s.node.Propose(ctx, set); err != nil {
			return nil, s.rpcError(err)
		}
	}
	next, err := s.node.Propose(ctx, cmd)
	if err != nil {
		return nil, s.rpcError(err)
	}
	s.logger.Info("manager: cluster initialised", "epoch", 1, "primary", cmd.Primary, "sync_set", next.SyncSet, "peer", peerName(ctx))
	return stateToPB(next), nil
}

// AcknowledgeFailover implements managerpb.ManagerServiceServer.
func (s *Server) AcknowledgeFailover(ctx context.Context, req *managerpb.AcknowledgeFailoverRequest) (*managerpb.ClusterState, error) {
	if req.GetBy() == "" {
		// Name the caller before a forward replaces it with this manager.
		req = &managerpb.AcknowledgeFailoverRequest{By: peerName(ctx)}
	}
	if resp, err, done := forward(s, ctx, "AcknowledgeFailover", req, managerpb.ManagerServiceClient.AcknowledgeFailover); done {
		return resp, err
	}
	return s.propose(ctx, consensus.AcknowledgeFailover{By: req.GetBy(), At: time.Now()})
}

// propose commits cmd on this node, the leader.
func (s *Server) propose(ctx context.Context, cmd consensus.Command) (*managerpb.ClusterState, error) {
	ctx, cancel := s.requestContext(ctx)
	defer cancel()
	st, err := s.node.Propose(ctx, cmd)
	if err != nil {
		return nil, s.rpcError(err)
	}
	s.logger.Info("manager: committed", "command", cmd.Type(), "peer", peerName(ctx))
	return stateToPB(st), nil
}

func (s *Server) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

// rpcError maps an error of the consensus node to a gRPC status.
func (s *Server) rpcError(err error) error {
	var ve *consensus.ValidationError
	var nl *consensus.NotLeaderError
	switch {
	case errors.As(err, &ve):
		return status.Error(codes.InvalidArgument, strings.TrimPrefix(ve.Error(), "consensus: "))
	case errors.As(err, &nl):
		return s.unavailable(nl.LeaderID, nl.LeaderAddr, "this manager is not the leader")
	case errors.Is(err, raft.ErrLeadershipLost):
		return status.Errorf(codes.Aborted, "%v (read the state before retrying)", err)
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, raft.ErrRaftShutdown):
		return s.unavailable("", "", "this manager is shutting down")
	}
	return status.Error(codes.Internal, err.Error())
}

// unavailable is an UNAVAILABLE status with a LeaderHint naming the
// leader, if known.
func (s *Server) unavailable(leaderID, leaderRaftAddr, msg string) error {
	addr := s.grpcAddr(leaderID, leaderRaftAddr)
	switch {
	case leaderID == "":
		msg += "; no leader is known (is a majority of managers up?)"
	case addr == "":
		msg += fmt.Sprintf("; the leader is %s at %s, which is not in this manager's peer list", leaderID, leaderRaftAddr)
	default:
		msg += fmt.Sprintf("; the leader is %s at %s", leaderID, addr)
	}
	// The hint is attached even when empty: it marks the answer as this
	// service's, not a connection failure.
	st := status.New(codes.Unavailable, msg)
	if d, err := st.WithDetails(&managerpb.LeaderHint{LeaderId: leaderID, GrpcAddr: addr}); err == nil {
		st = d
	}
	return st.Err()
}

// grpcAddr maps a manager's ID (or else its Raft address) to its gRPC
// address through the peer list.
func (s *Server) grpcAddr(id, raftAddr string) string {
	if p, ok := s.byID[id]; ok {
		return p.GRPCAddr
	}
	if p, ok := s.byRaft[raftAddr]; ok {
		return p.GRPCAddr
	}
	return ""
}

// forward sends a call to the leader unless this node is the leader (done
// is then false and the caller handles the call).
func forward[Req, Resp any](s *Server, ctx context.Context, method string, req Req,
	call func(managerpb.ManagerServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) (resp Resp, err error, done bool) {
	if s.node.IsLeader() {
		return resp, nil, false
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(ForwardedByKey)) > 0 {
		id, addr := s.node.Leader()
		return resp, s.unavailable(id, addr, fmt.Sprintf("%s forwarded by %s: this manager is not the leader", method, md.Get(ForwardedByKey)[0])), true
	}
	// Wait a little for an election, but answer well before the caller's
	// deadline so that it can try elsewhere.
	wait := leaderWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	id, raftAddr, werr := s.node.WaitLeader(wctx)
	cancel()
	if werr != nil {
		return resp, s.unavailable("", "", "this manager is not the leader"), true
	}
	if id == s.id {
		if s.node.IsLeader() {
			return resp, nil, false
		}
		return resp, s.unavailable("", "", "this manager is not the leader"), true
	}
	addr := s.grpcAddr(id, raftAddr)
	if addr == "" {
		return resp, s.unavailable(id, raftAddr, "this manager is not the leader"), true
	}
	conn, cerr := s.dial(addr)
	if cerr != nil {
		return resp, s.unavailable(id, raftAddr, cerr.Error()), true
	}
	if s.met != nil {
		s.met.forwarded.WithLabelValues(method).Inc()
	}
	fctx := metadata.AppendToOutgoingContext(authz.Forwarding(ctx), ForwardedByKey, s.id) // the leader judges the original caller
	resp, err = call(managerpb.NewManagerServiceClient(conn), fctx, req)
	if err == nil {
		return resp, nil, true
	}
	st := status.Convert(err)
	if st.Code() == codes.Unavailable && len(st.Details()) == 0 {
		// The leader did not answer (no hint of its own): say so, naming it.
		return resp, s.unavailable(id, raftAddr, fmt.Sprintf("forwarding %s to the leader failed: %s", method, st.Message())), true
	}
	return resp, err, true
}

func (s *Server) dial(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("manager server: closed")
	}
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, append(rpcopts.Dial(), grpc.WithTransportCredentials(s.creds))...)
	if err != nil {
		return nil, fmt.Errorf("manager server: dial leader %s: %w", addr, err)
	}
	s.conns[addr] = c
	return c, nil
}

// peerName names the caller: the common name of its certificate, or its
// address.
func peerName(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown"
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		if cn := ti.State.PeerCertificates[0].Subject.CommonName; cn != "" {
			return cn
		}
	}
	if p.Addr != nil {
		return p.Addr.String()
	}
	return "unknown"
}

// raftTerm returns the node's current term from raft's statistics.
func raftTerm(n *consensus.Node) float64 {
	t, _ := strconv.ParseFloat(n.Stats()["term"], 64)
	return t
}
