package consensus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/quire-ha/quire/certs"
)

// Defaults of the transport's guard against connections that never
// authenticate.
const (
	// DefaultHandshakeTimeout bounds an incoming connection's TLS handshake.
	DefaultHandshakeTimeout = 5 * time.Second
	// DefaultMaxUnauthenticated caps the incoming connections whose
	// handshake is under way; more are closed at once.
	DefaultMaxUnauthenticated = 32
)

// streamLayer is a raft.StreamLayer over TCP, speaking mutual TLS when tls is
// set. With TLS it accepts only the managers named in allowed: their
// certificates must carry the manager role and one of those names, and the
// server ID in every Raft RPC they send must be that name.
type streamLayer struct {
	listener  net.Listener // the TCP listener
	advertise net.Addr
	server    *tls.Config // nil for plaintext
	client    *tls.Config // nil for plaintext
	allowed   []string    // manager IDs whose certificates are accepted
	logger    *slog.Logger

	handshakeTimeout time.Duration
	pending          chan struct{} // one token per handshake under way
	// expectID maps an address raft dials to the ID of the server raft's
	// configuration has there ("" if none).
	expectMu sync.Mutex
	expectID func(addr string) string

	accepted chan net.Conn
	done     chan struct{}
	once     sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

// streamOptions are the transport's settings beyond the addresses.
type streamOptions struct {
	// TLS: see Config.TLS. Nil is plaintext.
	TLS *tls.Config
	// Allowed: see Config.Peers. Required with TLS.
	Allowed []string
	// HandshakeTimeout and MaxUnauthenticated: 0 means the defaults.
	HandshakeTimeout   time.Duration
	MaxUnauthenticated int
	Logger             *slog.Logger
}

// newStreamLayer listens on bind. With a non-nil opts.TLS, connections are TLS in
// both directions and both sides must present a certificate the other
// trusts: the listener requires and verifies client certificates (against
// cfg.ClientCAs, or cfg.RootCAs when ClientCAs is nil) and the dialer verifies
// the server (against cfg.RootCAs) and presents cfg's certificate. Both
// sides accept only manager certificates named in opts.Allowed.
func newStreamLayer(bind, advertise string, opts streamOptions) (*streamLayer, error) {
	var server, client *tls.Config
	if cfg := opts.TLS; cfg != nil {
		if len(cfg.Certificates) == 0 && (cfg.GetCertificate == nil || cfg.GetClientCertificate == nil) {
			return nil, errors.New("consensus: transport: tls config needs Certificates, or GetCertificate and GetClientCertificate, for mutual TLS")
		}
		if cfg.RootCAs == nil {
			return nil, errors.New("consensus: transport: tls config has no RootCAs to verify peers with")
		}
		if len(opts.Allowed) == 0 {
			return nil, errors.New("consensus: transport: TLS needs the IDs of the managers whose certificates Raft accepts (the peers of the configuration)")
		}
		server = cfg.Clone()
		server.ClientAuth = tls.RequireAndVerifyClientCert
		if server.ClientCAs == nil {
			server.ClientCAs = cfg.RootCAs
		}
		if server.MinVersion < tls.VersionTLS12 {
			server.MinVersion = tls.VersionTLS12
		}
		client = cfg.Clone()
		if client.MinVersion < tls.VersionTLS12 {
			client.MinVersion = tls.VersionTLS12
		}
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.MaxUnauthenticated <= 0 {
		opts.MaxUnauthenticated = DefaultMaxUnauthenticated
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("consensus: transport: listen %s: %w", bind, err)
	}
	adv := ln.Addr()
	if advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("consensus: transport: advertise address %q: %w", advertise, err)
		}
		adv = a
	}
	if a, ok := adv.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("consensus: transport: address %s is not advertisable; set an advertise address", adv)
	}
	s := &streamLayer{
		listener: ln, advertise: adv, server: server, client: client,
		allowed: slices.Clone(opts.Allowed), logger: opts.Logger.With("component", "raft-transport"),
		handshakeTimeout: opts.HandshakeTimeout, pending: make(chan struct{}, opts.MaxUnauthenticated),
		accepted: make(chan net.Conn), done: make(chan struct{}),
	}
	go s.acceptLoop()
	return s, nil
}

// setExpect sets how Dial learns which manager an address belongs to.
func (s *streamLayer) setExpect(f func(addr string) string) {
	s.expectMu.Lock()
	s.expectID = f
	s.expectMu.Unlock()
}

func (s *streamLayer) expected(addr string) string {
	s.expectMu.Lock()
	f := s.expectID
	s.expectMu.Unlock()
	if f == nil {
		return ""
	}
	return f(addr)
}

// acceptLoop accepts TCP connections and hands them to raft only once they
// are authenticated: the TLS handshake runs in its own goroutine with a
// deadline, at most cap(pending) at a time, so a slow or hostile peer can
// neither stall the loop nor pile up connections.
func (s *streamLayer) acceptLoop() {
	for {
		c, err := s.listener.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logger.Warn("consensus: transport: accept", "err", err)
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		if s.server == nil {
			s.deliver(c)
			continue
		}
		select {
		case s.pending <- struct{}{}:
			go s.authenticate(c)
		default:
			s.logger.Warn("consensus: transport: too many connections still authenticating; closing one",
				"from", c.RemoteAddr().String(), "limit", cap(s.pending))
			c.Close()
		}
	}
}

// authenticate completes the TLS handshake within the deadline, checks the
// peer's identity and hands the connection to raft guarded (rpcGuard).
func (s *streamLayer) authenticate(c net.Conn) {
	tc := tls.Server(c, s.server)
	ctx, cancel := context.WithTimeout(context.Background(), s.handshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	var id certs.Identity
	if err == nil {
		id, err = s.checkPeer(tc.ConnectionState(), "")
	}
	<-s.pending
	if err != nil {
		s.logger.Warn("consensus: transport: refused a connection", "from", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	s.deliver(newRPCGuard(tc, id.Name))
}

// checkPeer decides whether a verified peer may speak Raft: a manager
// certificate named in allowed (and, when want is set, named want).
func (s *streamLayer) checkPeer(cs tls.ConnectionState, want string) (certs.Identity, error) {
	id, err := certs.PeerIdentity(cs)
	if err != nil {
		return id, fmt.Errorf("consensus: transport: %w", err)
	}
	return id, raftPeerAllowed(id, s.allowed, want)
}

// raftPeerAllowed is the transport's decision about a peer's identity.
func raftPeerAllowed(id certs.Identity, allowed []string, want string) error {
	if id.Role != certs.RoleManager {
		return fmt.Errorf("consensus: transport: %s %q is not a manager; Raft accepts only manager certificates", id.Role, id.Name)
	}
	if !slices.Contains(allowed, id.Name) {
		return fmt.Errorf("consensus: transport: manager %q is not in this manager's peers %v", id.Name, allowed)
	}
	if want != "" && id.Name != want {
		return fmt.Errorf("consensus: transport: the Raft configuration has manager %q at this address, but its certificate names %q", want, id.Name)
	}
	return nil
}

func (s *streamLayer) deliver(c net.Conn) {
	select {
	case s.accepted <- c:
	case <-s.done:
		c.Close()
	}
}

// Accept returns the next authenticated connection.
func (s *streamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-s.accepted:
		return c, nil
	case <-s.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening.
func (s *streamLayer) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.listener.Close()
	})
	return err
}

// Addr returns the advertised address.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer, completing the TLS handshake within timeout. The
// server must present a manager certificate named in allowed, and the name
// of the manager the Raft configuration has at address.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	nd := &net.Dialer{}
	if s.client == nil {
		return nd.DialContext(ctx, "tcp", string(address))
	}
	cfg := s.client.Clone()
	want := s.expected(string(address))
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		_, err := s.checkPeer(cs, want)
		return err
	}
	d := &tls.Dialer{NetDialer: nd, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("consensus: transport: dial %s: %w", address, err)
	}
	return c, nil
}

// idAt returns the ID of the server the Raft configuration has at addr, or
// "" if it has none there.
func (n *Node) idAt(addr string) string {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return ""
	}
	for _, s := range f.Configuration().Servers {
		if string(s.Address) == addr {
			return string(s.ID)
		}
	}
	return ""
}
