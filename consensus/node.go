package consensus

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// Defaults of [Config], tuned for managers on one LAN.
const (
	DefaultHeartbeatTimeout  = 500 * time.Millisecond
	DefaultElectionTimeout   = time.Second
	DefaultCommitTimeout     = 50 * time.Millisecond
	DefaultSnapshotThreshold = 1024
	DefaultSnapshotInterval  = 30 * time.Second
	DefaultTrailingLogs      = 1024
	DefaultRetainSnapshots   = 3
	DefaultTransportTimeout  = 10 * time.Second
)

// Config configures a [Node].
type Config struct {
	// ID is this manager's Raft server ID: its member ID.
	ID string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// BindAddr is the host:port the Raft transport listens on (port 0 picks
	// one; see Node.Addr).
	BindAddr string
	// AdvertiseAddr is the address peers reach this node at; empty means the
	// listener's address, which must then not be a wildcard.
	AdvertiseAddr string
	// TLS, when set, makes the transport mutual TLS: Certificates (or
	// GetCertificate and GetClientCertificate) identify this node, RootCAs
	// verifies the peers it dials and ClientCAs (default RootCAs) the peers
	// dialing it. Client certificates are always required. Nil means
	// plaintext TCP.
	TLS *tls.Config
	// PeerIDs names the managers whose certificates the transport accepts
	// (the peers of the manager's configuration); required with TLS. A
	// peer's certificate must carry the manager role and one of these
	// names, a dialled peer must be the manager the Raft configuration has
	// at that address, and every RPC a peer sends must carry its own name
	// as server ID.
	PeerIDs []string
	// HandshakeTimeout bounds an incoming connection's TLS handshake
	// (default DefaultHandshakeTimeout); MaxUnauthenticated caps the
	// incoming connections still in their handshake (default
	// DefaultMaxUnauthenticated).
	HandshakeTimeout   time.Duration
	MaxUnauthenticated int
	// Logger receives this package's and raft's logs; nil discards them.
	Logger *slog.Logger

	// HeartbeatTimeout is how long a follower goes without hearing from the
	// leader before it starts an election (default 500ms).
	HeartbeatTimeout time.Duration
	// ElectionTimeout is how long a candidate waits for votes (default 1s).
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout is how long a leader stays leader without hearing
	// from a quorum (default HeartbeatTimeout/2).
	LeaderLeaseTimeout time.Duration
	// CommitTimeout bounds the delay before a heartbeat carries a new commit
	// index (default 50ms).
	CommitTimeout time.Duration
	// SnapshotThreshold is how many new log entries trigger a snapshot
	// (default 1024).
	SnapshotThreshold uint64
	// SnapshotInterval is how often the threshold is checked (default 30s;
	// raft adds up to the same again at random).
	SnapshotInterval time.Duration
	// TrailingLogs is how many entries stay in the log after a snapshot, so
	// that a slightly lagging follower needs no snapshot (default 1024).
	TrailingLogs uint64
	// RetainSnapshots is how many snapshots stay on disk (default 3).
	RetainSnapshots int
	// TransportTimeout is the I/O deadline of Raft RPCs (default 10s).
	TransportTimeout time.Duration

	// wrapStream lets tests interpose on the transport's connections.
	wrapStream func(raft.StreamLayer) raft.StreamLayer
}

// Peer is one Raft server: a manager.
type Peer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

// String returns "id@addr".
func (p Peer) String() string { return p.ID + "@" + p.Addr }

// ErrBootstrapConflict is wrapped by the error of a Bootstrap whose member
// list differs from the one the node already has.
var ErrBootstrapConflict = errors.New("consensus: bootstrap conflicts with existing state")

// NotLeaderError is returned by operations that only the leader can perform.
// It wraps raft.ErrNotLeader and names the leader, if one is known, so that a
// caller can forward the request.
type NotLeaderError struct {
	LeaderID   string // empty if no leader is known
	LeaderAddr string // the leader's Raft address
}

// Error implements error.
func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "consensus: not the leader (no leader known)"
	}
	return fmt.Sprintf("consensus: not the leader (leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Unwrap returns raft.ErrNotLeader.
func (e *NotLeaderError) Unwrap() error { return raft.ErrNotLeader }

// Node is one manager's Raft peer holding the cluster [State].
type Node struct {
	id     string
	logger *slog.Logger

	raft      *raft.Raft
	fsm       *FSM
	store     *raftboltdb.BoltStore
	snaps     *raft.FileSnapshotStore
	transport *raft.NetworkTransport

	leaderChanged notifier
	observer      *raft.Observer
	barrierTerm   atomic.Uint64 // the term in which this node last ran a barrier as leader

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open starts a node from the state in cfg.DataDir (empty on first start).
// A new node knows no peers until [Node.Bootstrap] or a leader's AddVoter.
func Open(cfg Config) (*Node, error) {
	if err := checkID("id", cfg.ID); err != nil {
		return nil, fmt.Errorf("consensus: open: %s", err.detail())
	}
	if cfg.DataDir == "" {
		return nil, errors.New("consensus: open: data dir is empty")
	}
	if cfg.BindAddr == "" {
		return nil, errors.New("consensus: open: bind address is empty")
	}
	cfg = withDefaults(cfg)
	logger := cfg.Logger.With("raft_id", cfg.ID)
	hlog := newHclog(logger, "raft")

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NoLegacyTelemetry = true
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("consensus: open: %w", err)
	}

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("consensus: open: %w", err)
	}
	dbPath := filepath.Join(cfg.DataDir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{
		Path:        dbPath,
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("consensus: open %s: %w", dbPath, err)
	}
	n := &Node{id: cfg.ID, logger: logger, store: store, done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			if n.transport != nil {
				n.transport.Close()
			}
			store.Close()
		}
	}()

	logs, err := raft.NewLogCache(512, store)
	if err != nil {
		return nil, fmt.Errorf("consensus: open: log cache: %w", err)
	}
	n.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.RetainSnapshots, hlog.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("consensus: open: snapshot store: %w", err)
	}
	stream, err := newStreamLayer(cfg.BindAddr, cfg.AdvertiseAddr, streamOptions{
		TLS: cfg.TLS, Allowed: cfg.PeerIDs, HandshakeTimeout: cfg.HandshakeTimeout,
		MaxUnauthenticated: cfg.MaxUnauthenticated, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if !ok {
			stream.Close()
		}
	}()
	var sl raft.StreamLayer = stream
	if cfg.wrapStream != nil {
		sl = cfg.wrapStream(sl)
	}
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  sl,
		MaxPool: 3,
		Timeout: cfg.TransportTimeout,
		Logger:  hlog.Named("transport"),
	})

	n.fsm = NewFSM(logger)
	n.raft, err = raft.NewRaft(rc, n.fsm, logs, store, n.snaps, n.transport)
	if err != nil {
		return nil, fmt.Errorf("consensus: open: start raft: %w", err)
	}
	stream.setExpect(n.idAt)

	obsCh := make(chan raft.Observation, 64)
	n.observer = raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.LeaderObservation, raft.RaftState:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(n.observer)
	n.wg.Add(1)
	go n.watch(obsCh)

	ok = true
	logger.Info("consensus: node open", "addr", n.Addr(), "data_dir", cfg.DataDir, "tls", cfg.TLS != nil)
	return n, nil
}

func withDefaults(cfg Config) Config {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&cfg.ElectionTimeout, DefaultElectionTimeout)
	def(&cfg.LeaderLeaseTimeout, cfg.HeartbeatTimeout/2)
	def(&cfg.CommitTimeout, DefaultCommitTimeout)
	def(&cfg.SnapshotInterval, DefaultSnapshotInterval)
	def(&cfg.TransportTimeout, DefaultTransportTimeout)
	if cfg.SnapshotThreshold == 0 {
		cfg.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if cfg.TrailingLogs == 0 {
		cfg.TrailingLogs = DefaultTrailingLogs
	}
	if cfg.RetainSnapshots == 0 {
		cfg.RetainSnapshots = DefaultRetainSnapshots
	}
	return cfg
}

// watch turns raft's observations into leaderChanged notifications.
func (n *Node) watch(ch <-chan raft.Observation) {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case o := <-ch:
			if lo, ok := o.Data.(raft.LeaderObservation); ok {
				n.logger.Info("consensus: leader changed", "leader_id", lo.LeaderID, "leader_addr", lo.LeaderAddr)
			}
			n.leaderChanged.notify()
		}
	}
}

// ID returns the node's server ID.
func (n *Node) ID() string { return n.id }

// Addr returns the node's advertised Raft address.
func (n *Node) Addr() string { return string(n.transport.LocalAddr()) }

// State returns a copy of the local state. On a follower it may lag the
// leader; use [Node.Barrier] on the leader for a read that reflects every
// committed command.
func (n *Node) State() State { return n.fsm.State() }

// StateChanged returns a channel closed at the next change of the local
// state.
func (n *Node) StateChanged() <-chan struct{} { return n.fsm.Changed() }

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's ID and Raft address, or empty strings
// if none is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// LeaderCh returns raft's leadership channel: true when this node becomes
// leader, false when it stops. It has one consumer and keeps only the latest
// transition if that consumer lags.
func (n *Node) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// LeaderChanged returns a channel closed at the next change of the known
// leader or of this node's Raft role. Any number of goroutines may wait.
func (n *Node) LeaderChanged() <-chan struct{} { return n.leaderChanged.wait() }

// WaitLeader waits until a leader is known and returns it.
func (n *Node) WaitLeader(ctx context.Context) (id, addr string, err error) {
	for {
		ch := n.LeaderChanged()
		if id, addr := n.Leader(); id != "" {
			return id, addr, nil
		}
		select {
		case <-ch:
		case <-n.done:
			return "", "", fmt.Errorf("consensus: wait for leader: %w", raft.ErrRaftShutdown)
		case <-ctx.Done():
			return "", "", fmt.Errorf("consensus: wait for leader: %w", ctx.Err())
		}
	}
}

// Bootstrap makes this node's first configuration the given peers (this node
// among them). It is meant to run once on a new cluster; on a node that
// already has Raft state, the same member list is a no-op and a different one
// is refused with an error naming both lists (wrapping
// [ErrBootstrapConflict]). The list is compared with the current
// configuration, so after AddVoter or RemoveServer the new list applies.
func (n *Node) Bootstrap(members []Peer) error {
	want, err := n.checkPeers(members)
	if err != nil {
		return err
	}
	has, err := raft.HasExistingState(n.store, n.store, n.snaps)
	if err != nil {
		return fmt.Errorf("consensus: bootstrap: %w", err)
	}
	if !has {
		servers := make([]raft.Server, len(want))
		for i, p := range want {
			servers[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)}
		}
		err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
		if err == nil {
			n.logger.Info("consensus: bootstrapped", "members", peersString(want))
			return nil
		}
		if !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("consensus: bootstrap: %w", err)
		}
		// Another node's leader reached us first.
	}
	have, err := n.Configuration()
	if err != nil {
		return fmt.Errorf("consensus: bootstrap: %w", err)
	}
	if slices.Equal(have, want) {
		return nil
	}
	if len(have) == 0 {
		return fmt.Errorf("consensus: bootstrap: node has Raft state but no configuration; refusing to bootstrap with %s: %w",
			peersString(want), ErrBootstrapConflict)
	}
	return fmt.Errorf("consensus: bootstrap: already bootstrapped with %s; refusing the different list %s: %w",
		peersString(have), peersString(want), ErrBootstrapConflict)
}

// checkPeers validates a bootstrap list and returns it sorted by ID.
func (n *Node) checkPeers(members []Peer) ([]Peer, error) {
	if len(members) == 0 {
		return nil, errors.New("consensus: bootstrap: member list is empty")
	}
	ps := slices.Clone(members)
	slices.SortFunc(ps, func(a, b Peer) int { return cmp.Compare(a.ID, b.ID) })
	addrs := make(map[string]string)
	self := false
	for i, p := range ps {
		if err := checkID("id", p.ID); err != nil {
			return nil, fmt.Errorf("consensus: bootstrap: peer %d: %s", i, err.detail())
		}
		if err := checkAddr("addr", p.Addr, true); err != nil {
			return nil, fmt.Errorf("consensus: bootstrap: peer %q: %s", p.ID, err.detail())
		}
		if i > 0 && ps[i-1].ID == p.ID {
			return nil, fmt.Errorf("consensus: bootstrap: peer id %q is listed twice", p.ID)
		}
		if other, ok := addrs[p.Addr]; ok {
			return nil, fmt.Errorf("consensus: bootstrap: peers %q and %q share address %q", other, p.ID, p.Addr)
		}
		addrs[p.Addr] = p.ID
		if p.ID == n.id {
			self = true
			if !addrMatches(p.Addr, n.Addr()) {
				return nil, fmt.Errorf("consensus: bootstrap: this node %q is listed at %q but advertises %q", n.id, p.Addr, n.Addr())
			}
		}
	}
	if !self {
		return nil, fmt.Errorf("consensus: bootstrap: this node %q is not in the member list %s", n.id, peersString(ps))
	}
	return ps, nil
}

// addrMatches reports whether listed, a member's Raft address as the
// operator wrote it (an IP or a host name), reaches advertised, the address
// the transport advertises (always an IP): equal, or a host name that
// resolves to that IP with the same port.
func addrMatches(listed, advertised string) bool {
	if listed == advertised {
		return true
	}
	lh, lp, err1 := net.SplitHostPort(listed)
	ah, ap, err2 := net.SplitHostPort(advertised)
	aip := net.ParseIP(ah)
	if err1 != nil || err2 != nil || lp != ap || aip == nil || net.ParseIP(lh) != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, lh)
	if err != nil {
		return false
	}
	for _, ip := range ips {
		if ip.IP.Equal(aip) {
			return true
		}
	}
	return false
}

func peersString(ps []Peer) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "[" + strings.Join(s, " ") + "]"
}

// Configuration returns the latest Raft configuration (voters and
// non-voters), sorted by ID.
func (n *Node) Configuration() ([]Peer, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("consensus: configuration: %w", err)
	}
	var ps []Peer
	for _, s := range f.Configuration().Servers {
		ps = append(ps, Peer{ID: string(s.ID), Addr: string(s.Address)})
	}
	slices.SortFunc(ps, func(a, b Peer) int { return cmp.Compare(a.ID, b.ID) })
	return ps, nil
}

// Propose validates cmd against the leader's state and, if valid, commits it
// and returns the state right after it. Only the leader proposes; elsewhere
// the error is a [*NotLeaderError] naming the leader. An invalid command
// returns a [*ValidationError] and nothing is proposed.
//
// If ctx ends or leadership is lost after the command was handed to raft,
// the error says so and the command may still commit; look at the state
// before retrying.
func (n *Node) Propose(ctx context.Context, cmd Command) (State, error) {
	if cmd == nil {
		return State{}, invalid("type", "", "nil command")
	}
	if !n.IsLeader() {
		return State{}, n.notLeader()
	}
	// A new leader may not have applied the previous terms' entries yet;
	// validate against a state that has.
	if term := n.raft.CurrentTerm(); n.barrierTerm.Load() != term {
		if err := n.Barrier(ctx); err != nil {
			return State{}, err
		}
		n.barrierTerm.Store(term)
	}
	if err := n.State().Validate(cmd); err != nil {
		return State{}, err
	}
	b, err := Encode(cmd)
	if err != nil {
		return State{}, err
	}
	f := n.raft.Apply(b, enqueueTimeout(ctx))
	type result struct {
		resp any
		err  error
	}
	done := make(chan result, 1)
	go func() {
		err := f.Error()
		var resp any
		if err == nil {
			resp = f.Response()
		}
		done <- result{resp, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return State{}, fmt.Errorf("consensus: propose %s: outcome unknown: %w", cmd.Type(), ctx.Err())
	}
	if r.err != nil {
		return State{}, n.raftError("propose "+string(cmd.Type()), r.err, true)
	}
	switch v := r.resp.(type) {
	case State:
		return v, nil
	case error:
		return State{}, v
	default:
		return State{}, fmt.Errorf("consensus: propose %s: unexpected FSM response %T", cmd.Type(), r.resp)
	}
}

// Barrier waits until every command committed before it is applied on this
// node, which must be the leader.
func (n *Node) Barrier(ctx context.Context) error {
	return n.waitFuture(ctx, "barrier", n.raft.Barrier(enqueueTimeout(ctx)))
}

// AddVoter adds (or updates the address of) a voting manager. Leader only.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	if err := checkID("id", id); err != nil {
		return fmt.Errorf("consensus: add voter: %s", err.detail())
	}
	if err := checkAddr("addr", addr, true); err != nil {
		return fmt.Errorf("consensus: add voter %q: %s", id, err.detail())
	}
	op := "add voter " + id
	return n.waitFuture(ctx, op, n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx)))
}

// RemoveServer removes a manager from the Raft configuration. Leader only.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	op := "remove server " + id
	return n.waitFuture(ctx, op, n.raft.RemoveServer(raft.ServerID(id), 0, enqueueTimeout(ctx)))
}

// Snapshot takes a snapshot now and compacts the log.
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("consensus: snapshot: %w", err)
	}
	return nil
}

// Stats returns raft's statistics (state, term, indexes, last contact...).
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// Close stops the node: raft, then the transport and the store. It is safe
// to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
		n.raft.DeregisterObserver(n.observer)
		close(n.done)
		n.wg.Wait()
		if err := n.transport.Close(); err != nil {
			errs = append(errs, fmt.Errorf("transport: %w", err))
		}
		if err := n.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("consensus: close: %w", err)
		}
		n.logger.Info("consensus: node closed")
	})
	return n.closeErr
}

func (n *Node) notLeader() *NotLeaderError {
	id, addr := n.Leader()
	if id == n.id {
		// We were leader a moment ago.
		id, addr = "", ""
	}
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// raftError gives context to an error of a raft future. Losing leadership
// before an entry committed leaves its outcome unknown unless the entry
// changes nothing (a barrier).
func (n *Node) raftError(op string, err error, changes bool) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost) && !changes:
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("consensus: %s: outcome unknown: %w", op, err)
	default:
		return fmt.Errorf("consensus: %s: %w", op, err)
	}
}

func (n *Node) waitFuture(ctx context.Context, op string, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return n.raftError(op, err, op != "barrier")
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("consensus: %s: %w", op, ctx.Err())
	}
}

// enqueueTimeout turns ctx's deadline into raft's enqueue timeout (0: none).
func enqueueTimeout(ctx context.Context) time.Duration {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	if d := time.Until(dl); d > 0 {
		return d
	}
	return time.Nanosecond
}
