// Package agent is the process that runs beside each mariadbd: on the
// primary it extracts the binlog into the transaction log and serves it to
// the replicas; on a replica it receives the log and applies it. It owns
// the local database and carries out the role the managers (or, without
// managers, its static configuration) give it.
package agent

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/binlog"
	"github.com/quire-ha/quire/buildinfo"
	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/config"
	"github.com/quire-ha/quire/internal/rpcopts"
	"github.com/quire-ha/quire/internal/statefile"
	"github.com/quire-ha/quire/localdb"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/ship"
	"github.com/quire-ha/quire/txlog"
)

// Role kinds.
const (
	RoleNone    = "none"
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// Role is what the agent does: serve the log as primary of an epoch, or
// stream it from a primary agent.
type Role struct {
	Kind         string `json:"kind"`
	Epoch        uint64 `json:"epoch"`
	PrimaryAgent string `json:"primary_agent,omitempty"`
}

// maxMsg bounds gRPC messages: a record may be as large as a transaction.
const maxMsg = txlog.MaxRecordSize + 1<<20

// streamWindow and connWindow are the gRPC flow-control windows of the
// agent's streams and connections.
const (
	streamWindow = 8 << 20
	connWindow   = 16 << 20
)

// Agent is one running agent.
type Agent struct {
	cfg    *config.Agent
	log    *slog.Logger
	reg    *prometheus.Registry
	db     *sql.DB
	txl    *txlog.Log
	ship   *ship.Server
	gsrv   *grpc.Server
	glis   net.Listener
	hsrv   *http.Server
	hlis   net.Listener
	dialer []grpc.DialOption

	binlogMetrics *binlog.Metrics
	gateMetrics   *gateMetrics

	mu        sync.Mutex
	role      Role
	stopRole  func()
	roleErr   error     // the role's last failure, until it is up again
	roleErrAt time.Time // when roleErr happened
	sup       *superviseMetrics
	recv      *ship.Receiver
	rep       *replicaApply // the replica's applier (apply.go), made on first use
	gate      *ackGate
	started   time.Time

	serving  atomic.Bool // primary: extracting and serving the log
	writable atomic.Bool // primary: its database was last seen writable
	// dbSeen is when the heartbeat's probe last found the database
	// answering (unix ns), or -1 when its last probe failed; 0 before any.
	dbSeen atomic.Int64
	// promoteMu serializes Promote: the managers' leader and the follower
	// may both call it.
	promoteMu sync.Mutex

	mcli      *manager.Client       // the managers' client, nil without managers
	lease     lease                 // the primary lease (mu)
	revoked   *certs.RevocationList // refused in every handshake and call (revoke.go)
	asg       manager.Assignment    // the managers' last answer (mu)
	hasAsg    bool
	asgSeq    uint64 // number of the heartbeat asg answered (mu)
	followErr error  // why the last attempt to follow asg failed (mu)
	ignored   atomic.Bool
	hbSeq     atomic.Uint64 // heartbeats sent
	// hbNow asks the heartbeat loop to report at once instead of at its
	// next tick (a role just failed: the managers' fast path should not
	// wait up to a heartbeat to hear that the database is gone).
	hbNow chan struct{}
	// wantDegraded is the seqno the gate wants the degraded marker at, 0
	// if none; askedSeq the first heartbeat that carried that wish.
	wantDegraded atomic.Uint64
	askedSeq     atomic.Uint64

	closeOnce sync.Once
	closeErr  error
}

// New opens the agent's transaction log and listeners. Run starts it.
func New(cfg *config.Agent, logger *slog.Logger) (*Agent, error) {
	if logger == nil {
		logger = slog.Default()
	}
	a := &Agent{cfg: cfg, log: logger, reg: prometheus.NewRegistry(), role: Role{Kind: RoleNone}, started: time.Now(), hbNow: make(chan struct{}, 1)}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var err error
	a.txl, err = txlog.Open(filepath.Join(cfg.DataDir, "txlog"), txlog.Options{
		SegmentSize: int64(cfg.Log.SegmentBytes), Logger: logger, Registerer: a.reg,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.db, err = localdb.Open(cfg.MySQL)
	if err != nil {
		a.txl.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	if a.sup, err = newSuperviseMetrics(a.reg); err != nil {
		a.Close()
		return nil, err
	}
	if a.binlogMetrics, err = binlog.NewMetrics(a.reg); err != nil {
		a.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	shipMetrics, err := ship.NewMetrics(a.reg)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.ship = ship.NewServer(ship.ServerConfig{Node: cfg.NodeID, Log: a.txl, Logger: logger, Keepalive: cfg.Replication.Heartbeat, Metrics: shipMetrics})

	// Fixed flow-control windows turn off gRPC's bandwidth-delay
	// estimation, which pings the peer about once per round trip while
	// data flows: on a log stream of small batches that is a write and a
	// read on both sides for every few batches. The windows are large
	// enough for a full batch (BatchBytes) in flight on every stream.
	serverOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(1 << 20), grpc.MaxSendMsgSize(maxMsg),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow)}
	serverOpts = append(serverOpts, rpcopts.Server()...)
	a.dialer = []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg)),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow)}
	a.dialer = append(a.dialer, rpcopts.Dial()...)
	if err := a.loadRevocations(); err != nil {
		a.Close()
		return nil, err
	}
	if cfg.TLS.InsecurePlaintext {
		a.dialer = append(a.dialer, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		files := certs.Files{CA: cfg.TLS.CAFile, Cert: cfg.TLS.CertFile, Key: cfg.TLS.KeyFile}
		st, err := certs.ServerConfig(files)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("agent: %w", err)
		}
		ct, err := certs.ClientConfig(files, "")
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("agent: %w", err)
		}
		certs.RequirePeer(ct, certs.WantRole(certs.RoleAgent)) // this agent dials only primary agents
		certs.CheckRevoked(st, a.revoked)
		certs.CheckRevoked(ct, a.revoked)
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(st)))
		a.dialer = append(a.dialer, grpc.WithTransportCredentials(credentials.NewTLS(ct)))
	}
	if a.managed() {
		if a.mcli, err = newManagerClient(cfg, logger, a.revoked); err != nil {
			a.Close()
			return nil, err
		}
	}
	guard, err := a.newGuard() // authorization and bounds: guard.go
	if err != nil {
		a.Close()
		return nil, err
	}
	serverOpts = append(serverOpts, guard.options()...)
	a.gsrv = grpc.NewServer(serverOpts...)
	a.ship.Register(a.gsrv)
	agentpb.RegisterAgentControlServer(a.gsrv, &control{a: a})
	if err := guard.verify(a.gsrv); err != nil {
		a.Close()
		return nil, err
	}

	if a.glis, err = net.Listen("tcp", cfg.Listen); err != nil {
		a.Close()
		return nil, fmt.Errorf("agent: listen (listen %s): %w", cfg.Listen, err)
	}
	if a.hlis, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
		a.Close()
		return nil, fmt.Errorf("agent: listen (http_listen %s): %w", cfg.HTTPListen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", a.serveStatus)
	mux.HandleFunc("GET /primary", a.servePrimary)
	mux.HandleFunc("GET /replica", a.serveReplica)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	a.hsrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return a, nil
}

// GRPCAddr and HTTPAddr are the bound listener addresses.
func (a *Agent) GRPCAddr() string { return a.glis.Addr().String() }

// HTTPAddr is the bound address of the health and metrics server.
func (a *Agent) HTTPAddr() string { return a.hlis.Addr().String() }

// Log returns the agent's transaction log.
func (a *Agent) Log() *txlog.Log { return a.txl }

// Run serves until ctx is done, taking the static role if one is configured.
func (a *Agent) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- a.gsrv.Serve(a.glis) }()
	go func() {
		if err := a.hsrv.Serve(a.hlis); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	a.log.Info("agent started", "node", a.cfg.NodeID, "version", buildinfo.String(), "grpc", a.GRPCAddr(), "http", a.HTTPAddr(),
		"log_first", a.txl.FirstSeqno(), "log_last", a.txl.LastSeqno())
	go a.runRetention(ctx)
	if a.mcli != nil {
		mctx, mcancel := context.WithCancel(ctx)
		mdone := make(chan struct{})
		go func() { defer close(mdone); a.runManaged(mctx) }()
		defer func() { mcancel(); <-mdone }()
		go a.followRevocations(mctx)
	}
	if st := a.cfg.Static; st.Role != RoleNone {
		if err := a.SetRole(Role{Kind: st.Role, Epoch: uint64(st.Epoch), PrimaryAgent: st.PrimaryAgent}); err != nil {
			return err
		}
	}
	var err error
	defer a.Close()
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("agent: server stopped: %w", err)
	case <-a.txl.Failed():
		// Half-alive is worse than down: the in-memory log no longer
		// matches the disk. The service manager restarts the agent and
		// recovery reads the files again.
		err = fmt.Errorf("agent: the transaction log failed (%w); stopping so that a restart recovers it from its files", a.txl.Err())
	}
	return err
}

// SetRole stops the current role and starts r.
func (a *Agent) SetRole(r Role) error {
	switch r.Kind {
	case RoleNone, RolePrimary, RoleReplica:
	default:
		return fmt.Errorf("agent: unknown role %q (want none, primary or replica)", r.Kind)
	}
	if r.Kind != RoleNone && r.Epoch == 0 {
		return fmt.Errorf("agent: role %s needs an epoch ≥ 1", r.Kind)
	}
	if r.Kind == RoleReplica && r.PrimaryAgent == "" {
		return errors.New("agent: a replica role needs the primary agent's address")
	}
	a.mu.Lock()
	stop := a.stopRole
	a.stopRole = nil
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	a.mu.Lock()
	a.role, a.roleErr = r, nil
	a.stopRole = func() { cancel(); <-done }
	a.mu.Unlock()
	a.log.Info("taking role", "role", r.Kind, "epoch", r.Epoch, "primary_agent", r.PrimaryAgent)
	go func() {
		defer close(done)
		a.supervise(ctx, r)
	}()
	return nil
}

// runReplica streams the log from the primary agent and applies it to the
// local database up to the commit index the stream carries. The applier's
// errors never stop the stream: they show in Status.Apply.
func (a *Agent) runReplica(ctx context.Context, r Role) error {
	a.ship.SetRole(false, r.Epoch)
	conn, err := grpc.NewClient(r.PrimaryAgent, a.dialer...)
	if err != nil {
		return fmt.Errorf("agent: primary agent address %s: %w", r.PrimaryAgent, err)
	}
	defer conn.Close()
	ra := a.replicaApplier()
	// A former primary's database holds its own term's records: the log
	// must not be cut below them (see replicaApply.seed).
	if st, err := a.loadExtractStart(); err == nil && st != nil {
		if held, err := lastOfEpoch(a.txl, st.Epoch, st.FirstSeqno); err == nil && held != nil {
			ra.raiseKeep(held.Seqno)
		}
	}
	recv := ship.NewReceiver(ship.ReceiverConfig{
		Node: a.cfg.NodeID, Log: a.txl, Logger: a.log,
		KnownEpoch: func() uint64 { return r.Epoch },
		KeepFrom:   ra.keepFrom,
		DeadAfter:  a.cfg.Replication.Heartbeat * time.Duration(a.cfg.Replication.DeadAfterHeartbeats+1),
		Accepted:   func() { a.roleUp(r) },
	})
	a.mu.Lock()
	a.recv = recv
	a.mu.Unlock()
	actx, stop := context.WithCancel(ctx)
	applied := make(chan struct{})
	go func() { defer close(applied); ra.run(actx, recv) }()
	defer func() { stop(); <-applied }()
	return recv.Run(ctx, conn)
}

// Status is what /status and the managers see of an agent.
type Status struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	Role    Role   `json:"role"`
	// RoleError is why the role's last run failed, while the supervisor
	// waits to run it again; RoleErrorAt when.
	RoleError   string    `json:"role_error,omitempty"`
	RoleErrorAt time.Time `json:"role_error_at,omitzero"`
	// FollowError is why the agent could not take the role the managers
	// assigned; it tries again with backoff.
	FollowError  string `json:"follow_error,omitempty"`
	FirstSeqno   uint64 `json:"first_seqno"`
	LastSeqno    uint64 `json:"last_seqno"`
	LastEpoch    uint64 `json:"last_epoch"`
	DurableSeqno uint64 `json:"durable_seqno"`
	CommitSeqno  uint64 `json:"commit_seqno"`
	// Serving: the primary extracts its binlog and serves the log.
	Serving bool `json:"serving"`
	// Writable: the primary's database was last seen writable.
	Writable bool      `json:"writable"`
	Started  time.Time `json:"started"`
	// Gate is the primary's ack gate: K, sync set, replicas' positions.
	Gate *GateStatus `json:"gate,omitempty"`
	// Apply is the replica's applier: positions, lag, channels, errors.
	Apply *ApplyStatus `json:"apply,omitempty"`
}

// GateStatus is the primary's ack gate as /status shows it.
type GateStatus struct {
	K             int           `json:"k"`
	Policy        string        `json:"policy"`
	Degraded      bool          `json:"degraded"`
	DegradedSince uint64        `json:"degraded_since,omitempty"`
	Replicas      []GateReplica `json:"replicas"`
}

// GateReplica is one replica as the gate sees it.
type GateReplica struct {
	ID      string `json:"id"`
	Durable uint64 `json:"durable_seqno"`
	Lag     uint64 `json:"lag_seqnos"`
	Healthy bool   `json:"healthy"`
	Member  bool   `json:"in_sync_set"`
	Counted bool   `json:"counted"`
}

// errorText is what the managers are told is wrong, empty if nothing.
func (st Status) errorText() string {
	var parts []string
	if st.FollowError != "" {
		parts = append(parts, "taking the assigned role: "+st.FollowError)
	}
	if st.RoleError != "" {
		parts = append(parts, st.Role.Kind+" role: "+st.RoleError)
	}
	return strings.Join(parts, "; ")
}

// Status reports the agent's role and log positions.
func (a *Agent) Status() Status {
	a.mu.Lock()
	role, roleErr, roleErrAt, followErr, recv, gate, rep := a.role, a.roleErr, a.roleErrAt, a.followErr, a.recv, a.gate, a.rep
	a.mu.Unlock()
	last, lastEpoch := a.txl.Last()
	st := Status{
		Node: a.cfg.NodeID, Version: buildinfo.String(), Role: role,
		FirstSeqno: a.txl.FirstSeqno(), LastSeqno: last, LastEpoch: lastEpoch,
		DurableSeqno: a.txl.DurableSeqno(), Started: a.started, Serving: a.serving.Load(),
	}
	if roleErr != nil {
		st.RoleError, st.RoleErrorAt = roleErr.Error(), roleErrAt
	}
	if followErr != nil {
		st.FollowError = followErr.Error()
	}
	st.Writable = st.Serving && a.writable.Load()
	switch {
	case role.Kind == RoleReplica && recv != nil:
		st.CommitSeqno = recv.CommitIndex()
		if rep != nil {
			st.Apply = rep.status()
		}
	case role.Kind == RolePrimary && gate != nil:
		gs := gate.status()
		st.CommitSeqno = gs.CommitIndex
		st.Gate = &GateStatus{K: gs.K, Policy: gs.Policy.String(), Degraded: gs.DegradedAcking, DegradedSince: gs.DegradedSince}
		for _, r := range gs.Replicas {
			st.Gate.Replicas = append(st.Gate.Replicas, GateReplica{ID: r.ID, Durable: r.Durable, Lag: r.Lag, Healthy: r.Healthy, Member: r.Member, Counted: r.Counted})
		}
	}
	return st
}

func (a *Agent) serveStatus(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(redactStatus(a.Status())) // no raw database errors without authentication (redact.go)
}

// servePrimary answers 200 only on the writable primary of the current
// epoch (HAProxy httpchk). It runs no query: it reads the state the role's
// own loops keep (keepWritable probes the database every heartbeat), so a
// load balancer polling it costs the database nothing.
func (a *Agent) servePrimary(w http.ResponseWriter, _ *http.Request) {
	st := a.Status()
	asg, known := a.assignment()
	if err := primaryReady(st, a.leaseHeld(st.Role.Epoch), a.managed(), known, asg.Epoch, asg.Primary); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "primary")
}

// primaryReady decides /primary from cached state: this agent serves the
// primary role without error, its database was last seen writable and,
// under managers, it holds the lease and the managers' last assignment
// names it primary of the same epoch (an old primary cut off from a newer
// term answers 503 even before it fences itself).
func primaryReady(st Status, leaseHeld, managed, assigned bool, asgEpoch uint64, asgPrimary string) error {
	switch {
	case st.Role.Kind != RolePrimary:
		return errors.New("not the primary")
	case st.RoleError != "":
		return errors.New("primary role failing")
	case !st.Writable:
		return errors.New("primary database not writable")
	case !managed:
		return nil
	case !assigned:
		return errors.New("no assignment from the managers yet")
	case asgPrimary != st.Node || asgEpoch != st.Role.Epoch:
		return fmt.Errorf("the managers name %s primary of epoch %d", asgPrimary, asgEpoch)
	case !leaseHeld:
		return errors.New("primary lease not held")
	}
	return nil
}

// serveReplica answers 200 only on a healthy replica whose applier runs
// and lags by at most max_lag_tx (default ReplicaMaxLag) committed
// transactions; max_lag is the older name. Like /primary it runs no query:
// the applier reports a database it cannot reach as an error.
func (a *Agent) serveReplica(w http.ResponseWriter, r *http.Request) {
	maxLag := uint64(ReplicaMaxLag)
	for _, name := range []string{"max_lag", "max_lag_tx"} {
		if v := r.URL.Query().Get(name); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				http.Error(w, name+": want a number of transactions", http.StatusBadRequest)
				return
			}
			maxLag = n
		}
	}
	if err := replicaHealthy(redactStatus(a.Status()), maxLag); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	switch seen := a.dbSeen.Load(); {
	case seen < 0:
		http.Error(w, "database unreachable", http.StatusServiceUnavailable)
		return
	case seen == 0 || time.Since(time.Unix(0, seen)) > 3*a.cfg.Replication.Heartbeat:
		// No recent probe (no managers send heartbeats): ask the database.
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		if err := a.db.PingContext(ctx); err != nil {
			http.Error(w, "database unreachable", http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "replica")
}

// Close stops the role and the servers and closes the log. It is safe to
// call more than once.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() { a.closeErr = a.close() })
	return a.closeErr
}

func (a *Agent) close() error {
	a.mu.Lock()
	stop := a.stopRole
	a.stopRole = nil
	a.mu.Unlock()
	if stop != nil {
		stop()
	}
	if a.gsrv != nil {
		a.gsrv.Stop()
	}
	if a.hsrv != nil {
		a.hsrv.Close()
	}
	if a.glis != nil {
		a.glis.Close()
	}
	if a.hlis != nil {
		a.hlis.Close()
	}
	if a.mcli != nil {
		a.mcli.Close()
	}
	var err error
	if a.txl != nil {
		err = a.txl.Close()
	}
	if a.db != nil {
		a.db.Close()
	}
	return err
}

// writeState replaces one of the agent's state files durably.
func writeState(path string, data []byte) error {
	if err := statefile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}
