package consensus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is a raft.StreamLayer over TCP, speaking mutual TLS when tls is
// set.
type streamLayer struct {
	listener  net.Listener // the TCP listener
	advertise net.Addr
	server    *tls.Config // nil for plaintext
	client    *tls.Config // nil for plaintext
}

var _ raft.StreamLayer = (*streamLayer)(nil)

// newStreamLayer listens on bind. With a non-nil cfg, connections are TLS in
// both directions and both sides must present a certificate the other
// trusts: the listener requires and verifies client certificates (against
// cfg.ClientCAs, or cfg.RootCAs when ClientCAs is nil) and the dialer verifies
// the server (against cfg.RootCAs) and presents cfg's certificate.
func newStreamLayer(bind, advertise string, cfg *tls.Config) (*streamLayer, error) {
	var server, client *tls.Config
	if cfg != nil {
		if len(cfg.Certificates) == 0 && (cfg.GetCertificate == nil || cfg.GetClientCertificate == nil) {
			return nil, errors.New("consensus: transport: tls config needs Certificates, or GetCertificate and GetClientCertificate, for mutual TLS")
		}
		if cfg.RootCAs == nil {
			return nil, errors.New("consensus: transport: tls config has no RootCAs to verify peers with")
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
	return &streamLayer{listener: ln, advertise: adv, server: server, client: client}, nil
}

// Accept returns the next connection. The TLS handshake happens on the first
// read, in raft's per-connection goroutine, so a slow or hostile peer cannot
// stall the accept loop; a failed handshake fails that read and raft drops
// the connection.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.listener.Accept()
	if err != nil {
		return nil, err
	}
	if s.server == nil {
		return c, nil
	}
	return tls.Server(c, s.server), nil
}

// Close stops listening.
func (s *streamLayer) Close() error { return s.listener.Close() }

// Addr returns the advertised address.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer, completing the TLS handshake within timeout.
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
	d := &tls.Dialer{NetDialer: nd, Config: s.client}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("consensus: transport: dial %s: %w", address, err)
	}
	return c, nil
}
