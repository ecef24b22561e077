package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/certs"
)

// Metadata keys of a call a follower manager forwards to the leader.
const (
	// ForwardedByKey names the forwarding manager (manager/server sets it).
	ForwardedByKey = "quire-forwarded-by"
	// ForwardedForKey names the original caller, "role/name", as the
	// forwarding manager authenticated it.
	ForwardedForKey = "quire-forwarded-for"
)

// DefaultStreamGrace is how long a second stream of a node waits for the
// first to end before it is refused (a reconnect often overtakes the end
// of the old stream by a few milliseconds).
const DefaultStreamGrace = 2 * time.Second

// Config configures an [Authorizer].
type Config struct {
	// Policy holds the rules; nil means [Cluster].
	Policy Policy
	// Plaintext: the server runs without TLS (allowed on loopback only), so
	// callers cannot be identified and every call is allowed; the rules of
	// one stream per node still apply.
	Plaintext bool
	// Forwarders names the managers whose forwarded calls are judged by the
	// identity they vouch for (a manager's peers). Empty on agents.
	Forwarders []string
	// StreamGrace: see DefaultStreamGrace (0 means the default).
	StreamGrace time.Duration
	// Logger receives refusals at WARN; nil discards them.
	Logger *slog.Logger
	// Registerer, if set, receives quire_authz_refused_total.
	Registerer prometheus.Registerer
	// Revoked, if set, refuses every call of a certificate it revokes, also
	// on connections opened before the revocation (the TLS handshake checks
	// new ones: certs.CheckRevoked).
	Revoked interface{ Revoked(serial string) bool }
}

// Authorizer applies a Policy to the calls of a gRPC server.
type Authorizer struct {
	cfg     Config
	log     *slog.Logger
	refused *prometheus.CounterVec

	mu      sync.Mutex
	streams map[string]*liveStream // method + "\x00" + node
}

type liveStream struct {
	from  string
	since time.Time
	done  chan struct{}
}

// New returns an Authorizer for cfg.
func New(cfg Config) (*Authorizer, error) {
	if cfg.Policy == nil {
		cfg.Policy = Cluster
	}
	if cfg.StreamGrace <= 0 {
		cfg.StreamGrace = DefaultStreamGrace
	}
	a := &Authorizer{cfg: cfg, log: cfg.Logger, streams: map[string]*liveStream{}}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "quire_authz_refused_total",
		Help: "gRPC calls refused by authorization, by method and reason (role, node, stream, identity, revoked, forward, no_rule).",
	}, []string{"method", "reason"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(a.refused); err != nil {
			return nil, fmt.Errorf("authz: register metrics: %w", err)
		}
	}
	return a, nil
}

// ServerOptions returns the interceptors to pass to grpc.NewServer. They
// are chained after any grpc.UnaryInterceptor given separately.
func (a *Authorizer) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(a.Unary), grpc.ChainStreamInterceptor(a.Stream)}
}

// Caller is who made a call, as the interceptor established it.
type Caller struct {
	certs.Identity
	// Via names the manager that forwarded the call, if one did.
	Via string
	// Anonymous: the server runs in plaintext and could not identify the
	// caller.
	Anonymous bool
}

type callerKey struct{}

// FromContext returns the caller of the call ctx belongs to.
func FromContext(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Forwarding returns ctx with the metadata that tells the leader who the
// original caller of a forwarded call is. The forwarding manager adds
// ForwardedByKey itself.
func Forwarding(ctx context.Context) context.Context {
	c, ok := FromContext(ctx)
	if !ok || c.Anonymous {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, ForwardedForKey, c.Identity.String())
}

// refusal is an authorization failure: its gRPC code and metric reason.
type refusal struct {
	code   codes.Code
	reason string
	err    error
}

func (r *refusal) Error() string { return r.err.Error() }

func refuse(code codes.Code, reason string, err error) *refusal {
	return &refusal{code: code, reason: reason, err: err}
}

// identify establishes the caller of ctx: its certificate's identity, or,
// for a call a trusted manager forwarded, the identity it vouches for.
func (a *Authorizer) identify(ctx context.Context) (Caller, *refusal) {
	md, _ := metadata.FromIncomingContext(ctx)
	forwardedFor := md.Get(ForwardedForKey)
	forwardedBy := md.Get(ForwardedByKey)
	p, _ := peer.FromContext(ctx)
	var ti credentials.TLSInfo
	hasTLS := false
	if p != nil {
		ti, hasTLS = p.AuthInfo.(credentials.TLSInfo)
	}
	if !hasTLS {
		if a.cfg.Plaintext {
			return Caller{Anonymous: true}, nil
		}
		return Caller{}, refuse(codes.Unauthenticated, "identity", errors.New("authz: the call carries no TLS client certificate"))
	}
	id, err := certs.PeerIdentity(ti.State)
	if err != nil {
		return Caller{}, refuse(codes.PermissionDenied, "identity", err)
	}
	if rv := a.cfg.Revoked; rv != nil && rv.Revoked(certs.SerialString(id.Serial)) {
		return Caller{}, refuse(codes.PermissionDenied, "revoked", fmt.Errorf("authz: the certificate of %s is revoked; issue a new one with `quire certs issue`", describe(id)))
	}
	if len(forwardedFor) == 0 && len(forwardedBy) == 0 {
		return Caller{Identity: id}, nil
	}
	via, err := checkForward(id, a.cfg.Forwarders, forwardedBy, forwardedFor)
	if err != nil {
		return Caller{}, refuse(codes.PermissionDenied, "forward", err)
	}
	return via, nil
}

// checkForward decides whether the holder of id may forward a call on
// behalf of the caller named in forwardedFor (one "role/name"), and returns
// that caller.
func checkForward(id certs.Identity, forwarders, forwardedBy, forwardedFor []string) (Caller, error) {
	if id.Role != certs.RoleManager || !slices.Contains(forwarders, id.Name) {
		return Caller{}, fmt.Errorf("authz: %s sent forwarding metadata; only the managers named in this manager's peers forward calls", describe(id))
	}
	if len(forwardedBy) != 1 || forwardedBy[0] != id.Name {
		return Caller{}, fmt.Errorf("authz: manager %q forwarded a call naming %v as forwarder", id.Name, forwardedBy)
	}
	if len(forwardedFor) != 1 {
		return Caller{}, fmt.Errorf("authz: manager %q forwarded a call without naming its original caller (%s); it runs an older version: upgrade it", id.Name, ForwardedForKey)
	}
	role, name, ok := strings.Cut(forwardedFor[0], "/")
	r, err := certs.ParseRole(role)
	if !ok || err != nil || name == "" {
		return Caller{}, fmt.Errorf("authz: manager %q forwarded a call for %q, which is not role/name", id.Name, forwardedFor[0])
	}
	return Caller{Identity: certs.Identity{Role: r, Name: name}, Via: id.Name}, nil
}

func (a *Authorizer) authorize(ctx context.Context, method string) (Caller, *refusal) {
	c, rf := a.identify(ctx)
	if rf != nil {
		return c, rf
	}
	if c.Anonymous {
		return c, nil
	}
	if _, ok := a.cfg.Policy[method]; !ok {
		return c, refuse(codes.PermissionDenied, "no_rule", a.cfg.Policy.Check(method, c.Identity))
	}
	if err := a.cfg.Policy.Check(method, c.Identity); err != nil {
		return c, refuse(codes.PermissionDenied, "role", err)
	}
	return c, nil
}

func (a *Authorizer) fail(ctx context.Context, method string, rf *refusal) error {
	a.refused.WithLabelValues(method, rf.reason).Inc()
	from := "unknown"
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	a.log.Warn("authz: call refused", "method", method, "from", from, "reason", rf.reason, "err", rf.err)
	return status.Error(rf.code, rf.err.Error())
}

// Unary is the unary server interceptor.
func (a *Authorizer) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c, rf := a.authorize(ctx, info.FullMethod)
	if rf == nil {
		rf = a.checkNode(c, info.FullMethod, req)
	}
	if rf != nil {
		return nil, a.fail(ctx, info.FullMethod, rf)
	}
	return handler(context.WithValue(ctx, callerKey{}, c), req)
}

func (a *Authorizer) checkNode(c Caller, method string, msg any) *refusal {
	rule := a.cfg.Policy[method]
	if rule.Node == nil || c.Anonymous {
		return nil
	}
	node, ok := rule.Node(msg)
	if !ok {
		return nil
	}
	if err := CheckNode(c.Identity, node); err != nil {
		return refuse(codes.PermissionDenied, "node", err)
	}
	return nil
}

// Stream is the stream server interceptor.
func (a *Authorizer) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	c, rf := a.authorize(ctx, info.FullMethod)
	if rf != nil {
		return a.fail(ctx, info.FullMethod, rf)
	}
	w := &stream{ServerStream: ss, a: a, caller: c, method: info.FullMethod, ctx: context.WithValue(ctx, callerKey{}, c)}
	defer w.release()
	return handler(srv, w)
}

// stream checks the node a stream's messages claim, and holds the node's
// one live stream.
type stream struct {
	grpc.ServerStream
	a      *Authorizer
	caller Caller
	method string
	ctx    context.Context
	key    string
	held   *liveStream
}

func (s *stream) Context() context.Context { return s.ctx }

func (s *stream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	rule := s.a.cfg.Policy[s.method]
	if rule.Node == nil {
		return nil
	}
	node, ok := rule.Node(m)
	if !ok {
		return nil
	}
	if rf := s.a.checkNode(s.caller, s.method, m); rf != nil {
		return s.a.fail(s.ctx, s.method, rf)
	}
	if rule.OneStream {
		if err := s.hold(node); err != nil {
			return s.a.fail(s.ctx, s.method, refuse(codes.AlreadyExists, "stream", err))
		}
	}
	return nil
}

// hold makes this stream node's one live stream of its method, waiting up
// to StreamGrace for an earlier one to end.
func (s *stream) hold(node string) error {
	key := s.method + "\x00" + node
	if s.held != nil {
		if s.key == key {
			return nil
		}
		return fmt.Errorf("authz: a %s stream may speak for one node only (it spoke for %q first)", s.method, strings.TrimPrefix(s.key, s.method+"\x00"))
	}
	from := "unknown"
	if p, ok := peer.FromContext(s.ctx); ok && p.Addr != nil {
		from = p.Addr.String()
	}
	timer := time.NewTimer(s.a.cfg.StreamGrace)
	defer timer.Stop()
	for {
		s.a.mu.Lock()
		old, busy := s.a.streams[key]
		if !busy {
			ls := &liveStream{from: from, since: time.Now(), done: make(chan struct{})}
			s.a.streams[key] = ls
			s.a.mu.Unlock()
			s.key, s.held = key, ls
			return nil
		}
		s.a.mu.Unlock()
		select {
		case <-old.done:
		case <-timer.C:
			return fmt.Errorf("authz: node %q already has a live stream (from %s since %s); a second one is refused "+
				"(if the first is dead, it ends when its connection times out)", node, old.from, old.since.Format(time.RFC3339))
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
}

func (s *stream) release() {
	if s.held == nil {
		return
	}
	s.a.mu.Lock()
	if s.a.streams[s.key] == s.held {
		delete(s.a.streams, s.key)
	}
	s.a.mu.Unlock()
	close(s.held.done)
}

// Verify checks that every method registered on g has a rule: a server
// whose methods are not all covered does not start (a method without a rule
// would be refused to everyone, which is safe, but is a mistake to fix).
func (a *Authorizer) Verify(g interface {
	GetServiceInfo() map[string]grpc.ServiceInfo
}) error {
	return a.cfg.Policy.Covers(g.GetServiceInfo())
}

// Covers reports the registered methods that have no rule.
func (p Policy) Covers(services map[string]grpc.ServiceInfo) error {
	var missing []string
	for name, si := range services {
		for _, m := range si.Methods {
			full := "/" + name + "/" + m.Name
			if _, ok := p[full]; !ok {
				missing = append(missing, full)
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("authz: no authorization rule for %s: add each to authz.Cluster with the roles that may call it", strings.Join(missing, ", "))
	}
	return nil
}
