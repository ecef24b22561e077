package consensus

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"

	"github.com/quire-ha/quire/certs"
)

func TestRaftPeerAllowed(t *testing.T) {
	peers := []string{"m1", "m2", "m3"}
	for _, tc := range []struct {
		id   certs.Identity
		want string
		err  string
	}{
		{certs.Identity{Role: certs.RoleManager, Name: "m2"}, "", ""},
		{certs.Identity{Role: certs.RoleManager, Name: "m2"}, "m2", ""},
		{certs.Identity{Role: certs.RoleManager, Name: "m2"}, "m3", `has manager "m3" at this address, but its certificate names "m2"`},
		{certs.Identity{Role: certs.RoleManager, Name: "m4"}, "", "not in this manager's peers"},
		{certs.Identity{Role: certs.RoleAgent, Name: "m1"}, "", "not a manager"},
		{certs.Identity{Role: certs.RoleOperator, Name: "m1"}, "", "not a manager"},
	} {
		err := raftPeerAllowed(tc.id, peers, tc.want)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v want %q: %v, want %q", tc.id, tc.want, err, tc.err)
		}
	}
	if err := rpcSenderAllowed("m1", []byte("m1")); err != nil {
		t.Error(err)
	}
	for _, id := range []string{"m2", "", "m1 "} {
		if err := rpcSenderAllowed("m1", []byte(id)); err == nil {
			t.Errorf("RPC naming %q on m1's connection accepted", id)
		}
	}
}

// wire encodes Raft requests as raft's NetworkTransport sends them: type
// byte, then the msgpack request (and for InstallSnapshot, the data).
func wire(t *testing.T, parts ...any) []byte {
	var b bytes.Buffer
	enc := codec.NewEncoder(&b, &codec.MsgpackHandle{})
	for _, p := range parts {
		switch v := p.(type) {
		case []byte:
			b.Write(v)
		case *raft.AppendEntriesRequest:
			b.WriteByte(rpcAppendEntries)
			if err := enc.Encode(v); err != nil {
				t.Fatal(err)
			}
		case *raft.RequestVoteRequest:
			b.WriteByte(rpcRequestVote)
			if err := enc.Encode(v); err != nil {
				t.Fatal(err)
			}
		case *raft.InstallSnapshotRequest:
			b.WriteByte(rpcInstallSnapshot)
			if err := enc.Encode(v); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("wire: %T", p)
		}
	}
	return b.Bytes()
}

// guarded writes in through an rpcGuard named name and returns what raft
// would read, and the error that ended the reading.
func guarded(t *testing.T, name string, in []byte) ([]byte, error) {
	a, b := net.Pipe()
	go func() {
		a.Write(in)
		a.Close()
	}()
	g := newRPCGuard(b, name)
	defer g.Close()
	var out bytes.Buffer
	buf := make([]byte, 7) // small reads: the guard must serve them piecewise
	for {
		n, err := g.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			return out.Bytes(), err
		}
	}
}

func TestRPCGuard(t *testing.T) {
	hdr := func(id string) raft.RPCHeader {
		return raft.RPCHeader{ProtocolVersion: 3, ID: []byte(id), Addr: []byte("127.0.0.1:1")}
	}
	snapshot := bytes.Repeat([]byte{0xc1}, 1000) // not valid msgpack: must pass unread
	good := wire(t,
		&raft.AppendEntriesRequest{RPCHeader: hdr("m1"), Term: 3, Entries: []*raft.Log{{Index: 1, Term: 3, Data: []byte("x"), AppendedAt: time.Now()}}},
		&raft.InstallSnapshotRequest{RPCHeader: hdr("m1"), Term: 3, Size: int64(len(snapshot))}, snapshot,
		&raft.RequestVoteRequest{RPCHeader: hdr("m1"), Term: 4},
	)
	out, err := guarded(t, "m1", good)
	if err != io.EOF || !bytes.Equal(out, good) {
		t.Fatalf("own RPCs: passed %d of %d bytes, err %v", len(out), len(good), err)
	}
	// The connection's manager speaking as another: cut before that RPC.
	first := wire(t, &raft.AppendEntriesRequest{RPCHeader: hdr("m1"), Term: 3})
	bad := append(first, wire(t, &raft.RequestVoteRequest{RPCHeader: hdr("m2"), Term: 9})...)
	out, err = guarded(t, "m1", bad)
	if !bytes.Equal(out, first) || err == nil || !strings.Contains(err.Error(), `names server "m2"`) {
		t.Fatalf("impersonating RPC: passed %d bytes (want %d), err %v", len(out), len(first), err)
	}
	// An unknown RPC type.
	if _, err := guarded(t, "m1", []byte{9, 0x80}); err == nil || !strings.Contains(err.Error(), "unknown Raft RPC type") {
		t.Fatalf("unknown type: %v", err)
	}
}

// TestRaftPeerWithAnotherName: m3 runs with m2's certificate (the same CA,
// a manager, a name in the peers): the others neither accept its
// connections nor talk to it, so it never learns the state.
func TestRaftPeerWithAnotherName(t *testing.T) {
	ca := newTestCA(t, "quire-test-ca")
	c := startCluster(t, 3, func(i int, cfg *Config) {
		name := cfg.ID
		if i == 2 {
			name = "m2"
		}
		cfg.TLS = &tls.Config{Certificates: []tls.Certificate{ca.issue(t, name)}, RootCAs: ca.pool}
	})
	good, impostor := c.nodes[:2], c.nodes[2]
	var want State
	for _, cmd := range setupCommands() {
		want = c.propose(cmd, good...)
	}
	c.converged(want, good...)
	time.Sleep(time.Second) // heartbeats and votes had every chance
	if st := impostor.State(); len(st.Members) != 0 {
		t.Fatalf("the impostor received state: %+v", st)
	}
	if last := impostor.raft.LastIndex(); last != 1 {
		t.Fatalf("the impostor's log reaches index %d, want only its bootstrap entry", last)
	}
	if id, _ := good[0].Leader(); id == impostor.ID() {
		t.Fatal("the impostor leads")
	}
}

// TestRaftRefusesOtherCertificates dials a manager's transport with
// certificates it must refuse.
func TestRaftRefusesOtherCertificates(t *testing.T) {
	ca := newTestCA(t, "quire-test-ca")
	c := startCluster(t, 1, func(i int, cfg *Config) { cfg.TLS = ca.tlsConfig(t, cfg.ID) })
	addr := c.nodes[0].Addr()
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"agent", ca.issueAs(t, "m2", "m2", certs.RoleAgent)},
		{"operator", ca.issueAs(t, "m2", "m2", certs.RoleOperator)},
		{"manager not in peers", ca.issueAs(t, "m9", "m9", certs.RoleManager)},
		{"no role (issued before roles)", ca.issueAs(t, "m2", "", "")},
	} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{tc.cert}, RootCAs: ca.pool})
		if err != nil {
			continue // refused in the handshake
		}
		conn.Write(wire(t, &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("m2")}, Term: 99}))
		if err := peerCloses(conn); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if c.nodes[0].raft.CurrentTerm() >= 99 {
		t.Error("a refused peer's vote request reached raft")
	}
	// The dialling side refuses a server with another manager's name.
	sl, err := newStreamLayer("127.0.0.1:0", "", streamOptions{TLS: ca.tlsConfig(t, "m2"), Allowed: []string{"m1", "m2", "m3"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	sl.setExpect(func(string) string { return "m3" })
	if conn, err := sl.Dial(raft.ServerAddress(addr), 5*time.Second); err == nil {
		conn.Close()
		t.Error("dialled m1's address expecting m3 and was served")
	} else if !strings.Contains(err.Error(), `its certificate names "m1"`) {
		t.Errorf("dial: %v", err)
	}
}

// TestRaftHandshakeDeadlineAndCap: a connection that never completes its
// handshake is closed after the deadline, and beyond the cap of pending
// handshakes new connections are closed at once.
func TestRaftHandshakeDeadlineAndCap(t *testing.T) {
	ca := newTestCA(t, "quire-test-ca")
	sl, err := newStreamLayer("127.0.0.1:0", "", streamOptions{
		TLS: ca.tlsConfig(t, "m1"), Allowed: []string{"m1"}, HandshakeTimeout: 300 * time.Millisecond, MaxUnauthenticated: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	addr := sl.Addr().String()
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	time.Sleep(50 * time.Millisecond) // both are in their handshake
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := peerCloses(extra); err != nil || time.Since(start) > 200*time.Millisecond {
		t.Errorf("third connection beyond the cap: %v after %s, want closed at once", err, time.Since(start))
	}
	for _, c := range idle {
		if err := peerCloses(c); err != nil || time.Since(start) > 3*time.Second {
			t.Errorf("idle connection: %v after %s, want closed after the handshake deadline", err, time.Since(start))
		}
	}
	// The slots are free again: a real peer gets through.
	cli := ca.tlsConfig(t, "m1")
	dl, err := newStreamLayer("127.0.0.1:0", "", streamOptions{TLS: cli, Allowed: []string{"m1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	conn, err := dl.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go conn.(*tls.Conn).Handshake()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := sl.Accept()
		acc <- c
	}()
	select {
	case c := <-acc:
		if c == nil {
			t.Fatal("accept failed")
		}
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("an authenticated peer was not accepted")
	}
}
