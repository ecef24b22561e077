// Package managertest runs real managers in-process for tests: consensus
// nodes and ManagerService servers on loopback ports, speaking mutual TLS
// with certificates from a throw-away CA (or plaintext).
package managertest

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/quire-ha/quire/authz"
	"github.com/quire-ha/quire/certs"
	"github.com/quire-ha/quire/consensus"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/manager/server"
)

// WaitTimeout bounds every wait of this package.
const WaitTimeout = 20 * time.Second

// Options configures [Start].
type Options struct {
	// Insecure runs gRPC and Raft in plaintext.
	Insecure bool
	// CommitRecordInterval is passed to the servers (default 100ms).
	CommitRecordInterval time.Duration
	// AutoFailover lets the leader fail over automatically (off by
	// default, so that tests which kill a primary on purpose keep it).
	AutoFailover bool
	// Agents, if set, replaces the servers' gRPC client of the agents.
	Agents server.Agents
}

// Cluster is a set of in-process managers. Managers[i] is nil while
// manager i is stopped.
type Cluster struct {
	// Revoked is every manager's revocation list (they follow Raft's).
	Revoked  *certs.RevocationList
	t        testing.TB
	dir      string
	opts     Options
	peers    []server.Peer
	raftCfgs []consensus.Config
	Managers []*Manager
}

// Manager is one running manager.
type Manager struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	Node     *consensus.Node
	Server   *server.Server
	grpc     *grpc.Server
	served   chan struct{}

	stopRevocations context.CancelFunc
}

// Start starts n managers (ids m1..mn), bootstraps them and waits for a
// leader. They stop at the end of the test.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.CommitRecordInterval == 0 {
		opts.CommitRecordInterval = 100 * time.Millisecond
	}
	c := &Cluster{t: t, dir: t.TempDir(), opts: opts, Managers: make([]*Manager, n), raftCfgs: make([]consensus.Config, n),
		Revoked: certs.NewRevocationList()}
	t.Cleanup(c.StopAll)
	if !opts.Insecure {
		if err := certs.InitCA(c.CADir(), "managertest CA"); err != nil {
			t.Fatal(err)
		}
	}
	// Reserve the gRPC ports first: every server needs the whole peer list.
	lns := make([]net.Listener, n)
	nodes := make([]*consensus.Node, n)
	for i := range n {
		id := fmt.Sprintf("m%d", i+1)
		if !opts.Insecure {
			if err := certs.Issue(c.CADir(), c.CADir(), id, certs.RoleManager, []string{"127.0.0.1", "localhost"}); err != nil {
				t.Fatal(err)
			}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[i] = ln
		cfg := consensus.Config{
			ID:                 id,
			DataDir:            filepath.Join(c.dir, id),
			BindAddr:           "127.0.0.1:0",
			Logger:             Logger(t),
			TLS:                c.ClientTLS(id),
			HeartbeatTimeout:   500 * time.Millisecond,
			ElectionTimeout:    500 * time.Millisecond,
			LeaderLeaseTimeout: 250 * time.Millisecond,
			CommitTimeout:      10 * time.Millisecond,
			TransportTimeout:   2 * time.Second,
			PeerIDs:            ids(n),
		}
		node, err := consensus.Open(cfg)
		if err != nil {
			t.Fatalf("open %s: %v", id, err)
		}
		cfg.BindAddr = node.Addr()
		c.raftCfgs[i], nodes[i] = cfg, node
		c.peers = append(c.peers, server.Peer{ID: id, RaftAddr: node.Addr(), GRPCAddr: ln.Addr().String()})
	}
	var rp []consensus.Peer
	for _, p := range c.peers {
		rp = append(rp, consensus.Peer{ID: p.ID, Addr: p.RaftAddr})
	}
	for i, node := range nodes {
		if err := node.Bootstrap(rp); err != nil {
			t.Fatalf("bootstrap %s: %v", node.ID(), err)
		}
		c.Managers[i] = c.serve(i, node, lns[i])
	}
	c.Leader()
	return c
}

// Logger writes to t.Log when QUIRE_TEST_LOG is debug, info or warn, and
// discards otherwise. Records after the test ends are dropped.
func Logger(t testing.TB) *slog.Logger {
	var level slog.Level
	switch os.Getenv("QUIRE_TEST_LOG") {
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	case "warn":
		level = slog.LevelWarn
	default:
		return slog.New(slog.DiscardHandler)
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// CADir is the directory of the cluster's CA and of every certificate
// issued for it (name.crt, name.key).
func (c *Cluster) CADir() string { return filepath.Join(c.dir, "ca") }

// ids are the managers' IDs m1..mn.
func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%d", i+1)
	}
	return out
}

// RoleFor is the role Files gives name: manager for the managers' IDs,
// operator for names starting with "operator", agent otherwise.
func (c *Cluster) RoleFor(name string) certs.Role {
	for _, p := range c.peers {
		if p.ID == name {
			return certs.RoleManager
		}
	}
	if strings.HasPrefix(name, "operator") {
		return certs.RoleOperator
	}
	return certs.RoleAgent
}

// Files returns the certificate files of name in the role RoleFor gives
// it, issuing them on first use.
func (c *Cluster) Files(name string) certs.Files {
	c.t.Helper()
	return c.FilesAs(name, c.RoleFor(name))
}

// FilesAs returns the certificate files of name, issuing them for role on
// first use (a name keeps the role it was first issued with).
func (c *Cluster) FilesAs(name string, role certs.Role) certs.Files {
	c.t.Helper()
	dir := c.CADir()
	if _, err := os.Stat(certs.CertFile(dir, name)); err != nil {
		if err := certs.Issue(dir, dir, name, role, []string{"127.0.0.1", "localhost"}); err != nil {
			c.t.Fatal(err)
		}
	}
	return certs.Files{CA: filepath.Join(dir, certs.CACert), Cert: certs.CertFile(dir, name), Key: certs.KeyFile(dir, name)}
}

// ClientTLS returns the client TLS configuration of name (nil when the
// cluster is insecure): it presents name's certificate (Files) and accepts
// only managers as servers.
func (c *Cluster) ClientTLS(name string) *tls.Config {
	c.t.Helper()
	return c.clientTLS(name, certs.RoleManager)
}

// clientTLS is name's client configuration towards servers of role peer.
func (c *Cluster) clientTLS(name string, peer certs.Role) *tls.Config {
	c.t.Helper()
	if c.opts.Insecure {
		return nil
	}
	cfg, err := certs.ClientConfig(c.Files(name), "")
	if err != nil {
		c.t.Fatal(err)
	}
	certs.RequirePeer(cfg, certs.WantRole(peer))
	certs.CheckRevoked(cfg, c.Revoked)
	return cfg
}

func (c *Cluster) serve(i int, node *consensus.Node, ln net.Listener) *Manager {
	c.t.Helper()
	id := node.ID()
	srv, err := server.New(server.Config{
		Node: node, Peers: c.peers, TLS: c.ClientTLS(id), AgentTLS: c.clientTLS(id, certs.RoleAgent), Insecure: c.opts.Insecure,
		Logger: Logger(c.t).With("manager", id), CommitRecordInterval: c.opts.CommitRecordInterval,
		AutoFailover: c.opts.AutoFailover, Agents: c.opts.Agents,
	})
	if err != nil {
		c.t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if !c.opts.Insecure {
		tc, err := certs.ServerConfig(c.Files(id))
		if err != nil {
			c.t.Fatal(err)
		}
		certs.CheckRevoked(tc, c.Revoked)
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	opts = append(opts, grpc.UnaryInterceptor(srv.UnaryInterceptor()))
	az, err := authz.New(authz.Config{Plaintext: c.opts.Insecure, Forwarders: ids(len(c.peers)), Logger: Logger(c.t).With("manager", id), Revoked: c.Revoked})
	if err != nil {
		c.t.Fatal(err)
	}
	opts = append(opts, az.ServerOptions()...)
	g := grpc.NewServer(opts...)
	srv.Register(g)
	if err := az.Verify(g); err != nil {
		c.t.Fatal(err)
	}
	m := &Manager{ID: id, RaftAddr: node.Addr(), GRPCAddr: ln.Addr().String(), Node: node, Server: srv, grpc: g, served: make(chan struct{})}
	rctx, stop := context.WithCancel(context.Background())
	m.stopRevocations = stop
	go server.FollowRevocations(rctx, node, c.Revoked, nil)
	go func() {
		defer close(m.served)
		g.Serve(ln)
	}()
	return m
}

// Stop stops manager i abruptly: its gRPC server, its service and its node.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	m := c.Managers[i]
	if m == nil {
		return
	}
	m.stopRevocations()
	m.grpc.Stop()
	<-m.served
	if err := m.Server.Close(); err != nil {
		c.t.Errorf("close server %s: %v", m.ID, err)
	}
	if err := m.Node.Close(); err != nil {
		c.t.Errorf("close node %s: %v", m.ID, err)
	}
	c.Managers[i] = nil
}

// StopAll stops every running manager.
func (c *Cluster) StopAll() {
	for i := range c.Managers {
		c.Stop(i)
	}
}

// Restart starts stopped manager i again from its data directory on its
// old addresses.
func (c *Cluster) Restart(i int) *Manager {
	c.t.Helper()
	if c.Managers[i] != nil {
		c.t.Fatalf("restart %s: still running", c.Managers[i].ID)
	}
	node, err := consensus.Open(c.raftCfgs[i])
	if err != nil {
		c.t.Fatalf("reopen %s: %v", c.raftCfgs[i].ID, err)
	}
	var ln net.Listener
	deadline := time.Now().Add(WaitTimeout)
	for {
		ln, err = net.Listen("tcp", c.peers[i].GRPCAddr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			node.Close()
			c.t.Fatalf("restart %s: listen %s: %v", node.ID(), c.peers[i].GRPCAddr, err)
		}
		time.Sleep(50 * time.Millisecond) // the port is still being released
	}
	c.Managers[i] = c.serve(i, node, ln)
	return c.Managers[i]
}

// Addrs returns every manager's gRPC address, running or not.
func (c *Cluster) Addrs() []string {
	var as []string
	for _, p := range c.peers {
		as = append(as, p.GRPCAddr)
	}
	return as
}

// Peers returns the managers' peer list.
func (c *Cluster) Peers() []server.Peer { return append([]server.Peer(nil), c.peers...) }

// Leader waits until exactly one running manager leads and every running
// manager names it, and returns its index.
func (c *Cluster) Leader() int {
	c.t.Helper()
	leader := -1
	WaitFor(c.t, "a leader every running manager agrees on", func() bool {
		leader = -1
		for i, m := range c.Managers {
			if m != nil && m.Node.IsLeader() {
				if leader >= 0 {
					return false
				}
				leader = i
			}
		}
		if leader < 0 {
			return false
		}
		for _, m := range c.Managers {
			if m == nil {
				continue
			}
			if id, _ := m.Node.Leader(); id != c.Managers[leader].ID {
				return false
			}
		}
		return true
	})
	return leader
}

// Client returns a client of every manager (running or not) that uses
// name's certificate; it is closed at the end of the test.
func (c *Cluster) Client(name string) *manager.Client {
	c.t.Helper()
	cl, err := manager.NewClient(manager.ClientConfig{
		Addrs: c.Addrs(), TLS: c.ClientTLS(name), Insecure: c.opts.Insecure, Logger: Logger(c.t),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// Context returns a context that ends after WaitTimeout or with the test.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), WaitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond every 10ms until it holds, failing the test after
// WaitTimeout.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", WaitTimeout, what)
		}
		<-tick.C
	}
}
