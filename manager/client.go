package manager

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/managerpb"
	"github.com/quire-ha/quire/internal/rpcopts"
)

// Defaults of [ClientConfig].
const (
	DefaultAttemptTimeout = 5 * time.Second
	DefaultRetryTimeout   = 15 * time.Second
)

const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
)

// ClientConfig configures a [Client].
type ClientConfig struct {
	// Addrs are the managers' gRPC addresses (host:port). Any of them may be
	// the leader; the client finds out.
	Addrs []string
	// TLS is the mutual-TLS configuration (certs.ClientConfig): the
	// client's certificate and the CA that signs the managers'. It must be
	// set unless Insecure is.
	TLS *tls.Config
	// Insecure makes the client speak plaintext (tests, the sandbox).
	Insecure bool
	// Logger receives retries at debug level; nil discards them.
	Logger *slog.Logger
	// AttemptTimeout bounds one try against one manager (default 5s).
	AttemptTimeout time.Duration
	// RetryTimeout bounds a call's retries when its context has no earlier
	// deadline (default 15s).
	RetryTimeout time.Duration
}

// Client calls the managers. It sends each call to the manager that last
// answered (the leader, or a follower that forwards to it), follows the
// leader hints of UNAVAILABLE answers, tries the other managers in turn and
// backs off between rounds until the call's deadline. It is safe for
// concurrent use.
//
// Reads and heartbeats are retried after any UNAVAILABLE answer or a try
// that timed out. Writes are retried only after UNAVAILABLE (the change was
// not made); a write whose try timed out, or that the server answers with
// ABORTED (leadership lost, outcome unknown), is not retried.
//
// Errors the managers answer are [*Error]s; status.Code works on them.
type Client struct {
	cfg    ClientConfig
	creds  credentials.TransportCredentials
	logger *slog.Logger

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	next   int    // index into cfg.Addrs of the next address to try
	last   string // address that answered last
	closed bool
}

// Error is an error answered by the managers, or the last one seen when no
// manager answered in time.
type Error struct {
	// Method is the RPC, e.g. "SetK".
	Method  string
	Code    codes.Code
	Message string
}

// Error returns the message; for validation errors it names the field and
// value, e.g. `set_k: k=5: exceeds the 2 members that may be in the sync
// set`.
func (e *Error) Error() string { return e.Message }

// GRPCStatus makes status.Code and status.FromError work on e.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// NewClient returns a client of the managers at cfg.Addrs. It dials lazily:
// an unreachable manager is an error of the first call, not of NewClient.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("manager: client: no manager addresses")
	}
	seen := map[string]bool{}
	for _, a := range cfg.Addrs {
		if a == "" || !strings.Contains(a, ":") {
			return nil, fmt.Errorf("manager: client: manager address %q is not host:port", a)
		}
		if seen[a] {
			return nil, fmt.Errorf("manager: client: manager address %q is listed twice", a)
		}
		seen[a] = true
	}
	cfg.Addrs = slices.Clone(cfg.Addrs)
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.RetryTimeout <= 0 {
		cfg.RetryTimeout = DefaultRetryTimeout
	}
	c := &Client{cfg: cfg, conns: map[string]*grpc.ClientConn{}, logger: cfg.Logger}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.TLS != nil && cfg.Insecure:
		return nil, errors.New("manager: client: TLS and Insecure are both set; choose one")
	case cfg.TLS != nil:
		c.creds = credentials.NewTLS(cfg.TLS)
	case cfg.Insecure:
		c.creds = insecure.NewCredentials()
	default:
		return nil, errors.New("manager: client: no TLS configuration (set TLS, or Insecure for plaintext)")
	}
	return c, nil
}

// Close closes the client's connections.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for a, conn := range c.conns {
		if err := conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("manager: client: close %s: %w", a, err))
		}
	}
	c.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

// Leader returns the address of the manager that answered last (normally
// the leader), or "" before the first answer.
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// RegisterAgent announces an agent and returns its assignment.
func (c *Client) RegisterAgent(ctx context.Context, r Registration) (Assignment, error) {
	var resp *managerpb.Assignment
	err := c.call(ctx, "RegisterAgent", false, func(ctx context.Context, mc managerpb.ManagerServiceClient) (err error) {
		resp, err = mc.RegisterAgent(ctx, &managerpb.RegisterAgentRequest{NodeId: r.NodeID, AgentAddr: r.AgentAddr, MysqlAddr: r.MySQLAddr})
		return err
	})
	if err != nil {
		return Assignment{}, err
	}
	return assignmentFromPB(resp), nil
}

// Heartbeat reports an agent's positions and returns what it should be.
func (c *Client) Heartbeat(ctx context.Context, r Report) (Assignment, error) {
	req := ReportToPB(r)
	var resp *managerpb.Assignment
	err := c.call(ctx, "Heartbeat", false, func(ctx context.Context, mc managerpb.ManagerServiceClient) (err error) {
		resp, err = mc.Heartbeat(ctx, req)
		return err
	})
	if err != nil {
		return Assignment{}, err
	}
	return assignmentFromPB(resp), nil
}

// Status returns the cluster state and every member's last position.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var resp *managerpb.StatusResponse
	err := c.call(ctx, "Status", false, func(ctx context.Context, mc managerpb.ManagerServiceClient) (err error) {
		resp, err = mc.Status(ctx, &managerpb.StatusRequest{})
		return err
	})
	if err != nil {
		return Status{}, err
	}
	return statusFromPB(resp), nil
}

// History returns the failover decision log and the epoch history.
func (c *Client) History(ctx context.Context) (History, error) {
	var out History
	err := c.call(ctx, "History", false, func(ctx context.Context, cl managerpb.ManagerServiceClient) error {
		resp, err := cl.History(ctx, &managerpb.HistoryRequest{})
		if err == nil {
			out = historyFromPB(resp)
		}
		return err
	})
	return out, err
}

// Members lists the members.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var resp *managerpb.MembersResponse
	err := c.call(ctx, "Members", false, func(ctx context.Context, mc managerpb.ManagerServiceClient) (err error) {
		resp, err = mc.Members(ctx, &managerpb.MembersRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return membersFromPB(resp.GetMembers()), nil
}

// AddMember adds a member.
func (c *Client) AddMember(ctx context.Context, m Member) (ClusterState, error) {
	return c.write(ctx, "AddMember", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.AddMember(ctx, &managerpb.AddMemberRequest{Member: memberToPB(m)})
	})
}

// UpdateMember replaces the record of the member m.ID.
func (c *Client) UpdateMember(ctx context.Context, m Member) (ClusterState, error) {
	return c.write(ctx, "UpdateMember", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.UpdateMember(ctx, &managerpb.UpdateMemberRequest{Member: memberToPB(m)})
	})
}

// RemoveMember removes a member that is neither the primary nor in the sync
// set.
func (c *Client) RemoveMember(ctx context.Context, id string) (ClusterState, error) {
	return c.write(ctx, "RemoveMember", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.RemoveMember(ctx, &managerpb.RemoveMemberRequest{Id: id})
	})
}

// SetK sets how many sync-set members must hold a transaction before its
// commit is acknowledged.
func (c *Client) SetK(ctx context.Context, k int) (ClusterState, error) {
	if int64(k) != int64(int32(k)) {
		return ClusterState{}, &Error{Method: "SetK", Code: codes.InvalidArgument, Message: fmt.Sprintf("set_k: k=%d: out of range", k)}
	}
	return c.write(ctx, "SetK", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.SetK(ctx, &managerpb.SetKRequest{K: int32(k)})
	})
}

// SetPolicy sets the policy: "strict" or "degrade".
func (c *Client) SetPolicy(ctx context.Context, policy string) (ClusterState, error) {
	return c.write(ctx, "SetPolicy", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.SetPolicy(ctx, &managerpb.SetPolicyRequest{Policy: policy})
	})
}

// SetSyncSet replaces the sync set.
func (c *Client) SetSyncSet(ctx context.Context, ids []string) (ClusterState, error) {
	return c.write(ctx, "SetSyncSet", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.SetSyncSet(ctx, &managerpb.SetSyncSetRequest{Members: ids})
	})
}

// SetSettings changes the failover timeout and anti-flapping window.
func (c *Client) SetSettings(ctx context.Context, s Settings) (ClusterState, error) {
	req := &managerpb.SetSettingsRequest{}
	if s.FailoverTimeout != nil {
		ms := s.FailoverTimeout.Milliseconds()
		req.FailoverTimeoutMs = &ms
	}
	if s.AntiFlapWindow != nil {
		ms := s.AntiFlapWindow.Milliseconds()
		req.AntiFlapWindowMs = &ms
	}
	return c.write(ctx, "SetSettings", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.SetSettings(ctx, req)
	})
}

// InitCluster starts epoch 1 with primary (first seqno 1). A non-empty
// syncSet becomes the sync set of epoch 1. Repeating the call with the same
// primary is a no-op.
func (c *Client) InitCluster(ctx context.Context, primary string, syncSet []string) (ClusterState, error) {
	return c.write(ctx, "InitCluster", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.InitCluster(ctx, &managerpb.InitClusterRequest{Primary: primary, SyncSet: syncSet})
	})
}

// AcknowledgeFailover acknowledges the last automatic failover. An empty by
// means the name on the client's certificate.
func (c *Client) AcknowledgeFailover(ctx context.Context, by string) (ClusterState, error) {
	return c.write(ctx, "AcknowledgeFailover", func(ctx context.Context, mc managerpb.ManagerServiceClient) (*managerpb.ClusterState, error) {
		return mc.AcknowledgeFailover(ctx, &managerpb.AcknowledgeFailoverRequest{By: by})
	})
}

func (c *Client) write(ctx context.Context, method string, fn func(context.Context, managerpb.ManagerServiceClient) (*managerpb.ClusterState, error)) (ClusterState, error) {
	var resp *managerpb.ClusterState
	err := c.call(ctx, method, true, func(ctx context.Context, mc managerpb.ManagerServiceClient) (err error) {
		resp, err = fn(ctx, mc)
		return err
	})
	if err != nil {
		return ClusterState{}, err
	}
	return stateFromPB(resp), nil
}

// call runs one RPC with retries (see [Client]).
func (c *Client) call(ctx context.Context, method string, write bool, fn func(context.Context, managerpb.ManagerServiceClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RetryTimeout)
	defer cancel()
	target := c.first()
	backoff := minBackoff
	hops := 0        // hints followed without a pause
	tlsFailures := 0 // tries that failed in the TLS handshake
	var lastErr, lastAnswer error
	for {
		conn, err := c.conn(target)
		if err != nil {
			return &Error{Method: method, Code: codes.Canceled, Message: err.Error()}
		}
		actx, acancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
		err = fn(actx, managerpb.NewManagerServiceClient(conn))
		attemptExpired := actx.Err() != nil
		acancel()
		if err == nil {
			c.answered(target)
			return nil
		}
		st := status.Convert(err)
		retry := st.Code() == codes.Unavailable ||
			!write && st.Code() == codes.DeadlineExceeded && attemptExpired
		switch {
		case !retry && st.Code() == codes.DeadlineExceeded && attemptExpired:
			return &Error{Method: method, Code: codes.DeadlineExceeded,
				Message: fmt.Sprintf("%s: %s did not answer in time; the change may or may not have been made (check the status)", method, target)}
		case !retry:
			return &Error{Method: method, Code: st.Code(), Message: st.Message()}
		}
		lastErr = fmt.Errorf("%s: %s", target, st.Message())
		if len(st.Details()) > 0 {
			// A manager's own answer says more than a connection failure.
			lastAnswer = lastErr
		}
		if ctx.Err() != nil {
			return c.gaveUp(method, ctx, cmp.Or(lastAnswer, lastErr), err)
		}
		if tlsFailure(st.Message()) {
			// A certificate problem does not go away by retrying; give up
			// once every manager has refused.
			if tlsFailures++; tlsFailures >= len(c.cfg.Addrs) {
				return &Error{Method: method, Code: codes.Unavailable,
					Message: fmt.Sprintf("TLS handshake refused by every manager (%s); check the certificate and CA: %v", strings.Join(c.cfg.Addrs, ","), lastErr)}
			}
		}
		c.logger.Debug("manager: client: retrying", "method", method, "addr", target, "code", st.Code(), "err", st.Message())
		if hint := leaderHint(st); hint != "" && hint != target && hops < 2 {
			hops++
			target = hint
			continue
		}
		hops = 0
		target = c.rotate(target)
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return c.gaveUp(method, ctx, cmp.Or(lastAnswer, lastErr), ctx.Err())
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (c *Client) gaveUp(method string, ctx context.Context, lastErr, err error) error {
	code := codes.Unavailable
	if errors.Is(context.Cause(ctx), context.Canceled) {
		code = codes.Canceled
	}
	if lastErr == nil {
		st := status.Convert(err)
		return &Error{Method: method, Code: code, Message: fmt.Sprintf("managers %s: %s", strings.Join(c.cfg.Addrs, ","), st.Message())}
	}
	return &Error{Method: method, Code: code,
		Message: fmt.Sprintf("no manager could serve the call in time (tried %s); last error: %v", strings.Join(c.cfg.Addrs, ","), lastErr)}
}

// tlsFailure reports whether a connection error is a TLS handshake
// failure (a bad, missing or untrusted certificate) rather than a manager
// being down.
func tlsFailure(msg string) bool {
	for _, s := range []string{"authentication handshake failed", "tls: ", "x509: "} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// leaderHint returns the leader's gRPC address from an UNAVAILABLE answer.
func leaderHint(st *status.Status) string {
	for _, d := range st.Details() {
		if h, ok := d.(*managerpb.LeaderHint); ok {
			return h.GetGrpcAddr()
		}
	}
	return ""
}

func (c *Client) first() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != "" {
		return c.last
	}
	return c.cfg.Addrs[c.next%len(c.cfg.Addrs)]
}

// rotate returns the configured address after failed (or the next one in
// turn when failed is a hinted address outside the list).
func (c *Client) rotate(failed string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == failed {
		c.last = ""
	}
	if i := slices.Index(c.cfg.Addrs, failed); i >= 0 {
		c.next = i + 1
	} else {
		c.next++
	}
	return c.cfg.Addrs[c.next%len(c.cfg.Addrs)]
}

func (c *Client) answered(addr string) {
	c.mu.Lock()
	c.last = addr
	c.mu.Unlock()
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("manager: client is closed")
	}
	if conn, ok := c.conns[addr]; ok {
		return conn, nil
	}
	conn, err := grpc.NewClient(addr, append(rpcopts.Dial(), grpc.WithTransportCredentials(c.creds))...)
	if err != nil {
		return nil, fmt.Errorf("manager: client: %s: %w", addr, err)
	}
	c.conns[addr] = conn
	return conn, nil
}
