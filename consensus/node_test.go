package consensus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Tests run real raft nodes on loopback TCP in temporary directories. Set
// QUIRE_TEST_RAFT_LOG=debug (or info, warn) to see raft's logs with -v.

const waitTimeout = 20 * time.Second

// testLogger writes to t.Log until the test's cleanups are done, then drops
// records from goroutines that outlive the test.
func testLogger(t *testing.T) *slog.Logger {
	var level slog.Level
	switch os.Getenv("QUIRE_TEST_RAFT_LOG") {
	case "":
		return slog.New(slog.DiscardHandler)
	case "debug":
		level = slog.LevelDebug
	case "info":
		level = slog.LevelInfo
	default:
		level = slog.LevelWarn
	}
	w := &testWriter{t: t}
	t.Cleanup(w.stop) // registered first, so it runs last
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
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

// testConfig returns a node config with its data in dir/id.
func testConfig(t *testing.T, dir, id string) Config {
	return Config{
		ID:                 id,
		DataDir:            filepath.Join(dir, id),
		BindAddr:           "127.0.0.1:0",
		Logger:             testLogger(t),
		HeartbeatTimeout:   500 * time.Millisecond,
		ElectionTimeout:    500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond,
		CommitTimeout:      10 * time.Millisecond,
		TransportTimeout:   2 * time.Second,
		PeerIDs:            []string{"m1", "m2", "m3", "m4", "m5"},
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		<-tick.C
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// cluster is a set of nodes; nodes[i] is nil while node i is closed.
type cluster struct {
	t     *testing.T
	dir   string // parent of the nodes' data dirs
	cfgs  []Config
	nodes []*Node
}

// startCluster opens n nodes, optionally adjusting their configs, and
// bootstraps every one of them with the full member list.
func startCluster(t *testing.T, n int, mod func(i int, cfg *Config)) *cluster {
	t.Helper()
	// The directory's removal is registered first, so it runs after the
	// nodes are closed.
	c := &cluster{t: t, dir: t.TempDir(), cfgs: make([]Config, n), nodes: make([]*Node, n)}
	t.Cleanup(c.closeAll)
	for i := range n {
		cfg := testConfig(t, c.dir, fmt.Sprintf("m%d", i+1))
		if mod != nil {
			mod(i, &cfg)
		}
		node, err := Open(cfg)
		if err != nil {
			t.Fatalf("open %s: %v", cfg.ID, err)
		}
		cfg.BindAddr = node.Addr() // reopen on the same port
		c.cfgs[i], c.nodes[i] = cfg, node
	}
	for _, node := range c.nodes {
		if err := node.Bootstrap(c.peers()); err != nil {
			t.Fatalf("bootstrap %s: %v", node.ID(), err)
		}
	}
	return c
}

func (c *cluster) peers() []Peer {
	ps := make([]Peer, len(c.cfgs))
	for i, cfg := range c.cfgs {
		ps[i] = Peer{ID: cfg.ID, Addr: cfg.BindAddr}
	}
	return ps
}

func (c *cluster) open(i int) *Node {
	c.t.Helper()
	n, err := Open(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("reopen %s: %v", c.cfgs[i].ID, err)
	}
	c.nodes[i] = n
	return n
}

func (c *cluster) close(i int) {
	c.t.Helper()
	if err := c.nodes[i].Close(); err != nil {
		c.t.Errorf("close %s: %v", c.cfgs[i].ID, err)
	}
	c.nodes[i] = nil
}

func (c *cluster) closeAll() {
	for i, n := range c.nodes {
		if n != nil {
			c.close(i)
		}
	}
}

func (c *cluster) index(n *Node) int {
	for i, m := range c.nodes {
		if m == n {
			return i
		}
	}
	c.t.Fatalf("node %s not in cluster", n.ID())
	return -1
}

// leader waits until one of the given nodes (default: all open ones) is
// leader and every one of them names it.
func (c *cluster) leader(among ...*Node) *Node {
	c.t.Helper()
	if among == nil {
		for _, n := range c.nodes {
			if n != nil {
				among = append(among, n)
			}
		}
	}
	var l *Node
	waitFor(c.t, "a leader all nodes agree on", func() bool {
		l = nil
		for _, n := range among {
			if n.IsLeader() {
				l = n
			}
		}
		if l == nil {
			return false
		}
		for _, n := range among {
			if id, addr := n.Leader(); id != l.ID() || addr != l.Addr() {
				return false
			}
		}
		return true
	})
	return l
}

// retry runs op on the leader among the given nodes (default: all open
// ones) until it returns nil, following leadership changes. op must be
// idempotent.
func (c *cluster) retry(what string, op func(l *Node) error, among ...*Node) {
	c.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := op(c.leader(among...))
		if err == nil {
			return
		}
		var nl *NotLeaderError
		if !errors.As(err, &nl) && !errors.Is(err, raft.ErrLeadershipLost) || time.Now().After(deadline) {
			c.t.Fatalf("%s: %v", what, err)
		}
	}
}

// propose commits cmd through the leader among the given nodes (default: all
// open ones), following leadership changes. A test is its cluster's only
// proposer, so when leadership is lost with the outcome unknown, the next
// leader's state (after a barrier) tells: the state after cmd means it
// committed, the state before means retry.
func (c *cluster) propose(cmd Command, among ...*Node) State {
	c.t.Helper()
	ctx := testContext(c.t)
	var before State
	c.retry("barrier", func(l *Node) error {
		err := l.Barrier(ctx)
		before = l.State()
		return err
	}, among...)
	after, err := before.Apply(cmd)
	if err != nil {
		c.t.Fatalf("propose %T: %v", cmd, err)
	}
	for {
		l := c.leader(among...)
		st, err := l.Propose(ctx, cmd)
		var nl *NotLeaderError
		switch {
		case err == nil:
			return st
		case errors.As(err, &nl):
			continue
		case !errors.Is(err, raft.ErrLeadershipLost):
			c.t.Fatalf("propose %T on %s: %v", cmd, l.ID(), err)
		}
		c.t.Logf("propose %T on %s: %v; settling the outcome", cmd, l.ID(), err)
		var got State
		c.retry("barrier", func(l *Node) error {
			err := l.Barrier(ctx)
			got = l.State()
			return err
		}, among...)
		switch {
		case reflect.DeepEqual(got, after):
			return after
		case !reflect.DeepEqual(got, before):
			c.t.Fatalf("propose %T: state after lost leadership is neither before nor after the command: %+v", cmd, got)
		}
	}
}

// converged waits until every given node (default: all open ones) holds
// want.
func (c *cluster) converged(want State, among ...*Node) {
	c.t.Helper()
	if among == nil {
		for _, n := range c.nodes {
			if n != nil {
				among = append(among, n)
			}
		}
	}
	for _, n := range among {
		waitFor(c.t, "node "+n.ID()+" to reach the expected state", func() bool {
			return reflect.DeepEqual(n.State(), want)
		})
	}
}

// setupCommands builds a small cluster state.
func setupCommands() []Command {
	return []Command{
		AddMember{member("a", 1)}, AddMember{member("b", 2)}, AddMember{member("c", 3)},
		SetPrimary{Epoch: 1, Primary: "a", FirstSeqno: 1},
		SetSyncSet{Members: []string{"b", "c"}}, SetK{1},
		RecordCommitIndex{42},
	}
}

func TestClusterElectsAndProposes(t *testing.T) {
	c := startCluster(t, 3, nil)
	l := c.leader()
	ctx := testContext(t)
	for _, n := range c.nodes {
		id, addr, err := n.WaitLeader(ctx)
		if err != nil || id == "" || addr == "" {
			t.Fatalf("%s: WaitLeader = %q %q %v", n.ID(), id, addr, err)
		}
	}

	var st State
	for _, cmd := range setupCommands() {
		st = c.propose(cmd)
	}
	if st.Epoch != 1 || st.Primary != "a" || len(st.Members) != 3 || st.CommitIndex != 42 {
		t.Fatalf("Propose returned %+v", st)
	}
	c.converged(st)

	// A follower refuses and names the leader. (The command is invalid, so
	// nothing changes should a follower have become leader meanwhile.)
	waitFor(t, "followers to refuse proposals naming the leader", func() bool {
		l := c.leader()
		for _, f := range c.nodes {
			if f == l {
				continue
			}
			_, err := f.Propose(ctx, SetK{5})
			var nl *NotLeaderError
			if !errors.As(err, &nl) {
				t.Logf("follower %s Propose = %v; retrying", f.ID(), err)
				return false
			}
			if !errors.Is(err, raft.ErrNotLeader) {
				t.Fatalf("NotLeaderError %v does not wrap raft.ErrNotLeader", err)
			}
			if nl.LeaderID != l.ID() || nl.LeaderAddr != l.Addr() || !strings.Contains(err.Error(), l.Addr()) {
				t.Logf("follower %s names leader %q at %q (%v), want %q at %q; retrying", f.ID(), nl.LeaderID, nl.LeaderAddr, err, l.ID(), l.Addr())
				return false
			}
			if err := f.RemoveServer(ctx, "nonexistent"); !errors.As(err, &nl) {
				t.Logf("follower %s RemoveServer = %v, want NotLeaderError; retrying", f.ID(), err)
				return false
			}
		}
		return true
	})

	// An invalid command is refused before anything reaches the log.
	waitFor(t, "an invalid proposal to be refused within one term", func() bool {
		l := c.leader()
		term, last := l.raft.CurrentTerm(), l.raft.LastIndex()
		_, err := l.Propose(ctx, SetK{5})
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Logf("invalid Propose on %s = %v; retrying", l.ID(), err)
			return false
		}
		if ve.Field != "k" {
			t.Fatalf("invalid Propose = %v, want a ValidationError on k", err)
		}
		if l.raft.CurrentTerm() != term {
			return false // a new leader appends its own entry
		}
		if got := l.raft.LastIndex(); got != last {
			t.Fatalf("invalid command reached the log: last index %d -> %d", last, got)
		}
		return true
	})
	c.converged(st)

	// StateChanged fires on a commit.
	ch := c.nodes[(c.index(l)+1)%3].StateChanged()
	st = c.propose(RecordCommitIndex{43})
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatal("StateChanged did not fire")
	}
	// After a barrier the leader's state reflects every commit.
	c.retry("barrier", func(l *Node) error {
		if err := l.Barrier(ctx); err != nil {
			return err
		}
		if !reflect.DeepEqual(l.State(), st) {
			t.Fatal("leader state after barrier differs from the proposal's result")
		}
		return nil
	})
}

func TestLeaderLossElectsNewLeader(t *testing.T) {
	c := startCluster(t, 3, nil)
	for _, cmd := range setupCommands() {
		c.propose(cmd)
	}
	old := c.leader()
	oldID := old.ID()
	start := time.Now()
	c.close(c.index(old))

	l := c.leader()
	t.Logf("new leader %s agreed on %s after closing %s (heartbeat timeout %s)",
		l.ID(), time.Since(start).Round(time.Millisecond), oldID, c.cfgs[0].HeartbeatTimeout)
	if l.ID() == oldID {
		t.Fatalf("closed leader %s still leader", oldID)
	}
	st := c.propose(RecordCommitIndex{100})
	st2 := c.propose(AddMember{member("d", 4)})
	if st.CommitIndex != 100 || len(st2.Members) != 4 {
		t.Fatalf("proposals after failover: %+v / %+v", st, st2)
	}
	c.converged(st2)
}

func TestRestartKeepsState(t *testing.T) {
	c := startCluster(t, 3, nil)
	var want State
	for _, cmd := range setupCommands() {
		want = c.propose(cmd)
	}
	c.converged(want)
	c.closeAll()

	for i := range c.nodes {
		c.open(i)
	}
	// Every manager re-runs Bootstrap at start with its configured list:
	// the same list is a no-op, a different one is refused.
	for _, n := range c.nodes {
		if err := n.Bootstrap(c.peers()); err != nil {
			t.Fatalf("re-bootstrap %s with the same list: %v", n.ID(), err)
		}
	}
	c.leader()
	c.converged(want)

	other := append(c.peers()[:2:2], Peer{ID: "m9", Addr: "127.0.0.1:1"})
	err := c.nodes[0].Bootstrap(other)
	if !errors.Is(err, ErrBootstrapConflict) {
		t.Fatalf("bootstrap with a different list = %v, want ErrBootstrapConflict", err)
	}
	for _, p := range append(c.peers(), other[2]) {
		if !strings.Contains(err.Error(), p.String()) {
			t.Errorf("error %q does not name %s", err, p)
		}
	}
	st := c.propose(RecordCommitIndex{50})
	c.converged(st)
}

func TestBootstrapChecks(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "solo")
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	self := Peer{ID: "solo", Addr: n.Addr()}
	other := Peer{ID: "other", Addr: "127.0.0.1:1"}
	for _, tt := range []struct {
		name    string
		members []Peer
		errText string
	}{
		{"empty", nil, "member list is empty"},
		{"self missing", []Peer{other}, `this node "solo" is not in the member list`},
		{"self at wrong address", []Peer{{ID: "solo", Addr: "127.0.0.1:2"}}, `listed at "127.0.0.1:2" but advertises`},
		{"duplicate id", []Peer{self, {ID: "solo", Addr: "127.0.0.1:3"}}, `"solo" is listed twice`},
		{"duplicate address", []Peer{self, {ID: "x", Addr: n.Addr()}}, "share address"},
		{"bad id", []Peer{self, {ID: "a b", Addr: "127.0.0.1:3"}}, `id="a b"`},
		{"bad address", []Peer{self, {ID: "x", Addr: "nowhere"}}, `addr="nowhere"`},
	} {
		if err := n.Bootstrap(tt.members); err == nil || !strings.Contains(err.Error(), tt.errText) {
			t.Errorf("%s: Bootstrap = %v, want error containing %q", tt.name, err, tt.errText)
		}
	}
	if cfgs, err := n.Configuration(); err != nil || len(cfgs) != 0 {
		t.Fatalf("refused bootstraps left a configuration: %v %v", cfgs, err)
	}

	if err := n.Bootstrap([]Peer{self}); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	if id, _, err := n.WaitLeader(ctx); err != nil || id != "solo" {
		t.Fatalf("WaitLeader = %q, %v", id, err)
	}
	if err := n.Bootstrap([]Peer{self}); err != nil {
		t.Fatalf("second bootstrap with the same list: %v", err)
	}
	err = n.Bootstrap([]Peer{self, other})
	if !errors.Is(err, ErrBootstrapConflict) || !strings.Contains(err.Error(), "["+self.String()+"]") ||
		!strings.Contains(err.Error(), other.String()) {
		t.Fatalf("bootstrap with a different list = %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "a")
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, tt := range []struct {
		name    string
		mod     func(*Config)
		errText string
	}{
		{"empty id", func(c *Config) { c.ID = "" }, "id"},
		{"no data dir", func(c *Config) { c.DataDir = "" }, "data dir"},
		{"no bind address", func(c *Config) { c.BindAddr = "" }, "bind address"},
		{"wildcard without advertise", func(c *Config) { c.DataDir = t.TempDir(); c.BindAddr = "0.0.0.0:0" }, "not advertisable"},
		{"data dir in use", func(c *Config) {}, "raft.db"},
		{"tls without roots", func(c *Config) {
			c.DataDir = t.TempDir()
			c.TLS = &tls.Config{Certificates: newTestCA(t, "ca").tlsConfig(t, "a").Certificates}
		}, "RootCAs"},
		{"tls without peers", func(c *Config) {
			c.DataDir = t.TempDir()
			c.TLS = newTestCA(t, "ca").tlsConfig(t, "m1")
			c.PeerIDs = nil
		}, "IDs of the managers"},
		{"bad timeouts", func(c *Config) { c.DataDir = t.TempDir(); c.LeaderLeaseTimeout = time.Second }, "LeaderLeaseTimeout"},
	} {
		c := cfg
		tt.mod(&c)
		if n, err := Open(c); err == nil || !strings.Contains(err.Error(), tt.errText) {
			if n != nil {
				n.Close()
			}
			t.Errorf("%s: Open = %v, want error containing %q", tt.name, err, tt.errText)
		}
	}
}

func TestSnapshotsAcrossRestart(t *testing.T) {
	c := startCluster(t, 3, func(_ int, cfg *Config) {
		cfg.SnapshotThreshold = 4
		cfg.SnapshotInterval = 50 * time.Millisecond
		cfg.TrailingLogs = 2
	})
	var want State
	for _, cmd := range setupCommands() {
		want = c.propose(cmd)
	}
	for i := range 20 {
		want = c.propose(RecordCommitIndex{uint64(100 + i)})
	}
	c.converged(want)
	// Periodic snapshots (threshold 4) must cover all but the last few
	// entries, and the log must have been compacted behind them.
	target := c.leader().raft.AppliedIndex() - 3
	for _, n := range c.nodes {
		waitFor(t, fmt.Sprintf("%s to snapshot at index %d or later and compact its log", n.ID(), target), func() bool {
			snaps, err := n.snaps.List()
			first, _ := n.store.FirstIndex()
			return err == nil && len(snaps) > 0 && snaps[0].Index >= target && first > 1
		})
	}
	c.closeAll()

	for i := range c.nodes {
		n := c.open(i)
		// The log no longer starts at 1: the state can only come from the
		// snapshot, which Open restores before any leader exists.
		if st := n.State(); len(st.Members) != 3 || st.CommitIndex < 100 {
			t.Fatalf("%s after reopen holds %+v, want the snapshot's state", n.ID(), st)
		}
	}
	c.leader()
	c.converged(want)

	// A follower that misses more than the others keep in their logs
	// catches up by an InstallSnapshot over the transport.
	fi := (c.index(c.leader()) + 1) % 3
	behind := c.nodes[fi].raft.LastIndex()
	c.close(fi)
	for i := range 20 {
		want = c.propose(RecordCommitIndex{uint64(200 + i)})
	}
	for _, n := range c.nodes {
		if n != nil {
			waitFor(t, n.ID()+" to compact past the closed follower's last entry", func() bool {
				first, _ := n.store.FirstIndex()
				return first > behind+1
			})
		}
	}
	c.open(fi)
	c.converged(want)
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "quire-test-ca")
	c := startCluster(t, 3, func(i int, cfg *Config) { cfg.TLS = ca.tlsConfig(t, cfg.ID) })
	var want State
	for _, cmd := range setupCommands() {
		want = c.propose(cmd)
	}
	c.converged(want)

	addr := c.nodes[0].Addr()
	// A TLS client without a certificate is refused.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool})
	if err == nil {
		if err := peerCloses(conn); err != nil {
			t.Fatalf("TLS client without a certificate: %v", err)
		}
	}
	// So is plaintext.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Write([]byte{0, 1, 2, 3, 4, 5, 6, 7}); err == nil {
		if err := peerCloses(raw); err != nil {
			t.Fatalf("plaintext client: %v", err)
		}
	}
}

// peerCloses reads from conn until the peer closes or fails it (nil) or a
// deadline passes with the connection still open (an error). Bytes received
// on the way, such as a TLS alert, are ignored.
func peerCloses(conn net.Conn) error {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return errors.New("peer kept the connection open")
	}
	return nil
}

func TestForeignCARefused(t *testing.T) {
	ca := newTestCA(t, "quire-test-ca")
	rogue := newTestCA(t, "rogue-ca")
	// m3's certificate is signed by another CA and it trusts only that CA.
	c := startCluster(t, 3, func(i int, cfg *Config) {
		if i == 2 {
			cfg.TLS = rogue.tlsConfig(t, cfg.ID)
		} else {
			cfg.TLS = ca.tlsConfig(t, cfg.ID)
		}
	})
	good, outsider := c.nodes[:2], c.nodes[2]

	// Watch the leader, whichever it is, fail to reach the outsider.
	obs := make(chan raft.Observation, 16)
	for _, n := range good {
		n.raft.RegisterObserver(raft.NewObserver(obs, false, func(o *raft.Observation) bool {
			f, ok := o.Data.(raft.FailedHeartbeatObservation)
			return ok && f.PeerID == raft.ServerID(outsider.ID())
		}))
	}

	var want State
	for _, cmd := range setupCommands() {
		want = c.propose(cmd, good...)
	}
	c.converged(want, good...)
	select {
	case <-obs:
	case <-time.After(waitTimeout):
		t.Fatal("leader never failed a heartbeat to the outsider")
	}
	// Another failed heartbeat after the commits: the outsider had every
	// chance to receive them.
	select {
	case <-obs:
	case <-time.After(waitTimeout):
		t.Fatal("leader stopped failing heartbeats to the outsider")
	}
	if st := outsider.State(); len(st.Members) != 0 {
		t.Fatalf("outsider received state: %+v", st)
	}
	if id, _ := outsider.Leader(); id != "" {
		t.Fatalf("outsider knows leader %q", id)
	}
	if last := outsider.raft.LastIndex(); last != 1 {
		t.Fatalf("outsider's log reaches index %d, want only its bootstrap entry", last)
	}

	// The transport itself: each side refuses the other's certificate.
	for _, tt := range []struct {
		name string
		from *tls.Config
		to   string
	}{
		{"outsider dials member", rogue.tlsConfig(t, "m3"), good[0].Addr()},
		{"member dials outsider", ca.tlsConfig(t, "m1"), outsider.Addr()},
	} {
		sl, err := newStreamLayer("127.0.0.1:0", "", streamOptions{TLS: tt.from, Allowed: []string{"m1", "m2", "m3"}})
		if err != nil {
			t.Fatal(err)
		}
		conn, err := sl.Dial(raft.ServerAddress(tt.to), 5*time.Second)
		sl.Close()
		if err == nil {
			conn.Close()
			t.Errorf("%s: handshake succeeded", tt.name)
		} else if !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: %v, want a certificate error", tt.name, err)
		}
	}
}

// partition cuts every connection of one node, in and out, while set.
type partition struct {
	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
}

func (p *partition) set(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// admit tracks c, or closes it if the node is cut off.
func (p *partition) admit(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		c.Close()
		return false
	}
	if p.conns == nil {
		p.conns = make(map[net.Conn]bool)
	}
	p.conns[c] = true
	return true
}

func (p *partition) wrap(sl raft.StreamLayer) raft.StreamLayer { return partLayer{sl, p} }

type partLayer struct {
	raft.StreamLayer
	p *partition
}

func (l partLayer) Accept() (net.Conn, error) {
	for {
		c, err := l.StreamLayer.Accept()
		if err != nil || l.p.admit(c) {
			return c, err
		}
	}
}

func (l partLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := l.StreamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	if !l.p.admit(c) {
		return nil, fmt.Errorf("partitioned from %s", addr)
	}
	return c, nil
}

func TestMinorityCannotCommit(t *testing.T) {
	parts := make([]*partition, 3)
	c := startCluster(t, 3, func(i int, cfg *Config) {
		parts[i] = &partition{}
		cfg.wrapStream = parts[i].wrap
	})
	var want State
	for _, cmd := range setupCommands() {
		want = c.propose(cmd)
	}
	c.converged(want)

	// Cut the leader off: it is now a minority of one.
	old := c.leader()
	oi := c.index(old)
	parts[oi].set(true)

	ghost := AddMember{member("ghost", 9)}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if st, err := old.Propose(ctx, ghost); err == nil {
		t.Fatalf("isolated leader committed a proposal: %+v", st)
	} else {
		t.Logf("isolated leader's proposal: %v", err)
	}

	var majority []*Node
	for i, n := range c.nodes {
		if i != oi {
			majority = append(majority, n)
		}
	}
	st := c.propose(AddMember{member("d", 4)}, majority...)
	c.converged(st, majority...)
	if _, ok := old.State().Member("ghost"); ok {
		t.Fatal("isolated node applied its own uncommitted proposal")
	}
	if _, err := old.Propose(ctx, ghost); err == nil {
		t.Fatal("isolated node accepted a proposal")
	}

	// Heal: the old leader follows and converges to the majority's state.
	parts[oi].set(false)
	c.converged(st)
	st = c.propose(RecordCommitIndex{60})
	c.converged(st)
	for _, n := range c.nodes {
		if _, ok := n.State().Member("ghost"); ok {
			t.Fatalf("%s holds the minority's proposal", n.ID())
		}
	}
}

func TestAddRemoveVoter(t *testing.T) {
	c := startCluster(t, 1, nil)
	want := c.propose(AddMember{member("a", 1)})

	ctx := testContext(t)
	for _, id := range []string{"m2", "m3"} {
		cfg := testConfig(t, c.dir, id)
		n, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cfg.BindAddr = n.Addr()
		c.cfgs, c.nodes = append(c.cfgs, cfg), append(c.nodes, n)
		c.retry("add voter "+id, func(l *Node) error { return l.AddVoter(ctx, id, n.Addr()) }, c.nodes[:len(c.nodes)-1]...)
	}
	got, err := c.leader().Configuration()
	if err != nil || !reflect.DeepEqual(got, c.peers()) {
		t.Fatalf("configuration %v (%v), want %v", got, err, c.peers())
	}
	c.converged(want)

	c.retry("remove server m3", func(l *Node) error { return l.RemoveServer(ctx, "m3") })
	c.close(2)
	got, _ = c.leader().Configuration()
	if !reflect.DeepEqual(got, c.peers()[:2]) {
		t.Fatalf("configuration after remove %v", got)
	}
	st := c.propose(AddMember{member("b", 2)})
	c.converged(st)
}

func TestAddrMatches(t *testing.T) {
	for _, tt := range []struct {
		listed, advertised string
		want               bool
	}{
		{"127.0.0.1:7300", "127.0.0.1:7300", true},
		{"localhost:7300", "127.0.0.1:7300", true},
		{"localhost:7301", "127.0.0.1:7300", false},
		{"127.0.0.2:7300", "127.0.0.1:7300", false},
		{"nowhere.invalid:7300", "127.0.0.1:7300", false},
		{"localhost", "127.0.0.1:7300", false},
		{"localhost:7300", "localhost:7300", true},
	} {
		if got := addrMatches(tt.listed, tt.advertised); got != tt.want {
			t.Errorf("addrMatches(%q, %q) = %v, want %v", tt.listed, tt.advertised, got, tt.want)
		}
	}
}
