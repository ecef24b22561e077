package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/quire-ha/quire/api/agentpb"
	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/api/shippb"
	"github.com/quire-ha/quire/certs"
)

// shipStub reads the hello, answers Accept and holds the stream open until
// the client ends it.
type shipStub struct {
	shippb.UnimplementedLogShippingServer
}

func (shipStub) Stream(ss grpc.BidiStreamingServer[shippb.Up, shippb.Down]) error {
	if _, err := ss.Recv(); err != nil {
		return err
	}
	if err := ss.Send(&shippb.Down{Msg: &shippb.Down_Accept{Accept: &shippb.Accept{Epoch: 1}}}); err != nil {
		return err
	}
	<-ss.Context().Done()
	return nil
}

// callerStub answers every ManagerService call with the caller the
// interceptor established, in the error text (codes.Unimplemented marks
// "the call got through").
type callerStub struct {
	managerpb.UnimplementedManagerServiceServer
}

func (callerStub) Heartbeat(ctx context.Context, _ *managerpb.HeartbeatRequest) (*managerpb.Assignment, error) {
	c, _ := FromContext(ctx)
	return nil, status.Errorf(codes.Unimplemented, "caller %s via %q", c.Identity, c.Via)
}

type pki struct {
	t   *testing.T
	dir string
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	if err := certs.InitCA(dir, "authz test CA"); err != nil {
		t.Fatal(err)
	}
	return &pki{t: t, dir: dir}
}

func (p *pki) files(name string) certs.Files {
	return certs.Files{CA: filepath.Join(p.dir, certs.CACert), Cert: certs.CertFile(p.dir, name), Key: certs.KeyFile(p.dir, name)}
}

func (p *pki) issue(name string, role certs.Role) certs.Files {
	p.t.Helper()
	if err := certs.Issue(p.dir, p.dir, name, role, []string{"127.0.0.1"}); err != nil {
		p.t.Fatal(err)
	}
	return p.files(name)
}

// issueOld signs a certificate the way Quire did before roles: no URI SAN.
func (p *pki) issueOld(name string) certs.Files {
	p.t.Helper()
	read := func(f string) []byte {
		b, err := os.ReadFile(filepath.Join(p.dir, f))
		if err != nil {
			p.t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		return blk.Bytes
	}
	ca, err := x509.ParseCertificate(read(certs.CACert))
	if err != nil {
		p.t.Fatal(err)
	}
	caKey, err := x509.ParseECPrivateKey(read(certs.CAKey))
	if err != nil {
		p.t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames: []string{name}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	f := p.files(name)
	os.WriteFile(f.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(f.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return f
}

type server struct {
	addr string
	auth *Authorizer
	reg  *prometheus.Registry
}

// serve starts a gRPC server with every Quire service (stubs) behind an
// Authorizer; tlsFiles nil means plaintext.
func serve(t *testing.T, tlsFiles *certs.Files, cfg Config) *server {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.StreamGrace == 0 {
		cfg.StreamGrace = 200 * time.Millisecond
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts := a.ServerOptions()
	if tlsFiles != nil {
		tc, err := certs.ServerConfig(*tlsFiles)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	g := grpc.NewServer(opts...)
	agentpb.RegisterAgentControlServer(g, agentpb.UnimplementedAgentControlServer{})
	shippb.RegisterLogShippingServer(g, shipStub{})
	managerpb.RegisterManagerServiceServer(g, callerStub{})
	if err := a.Verify(g); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return &server{addr: ln.Addr().String(), auth: a, reg: reg}
}

func dial(t *testing.T, addr string, f *certs.Files) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if f != nil {
		tc, err := certs.ClientConfig(*f, "")
		if err != nil {
			t.Fatal(err)
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// call makes one call of method claiming node, and returns its code:
// Unimplemented (or OK for the stream) means the call got through.
func call(ctx context.Context, conn *grpc.ClientConn, method, node string) (codes.Code, string) {
	if method == shippb.LogShipping_Stream_FullMethodName {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, method)
		if err == nil {
			err = s.SendMsg(&shippb.Up{Msg: &shippb.Up_Hello{Hello: &shippb.Hello{NodeId: node, Epoch: 1, NextSeqno: 1}}})
		}
		// A send that finds the stream already ended by the server
		// answers io.EOF; the status comes with the next receive.
		if err == nil || errors.Is(err, io.EOF) {
			err = s.RecvMsg(&shippb.Down{})
		}
		st := status.Convert(err)
		return st.Code(), st.Message()
	}
	var req proto.Message = &emptypb.Empty{}
	switch method {
	case managerpb.ManagerService_RegisterAgent_FullMethodName:
		req = &managerpb.RegisterAgentRequest{NodeId: node}
	case managerpb.ManagerService_Heartbeat_FullMethodName:
		req = &managerpb.HeartbeatRequest{NodeId: node}
	}
	err := conn.Invoke(ctx, method, req, &emptypb.Empty{})
	st := status.Convert(err)
	return st.Code(), st.Message()
}

func through(c codes.Code) bool { return c == codes.Unimplemented || c == codes.OK }

// TestEveryMethodEveryRole calls every method of every service over mutual
// TLS with a certificate of every role (speaking for itself): exactly the
// roles of the matrix get through, the others are refused.
func TestEveryMethodEveryRole(t *testing.T) {
	p := newPKI(t)
	srvFiles := p.issue("srv", certs.RoleAgent)
	s := serve(t, &srvFiles, Config{Forwarders: []string{"m1"}})
	ctx := ctxT(t)
	conns := map[certs.Role]*grpc.ClientConn{}
	names := map[certs.Role]string{certs.RoleOperator: "alice", certs.RoleManager: "m1", certs.RoleAgent: "db1"}
	for _, r := range certs.Roles {
		f := p.issue(names[r], r)
		conns[r] = dial(t, s.addr, &f)
	}
	refused := 0.0
	for method, allowed := range want {
		for _, r := range certs.Roles {
			code, msg := call(ctx, conns[r], method, names[r])
			should := strings.Contains(allowed, letter(r))
			switch {
			case should && !through(code):
				t.Errorf("%s by %s: refused (%s: %s), want allowed", method, r, code, msg)
			case !should && code != codes.PermissionDenied:
				t.Errorf("%s by %s: %s (%s), want PermissionDenied", method, r, code, msg)
			case !should:
				refused++
				if !strings.Contains(msg, method) || !strings.Contains(msg, names[r]) {
					t.Errorf("refusal names neither method nor caller: %s", msg)
				}
			}
		}
	}
	if got := sum(t, s.reg, "quire_authz_refused_total"); got != refused {
		t.Errorf("quire_authz_refused_total = %v, want %v", got, refused)
	}
}

// TestImpersonation: an agent speaking for another node is refused on each
// path that carries a node id.
func TestImpersonation(t *testing.T) {
	p := newPKI(t)
	srvFiles := p.issue("srv", certs.RoleManager)
	s := serve(t, &srvFiles, Config{Forwarders: []string{"m1"}})
	db1 := p.issue("db1", certs.RoleAgent)
	conn := dial(t, s.addr, &db1)
	ctx := ctxT(t)
	for _, method := range []string{
		managerpb.ManagerService_RegisterAgent_FullMethodName,
		managerpb.ManagerService_Heartbeat_FullMethodName,
		shippb.LogShipping_Stream_FullMethodName,
	} {
		if code, msg := call(ctx, conn, method, "db1"); !through(code) {
			t.Errorf("%s as itself: %s %s", method, code, msg)
		}
		code, msg := call(ctx, conn, method, "db2")
		if code != codes.PermissionDenied || !strings.Contains(msg, `may not speak for node "db2"`) {
			t.Errorf("%s as db2: %s %s, want PermissionDenied", method, code, msg)
		}
	}
	var m dto.Metric
	if err := s.auth.refused.WithLabelValues(managerpb.ManagerService_Heartbeat_FullMethodName, "node").Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
		t.Errorf("refused{Heartbeat,node} = %v (%v)", m.GetCounter().GetValue(), err)
	}
}

// TestOneStreamPerNode: a second live log stream of the same node is
// refused; once the first ends, the node may stream again.
func TestOneStreamPerNode(t *testing.T) {
	p := newPKI(t)
	srvFiles := p.issue("srv", certs.RoleAgent)
	s := serve(t, &srvFiles, Config{})
	db1, db2 := p.issue("db1", certs.RoleAgent), p.issue("db2", certs.RoleAgent)
	c1, c1b, c2 := dial(t, s.addr, &db1), dial(t, s.addr, &db1), dial(t, s.addr, &db2)

	ctx := ctxT(t)
	first, cancel := context.WithCancel(ctx)
	st, err := c1.NewStream(first, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, shippb.LogShipping_Stream_FullMethodName)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(&shippb.Up{Msg: &shippb.Up_Hello{Hello: &shippb.Hello{NodeId: "db1", Epoch: 1, NextSeqno: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.RecvMsg(&shippb.Down{}); err != nil {
		t.Fatal(err)
	}
	code, msg := call(ctx, c1b, shippb.LogShipping_Stream_FullMethodName, "db1")
	if code != codes.AlreadyExists || !strings.Contains(msg, "already has a live stream") {
		t.Errorf("second stream of db1: %s %s, want AlreadyExists", code, msg)
	}
	if code, msg := call(ctx, c2, shippb.LogShipping_Stream_FullMethodName, "db2"); !through(code) {
		t.Errorf("db2 beside db1: %s %s", code, msg)
	}
	cancel()
	// The old stream ends within the grace period: the new one waits for it.
	if code, msg := call(ctx, c1b, shippb.LogShipping_Stream_FullMethodName, "db1"); !through(code) {
		t.Errorf("db1 after its first stream ended: %s %s", code, msg)
	}
}

// TestForwarded: a call a follower forwards is judged by the caller it
// vouches for, and only the managers of the peer list may vouch.
func TestForwarded(t *testing.T) {
	p := newPKI(t)
	srvFiles := p.issue("m2", certs.RoleManager)
	s := serve(t, &srvFiles, Config{Forwarders: []string{"m1", "m2", "m3"}})
	m1, m9, db1 := p.issue("m1", certs.RoleManager), p.issue("m9", certs.RoleManager), p.issue("db1", certs.RoleAgent)
	ctx := ctxT(t)
	fwd := func(by, forWhom string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, ForwardedByKey, by, ForwardedForKey, forWhom)
	}
	for _, tc := range []struct {
		name    string
		conn    *grpc.ClientConn
		ctx     context.Context
		method  string
		node    string
		code    codes.Code
		message string
	}{
		{"operator's SetK", dial(t, s.addr, &m1), fwd("m1", "operator/alice"), managerpb.ManagerService_SetK_FullMethodName, "", codes.Unimplemented, ""},
		{"agent's SetK", dial(t, s.addr, &m1), fwd("m1", "agent/db1"), managerpb.ManagerService_SetK_FullMethodName, "", codes.PermissionDenied, `agent "db1" (certificate serial none) may not call`},
		{"agent's heartbeat", dial(t, s.addr, &m1), fwd("m1", "agent/db1"), managerpb.ManagerService_Heartbeat_FullMethodName, "db1", codes.Unimplemented, `caller agent/db1 via "m1"`},
		{"impersonated heartbeat", dial(t, s.addr, &m1), fwd("m1", "agent/db1"), managerpb.ManagerService_Heartbeat_FullMethodName, "db2", codes.PermissionDenied, "may not speak for"},
		{"manager not in peers", dial(t, s.addr, &m9), fwd("m9", "operator/alice"), managerpb.ManagerService_SetK_FullMethodName, "", codes.PermissionDenied, "only the managers named"},
		{"agent pretends to forward", dial(t, s.addr, &db1), fwd("m1", "operator/alice"), managerpb.ManagerService_SetK_FullMethodName, "", codes.PermissionDenied, "only the managers named"},
		{"manager calls directly", dial(t, s.addr, &m1), ctx, managerpb.ManagerService_SetK_FullMethodName, "", codes.PermissionDenied, `manager "m1"`},
	} {
		code, msg := call(tc.ctx, tc.conn, tc.method, tc.node)
		if code != tc.code || !strings.Contains(msg, tc.message) {
			t.Errorf("%s: %s %q, want %s %q", tc.name, code, msg, tc.code, tc.message)
		}
	}
}

// TestForwardingContext: the follower's side puts the caller it
// authenticated into the forwarded call.
func TestForwardingContext(t *testing.T) {
	ctx := context.WithValue(context.Background(), callerKey{}, Caller{Identity: certs.Identity{Role: certs.RoleAgent, Name: "db1"}})
	md, _ := metadata.FromOutgoingContext(Forwarding(ctx))
	if got := md.Get(ForwardedForKey); len(got) != 1 || got[0] != "agent/db1" {
		t.Errorf("forwarded-for %v", got)
	}
	anon := context.WithValue(context.Background(), callerKey{}, Caller{Anonymous: true})
	if _, ok := metadata.FromOutgoingContext(Forwarding(anon)); ok {
		t.Error("an anonymous caller was vouched for")
	}
}

// TestOldCertificateRefused: a certificate issued before roles existed is
// refused with the command that reissues it.
func TestOldCertificateRefused(t *testing.T) {
	p := newPKI(t)
	srvFiles := p.issue("srv", certs.RoleAgent)
	s := serve(t, &srvFiles, Config{})
	old := p.issueOld("db1")
	code, msg := call(ctxT(t), dial(t, s.addr, &old), agentpb.AgentControl_Status_FullMethodName, "")
	if code != codes.PermissionDenied || !strings.Contains(msg, "quire certs issue --role") {
		t.Errorf("old certificate: %s %s", code, msg)
	}
}

// TestPlaintext: without TLS nobody can be identified and every call gets
// through (plaintext is allowed on loopback only; see config).
func TestPlaintext(t *testing.T) {
	s := serve(t, nil, Config{Plaintext: true})
	conn := dial(t, s.addr, nil)
	for method := range want {
		if code, msg := call(ctxT(t), conn, method, "db1"); !through(code) {
			t.Errorf("%s in plaintext: %s %s", method, code, msg)
		}
	}
	// A TLS server never treats a call without a certificate as anonymous.
	s2 := serve(t, nil, Config{})
	if code, _ := call(ctxT(t), dial(t, s2.addr, nil), agentpb.AgentControl_Status_FullMethodName, ""); code != codes.Unauthenticated {
		t.Errorf("no certificate, not plaintext: %s", code)
	}
}

// sum adds every sample of the counter family name.
func sum(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// TestRevokedRefused: a revoked certificate's calls are refused, also on a
// connection it opened before the revocation.
func TestRevokedRefused(t *testing.T) {
	p := newPKI(t)
	srvFiles := p.issue("srv", certs.RoleAgent)
	list := certs.NewRevocationList()
	s := serve(t, &srvFiles, Config{Revoked: list})
	op := p.issue("alice", certs.RoleOperator)
	conn := dial(t, s.addr, &op)
	ctx := ctxT(t)
	if code, msg := call(ctx, conn, agentpb.AgentControl_Status_FullMethodName, ""); !through(code) {
		t.Fatalf("before revocation: %s %s", code, msg)
	}
	crt, err := tls.LoadX509KeyPair(op.Cert, op.Key)
	if err != nil {
		t.Fatal(err)
	}
	list.Set([]string{certs.SerialString(crt.Leaf.SerialNumber)})
	if code, msg := call(ctx, conn, agentpb.AgentControl_Status_FullMethodName, ""); code != codes.PermissionDenied || !strings.Contains(msg, "revoked") {
		t.Fatalf("after revocation, same connection: %s %s", code, msg)
	}
}
