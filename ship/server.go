package ship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/api/shippb"
	"github.com/quire-ha/quire/txlog"
)

// AckSink receives what replicas report on their streams. The semi-sync
// gate implements it; it must be safe for concurrent use.
type AckSink interface {
	// Connected is called when a replica's stream was accepted.
	Connected(node string)
	// Durable reports that node holds every record up to seqno durably.
	Durable(node string, seqno uint64)
	// Disconnected is called when the replica's stream ends.
	Disconnected(node string)
}

// CommitIndex tells the server how far records are committed (acknowledged
// by K sync-set replicas). Changed returns a channel closed at the next
// change.
type CommitIndex interface {
	CommitIndex() uint64
	Changed() <-chan struct{}
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Node is this agent's member id.
	Node string
	// Log is the primary's transaction log.
	Log *txlog.Log
	// Acks receives replica reports; nil discards them.
	Acks AckSink
	// Commit supplies the commit index; nil means "everything durable in
	// the local log is committed" (asynchronous, K = 0).
	Commit CommitIndex
	// BatchRecords and BatchBytes bound one Batch message (defaults 512
	// records, 4 MiB; a single larger record is sent alone).
	BatchRecords int
	BatchBytes   int
	// Keepalive is how often an idle stream carries the commit index, so
	// replicas notice a dead primary (default 1s).
	Keepalive time.Duration
	// CommitDelay is how long a commit-index change waits to ride on the
	// next batch while records are flowing, instead of a message of its
	// own (default 2ms; negative: never wait). Only the replicas' apply
	// waits for it; no client commit does.
	CommitDelay time.Duration
	// HelloTimeout bounds the wait for a replica's hello (default 10s).
	HelloTimeout time.Duration
	// Metrics, if not nil, times the replicas' acks.
	Metrics *Metrics
	Logger  *slog.Logger
}

// Server is the primary side of log shipping: the LogShipping gRPC service.
// It serves only while it is the primary of the current epoch (SetRole).
type Server struct {
	shippb.UnimplementedLogShippingServer
	cfg ServerConfig
	log *slog.Logger

	mu      sync.Mutex
	primary bool
	epoch   uint64
	acks    AckSink
	commit  CommitIndex
	streams map[*stream]struct{}
	// current is each replica's newest accepted stream: only its end
	// makes the replica unhealthy. hmu orders the health calls to acks.
	current map[string]*stream
	hmu     sync.Mutex
}

type stream struct {
	node   string
	cancel context.CancelCauseFunc
}

// NewServer returns a Server that refuses streams until SetRole makes it
// the primary.
func NewServer(cfg ServerConfig) *Server {
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = 512
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 4 << 20
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = time.Second
	}
	if cfg.CommitDelay == 0 {
		cfg.CommitDelay = 2 * time.Millisecond
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{cfg: cfg, log: cfg.Logger.With("component", "ship-server"), streams: map[*stream]struct{}{},
		current: map[string]*stream{}, acks: cfg.Acks, commit: cfg.Commit}
}

// SetGate replaces where replica reports go and where the commit index
// comes from (a new primary term has a new gate). Streams opened later use
// them; call it before SetRole.
func (s *Server) SetGate(acks AckSink, commit CommitIndex) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acks, s.commit = acks, commit
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) { shippb.RegisterLogShippingServer(g, s) }

// SetRole makes the server serve as primary of epoch (primary true) or stop
// serving. Streams of an older epoch, or all streams when no longer
// primary, are closed: that is the fence against a deposed primary.
func (s *Server) SetRole(primary bool, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := s.primary != primary || s.epoch != epoch
	s.primary, s.epoch = primary, epoch
	if changed {
		for st := range s.streams {
			st.cancel(fmt.Errorf("role changed: primary=%v epoch=%d", primary, epoch))
		}
	}
}

// Role returns whether the server acts as primary, and its epoch.
func (s *Server) Role() (primary bool, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary, s.epoch
}

// Stream implements shippb.LogShippingServer.
func (s *Server) Stream(ss grpc.BidiStreamingServer[shippb.Up, shippb.Down]) error {
	hello, err := s.recvHello(ss)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	st := &stream{node: hello.Node, cancel: cancel}

	s.mu.Lock()
	primary, epoch, acks, commit := s.primary, s.epoch, s.acks, s.commit
	if primary {
		s.streams[st] = struct{}{}
	}
	s.mu.Unlock()
	if !primary {
		return status.Errorf(codes.FailedPrecondition, "%s is not the primary: stream from the primary's agent", s.cfg.Node)
	}
	defer func() {
		s.mu.Lock()
		delete(s.streams, st)
		s.mu.Unlock()
	}()

	l := s.cfg.Log
	last := l.LastSeqno()
	verdict, fork, err := Decide(hello, LogView{
		First: l.FirstSeqno(), Last: last, CurrentEpoch: epoch,
		EpochAt: func(seqno uint64) (uint64, error) {
			rec, err := l.Read(seqno)
			return rec.Epoch, err
		},
	})
	if err != nil {
		var he *HelloError
		if errors.As(err, &he) {
			code := map[HelloCode]codes.Code{BadHello: codes.InvalidArgument, StalePrimary: codes.FailedPrecondition, OutOfRange: codes.OutOfRange}[he.Code]
			s.log.Warn("replica refused", "replica", hello.Node, "reason", he.Msg)
			return status.Error(code, he.Msg)
		}
		return status.Errorf(codes.Internal, "%v", err)
	}
	if verdict == Fork {
		s.log.Info("replica must truncate", "replica", hello.Node, "fork_seqno", fork, "its_next", hello.NextSeqno)
		return ss.Send(&shippb.Down{Msg: &shippb.Down_Fork{Fork: &shippb.Fork{ForkSeqno: fork, Epoch: epoch}}})
	}
	if err := ss.Send(&shippb.Down{Msg: &shippb.Down_Accept{Accept: &shippb.Accept{Epoch: epoch, LastSeqno: last, NodeId: s.cfg.Node}}}); err != nil {
		return err
	}
	s.log.Info("replica stream accepted", "replica", hello.Node, "from_seqno", hello.NextSeqno, "epoch", epoch)
	s.accepted(st, acks)
	defer s.ended(st, acks)

	var sent inFlight
	sent.start(hello.NextSeqno - 1)
	recvErr := make(chan error, 1)
	go func() { recvErr <- s.recvAcks(ss, hello.Node, &sent, acks) }()
	sendErr := make(chan error, 1)
	go func() { sendErr <- s.send(ctx, ss, hello.NextSeqno, &sent, commit) }()
	select {
	case err = <-recvErr:
		cancel(err)
		<-sendErr
	case err = <-sendErr:
	case <-ctx.Done():
		err = context.Cause(ctx)
		<-sendErr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Info("replica stream ended", "replica", hello.Node, "err", err)
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return status.Errorf(codes.Unavailable, "stream closed: %v", cause)
	}
	return err
}

// accepted makes st the replica's current stream and tells acks it is
// connected. An older stream of the same replica (it reconnected before the
// old one was noticed dead) is closed.
func (s *Server) accepted(st *stream, acks AckSink) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.mu.Lock()
	old := s.current[st.node]
	s.current[st.node] = st
	s.mu.Unlock()
	if old != nil {
		old.cancel(errors.New("replaced by a newer stream of the same replica"))
	}
	if acks != nil {
		acks.Connected(st.node)
	}
}

// ended tells acks the replica is disconnected, unless a newer stream of
// the same replica is live: health follows the replica's current stream,
// so the late end of an old one never marks a live replica unhealthy.
func (s *Server) ended(st *stream, acks AckSink) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.mu.Lock()
	cur := s.current[st.node] == st
	if cur {
		delete(s.current, st.node)
	}
	s.mu.Unlock()
	if cur && acks != nil {
		acks.Disconnected(st.node)
	}
}

func (s *Server) recvHello(ss grpc.BidiStreamingServer[shippb.Up, shippb.Down]) (Hello, error) {
	type result struct {
		up  *shippb.Up
		err error
	}
	ch := make(chan result, 1)
	go func() {
		up, err := ss.Recv()
		ch <- result{up, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-time.After(s.cfg.HelloTimeout):
		return Hello{}, status.Errorf(codes.DeadlineExceeded, "no hello within %s", s.cfg.HelloTimeout)
	}
	if r.err != nil {
		return Hello{}, r.err
	}
	h := r.up.GetHello()
	if h == nil {
		return Hello{}, status.Error(codes.InvalidArgument, "the first message on a log stream must be a hello")
	}
	return Hello{Node: h.NodeId, Epoch: h.Epoch, NextSeqno: h.NextSeqno, LastEpoch: h.LastEpoch}, nil
}

// recvAcks reads durable-seqno reports until the stream ends.
func (s *Server) recvAcks(ss grpc.BidiStreamingServer[shippb.Up, shippb.Down], node string, sent *inFlight, acks AckSink) error {
	var last uint64
	for {
		up, err := ss.Recv()
		if err != nil {
			return err
		}
		ack := up.GetAck()
		if ack == nil {
			return status.Errorf(codes.InvalidArgument, "replica %s: only acks may follow the hello", node)
		}
		d := ack.DurableSeqno
		if max := sent.max(); d > max {
			return status.Errorf(codes.InvalidArgument, "replica %s: acked durable seqno %d but only %d was sent", node, d, max)
		}
		if d < last {
			continue // reordered or repeated; acks are cumulative
		}
		last = d
		if acks != nil {
			acks.Durable(node, d)
		}
		rtts := sent.acked(d, time.Now())
		if m := s.cfg.Metrics; m != nil {
			obs := m.ackRTT.WithLabelValues(node)
			for _, rtt := range rtts {
				obs.Observe(rtt.Seconds())
			}
		}
	}
}

func (s *Server) commitIndex(commit CommitIndex) (uint64, <-chan struct{}) {
	if commit == nil {
		return s.cfg.Log.DurableSeqno(), s.cfg.Log.Changed()
	}
	return commit.CommitIndex(), commit.Changed()
}

// send streams written records from seqno from, and the commit index.
func (s *Server) send(ctx context.Context, ss grpc.BidiStreamingServer[shippb.Up, shippb.Down], from uint64, sent *inFlight, commitSrc CommitIndex) error {
	l := s.cfg.Log
	r, err := l.NewReader(from)
	if err != nil {
		return status.Errorf(codes.OutOfRange, "read log from seqno %d: %v", from, err)
	}
	keepalive := time.NewTicker(s.cfg.Keepalive)
	defer keepalive.Stop()
	var lastCommit uint64
	var lastBatch time.Time // when the last batch was sent
	var hold *time.Timer    // a commit-only message waiting for a batch
	defer func() {
		if hold != nil {
			hold.Stop()
		}
	}()
	next := from
	for {
		// Records are shipped as soon as they are written to the primary's
		// log, while its fsync runs: the replicas' fsyncs overlap the
		// primary's instead of following it. This is safe because the
		// primary's binlog already holds every extracted transaction
		// durably (sync_binlog=1; the dump sends only synced events),
		// extraction is deterministic, and the ack gate acknowledges
		// nothing the primary's own log does not hold durably. After a
		// power loss a replica may hold records past the restarted
		// primary's log end: Decide refuses it (OutOfRange, it retries)
		// until re-extraction has caught up with it.
		logChanged := l.Changed()
		commit, commitChanged := s.commitIndex(commitSrc)
		written := l.LastSeqno()
		if next <= written {
			batch := &shippb.Batch{}
			size := 0
			for next <= written && len(batch.Records) < s.cfg.BatchRecords && (size < s.cfg.BatchBytes || len(batch.Records) == 0) {
				rec, ok, err := r.TryNext()
				if err != nil {
					return status.Errorf(codes.Internal, "read log at seqno %d: %v", next, err)
				}
				if !ok {
					break
				}
				b, err := rec.MarshalBinary()
				if err != nil {
					return status.Errorf(codes.Internal, "encode record %d: %v", rec.Seqno, err)
				}
				batch.Records = append(batch.Records, b)
				size += len(b)
				next++
			}
			batch.CommitSeqno = min(commit, next-1)
			now := time.Now()
			sent.sent(next-1, now)
			if err := ss.Send(&shippb.Down{Msg: &shippb.Down_Batch{Batch: batch}}); err != nil {
				return err
			}
			lastCommit = batch.CommitSeqno
			lastBatch = now
			if hold != nil {
				hold.Stop()
				hold = nil
			}
			continue
		}
		var holdC <-chan time.Time
		if c := min(commit, next-1); c != lastCommit {
			// While records flow, the next batch comes within about one
			// fsync of the primary's log and carries the commit index;
			// a message of its own would cost both sides a write, a read
			// and a wake-up for nothing.
			if d := s.cfg.CommitDelay; d > 0 && time.Since(lastBatch) < d {
				if hold == nil {
					hold = time.NewTimer(d)
				}
				holdC = hold.C
			} else {
				if hold != nil {
					hold.Stop()
					hold = nil
				}
				if err := ss.Send(&shippb.Down{Msg: &shippb.Down_Commit{Commit: &shippb.CommitIndex{Seqno: c}}}); err != nil {
					return err
				}
				lastCommit = c
				continue
			}
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-logChanged:
		case <-commitChanged:
		case <-holdC:
			hold = nil
			lastBatch = time.Time{} // send it now
		case <-keepalive.C:
			if err := ss.Send(&shippb.Down{Msg: &shippb.Down_Commit{Commit: &shippb.CommitIndex{Seqno: lastCommit}}}); err != nil {
				return err
			}
		}
	}
}
