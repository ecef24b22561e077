package ship

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/quire-ha/quire/api/shippb"
	"github.com/quire-ha/quire/txlog"
)

// ErrStalePrimary is returned when the sender's epoch is older than one
// the replica already knows: the replica refuses its records.
var ErrStalePrimary = errors.New("ship: stream from a primary of an older epoch")

// ErrForked is returned by Receive after the replica truncated its log at a
// fork point named by the primary; connect again to continue.
var ErrForked = errors.New("ship: log truncated at the fork point; reconnect")

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// Node is this replica's member id.
	Node string
	// Log is the replica's transaction log.
	Log *txlog.Log
	// KnownEpoch returns the newest epoch this replica knows (from the
	// managers); streams of an older epoch are refused. Nil means 0.
	KnownEpoch func() uint64
	// KeepFrom returns the lowest seqno the replica must never truncate
	// below (what its applier already applied). A fork point below it is
	// refused loudly instead of truncating. Nil means 0.
	KeepFrom func() uint64
	// DeadAfter: a stream silent this long is considered dead (default 3s;
	// the primary sends keepalives every second).
	DeadAfter time.Duration
	// Accepted, if set, is called each time the primary accepts a stream.
	Accepted func()
	Logger   *slog.Logger
}

// Receiver is the replica side of log shipping.
type Receiver struct {
	cfg    ReceiverConfig
	log    *slog.Logger
	commit atomic.Uint64
	epoch  atomic.Uint64 // epoch of the primary last accepted
	// live is true while a stream accepted by the primary runs; lostAt is
	// when the receiver last had none (its creation, or the end of the
	// last accepted stream), in Unix nanoseconds of the local clock.
	live   atomic.Bool
	lostAt atomic.Int64

	mu      sync.Mutex
	changed chan struct{}
}

// NewReceiver returns a Receiver.
func NewReceiver(cfg ReceiverConfig) *Receiver {
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = 3 * time.Second
	}
	if cfg.KnownEpoch == nil {
		cfg.KnownEpoch = func() uint64 { return 0 }
	}
	if cfg.KeepFrom == nil {
		cfg.KeepFrom = func() uint64 { return 0 }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Receiver{cfg: cfg, log: cfg.Logger.With("component", "ship-receiver"), changed: make(chan struct{})}
	r.lostAt.Store(time.Now().UnixNano())
	return r
}

// Stream reports whether a stream accepted by the primary runs now and,
// when none does, how long the receiver has been without one (since it was
// made, or since its last accepted stream ended). The managers' failure
// detection counts a replica without a stream as confirming that the
// primary is gone.
func (r *Receiver) Stream() (live bool, lostFor time.Duration) {
	if r.live.Load() {
		return true, 0
	}
	return false, max(0, time.Since(time.Unix(0, r.lostAt.Load())))
}

// CommitIndex returns the highest seqno the primary reported committed
// that this replica also holds. The applier applies up to it.
func (r *Receiver) CommitIndex() uint64 { return r.commit.Load() }

// Changed returns a channel closed at the next commit-index change.
func (r *Receiver) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *Receiver) setCommit(c uint64) {
	// The applier applies only what this replica holds durably: a crash
	// must not leave the database ahead of the log.
	if d := r.cfg.Log.DurableSeqno(); c > d {
		c = d
	}
	for {
		old := r.commit.Load()
		if c <= old {
			return
		}
		if r.commit.CompareAndSwap(old, c) {
			break
		}
	}
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Run keeps a stream to the primary at conn open until ctx is done,
// reconnecting with capped exponential backoff (100 ms to 1 s) after failures and at once
// after a fork truncation. It returns ctx's error, or ErrStalePrimary (the
// caller must find the current primary).
func (r *Receiver) Run(ctx context.Context, conn grpc.ClientConnInterface) error {
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		err := r.Receive(ctx, conn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case errors.Is(err, ErrForked):
			continue
		case errors.Is(err, ErrStalePrimary):
			return err
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		r.log.Warn("log stream lost; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		// At most a second: a primary agent that restarts must get its
		// replicas back at once, since with K of them its commits wait.
		backoff = min(backoff*2, time.Second)
	}
}

// Receive runs one stream session: hello, then records until an error.
func (r *Receiver) Receive(ctx context.Context, conn grpc.ClientConnInterface) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cli := shippb.NewLogShippingClient(conn)
	st, err := cli.Stream(ctx)
	if err != nil {
		return fmt.Errorf("ship: open stream: %w", err)
	}
	l := r.cfg.Log
	last, lastEpoch := l.Last()
	known := r.cfg.KnownEpoch()
	if err := st.Send(&shippb.Up{Msg: &shippb.Up_Hello{Hello: &shippb.Hello{
		NodeId: r.cfg.Node, Epoch: known, NextSeqno: last + 1, LastEpoch: lastEpoch,
	}}}); err != nil {
		return fmt.Errorf("ship: send hello: %w", err)
	}

	// Watchdog: any message resets it; silence cancels the stream.
	alive := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(r.cfg.DeadAfter)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-alive:
				t.Reset(r.cfg.DeadAfter)
			case <-t.C:
				cancel(fmt.Errorf("ship: no message from the primary for %s", r.cfg.DeadAfter))
				return
			}
		}
	}()

	down, err := st.Recv()
	if err != nil {
		return r.streamErr(ctx, "first answer", err)
	}
	var streamEpoch uint64
	switch m := down.Msg.(type) {
	case *shippb.Down_Fork:
		f := m.Fork.ForkSeqno
		if keep := r.cfg.KeepFrom(); f < keep {
			return fmt.Errorf("ship: the primary (epoch %d) says fork at seqno %d, below seqno %d that this replica already applied: refusing to truncate; the new primary may lack applied transactions — investigate before rejoining", m.Fork.Epoch, f, keep)
		}
		if m.Fork.Epoch < known {
			return fmt.Errorf("%w: fork order from epoch %d, this replica knows epoch %d", ErrStalePrimary, m.Fork.Epoch, known)
		}
		r.log.Warn("truncating log at the fork point named by the primary", "fork_seqno", f, "last_seqno", last, "primary_epoch", m.Fork.Epoch)
		if err := l.TruncateAfter(f); err != nil {
			return fmt.Errorf("ship: truncate after fork seqno %d: %w", f, err)
		}
		if r.commit.Load() > f {
			r.commit.Store(f)
		}
		return ErrForked
	case *shippb.Down_Accept:
		streamEpoch = m.Accept.Epoch
		if streamEpoch < known {
			return fmt.Errorf("%w: %s serves epoch %d, this replica knows epoch %d", ErrStalePrimary, m.Accept.NodeId, streamEpoch, known)
		}
		r.epoch.Store(streamEpoch)
		r.live.Store(true)
		defer func() {
			r.lostAt.Store(time.Now().UnixNano())
			r.live.Store(false)
		}()
		r.log.Info("streaming from primary", "primary", m.Accept.NodeId, "epoch", streamEpoch, "from_seqno", last+1, "primary_last", m.Accept.LastSeqno)
		if r.cfg.Accepted != nil {
			r.cfg.Accepted()
		}
	default:
		return fmt.Errorf("ship: primary's first answer is %T, want accept or fork", down.Msg)
	}
	alive <- struct{}{}

	// The syncer fsyncs what the loop below appended and reports it: while
	// one fsync runs, the loop keeps receiving and appending, and the next
	// fsync covers everything that arrived meanwhile. It owns st.Send. It
	// first reports what this replica already holds: after a primary
	// agent's restart the gate learns of it only from us, and commits
	// waiting for those records would otherwise wait for the next batch,
	// which they themselves hold up.
	var primaryCommit atomic.Uint64
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		if err := r.syncLoop(ctx, st, &primaryCommit); err != nil {
			cancel(err)
		}
	}()
	defer func() {
		cancel(nil)
		<-syncDone
	}()
	commit := func(c uint64) {
		for {
			old := primaryCommit.Load()
			if c <= old || primaryCommit.CompareAndSwap(old, c) {
				break
			}
		}
		r.setCommit(c)
	}

	for {
		down, err := st.Recv()
		if err != nil {
			return r.streamErr(ctx, "receive", err)
		}
		select {
		case alive <- struct{}{}:
		default:
		}
		switch m := down.Msg.(type) {
		case *shippb.Down_Batch:
			if err := r.appendBatch(m.Batch, streamEpoch); err != nil {
				return err
			}
			commit(m.Batch.CommitSeqno)
		case *shippb.Down_Commit:
			commit(m.Commit.Seqno)
		default:
			return fmt.Errorf("ship: unexpected %T on an accepted stream", down.Msg)
		}
	}
}

// syncLoop makes appended records durable, reports the durable seqno to
// the primary after every fsync, and raises the commit index as far as
// the primary's commit and the local log allow.
func (r *Receiver) syncLoop(ctx context.Context, st grpc.BidiStreamingClient[shippb.Up, shippb.Down], primaryCommit *atomic.Uint64) error {
	l := r.cfg.Log
	reported := l.DurableSeqno()
	if err := st.Send(&shippb.Up{Msg: &shippb.Up_Ack{Ack: &shippb.Ack{DurableSeqno: reported}}}); err != nil {
		return fmt.Errorf("ship: send ack: %w", err)
	}
	for {
		changed := l.Changed()
		if l.LastSeqno() > l.DurableSeqno() {
			if err := l.Sync(); err != nil {
				return fmt.Errorf("ship: fsync the log: %w", err)
			}
		}
		if d := l.DurableSeqno(); d != reported {
			reported = d
			if err := st.Send(&shippb.Up{Msg: &shippb.Up_Ack{Ack: &shippb.Ack{DurableSeqno: d}}}); err != nil {
				return fmt.Errorf("ship: send ack: %w", err)
			}
			r.setCommit(primaryCommit.Load())
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func (r *Receiver) streamErr(ctx context.Context, what string, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("ship: %s: %w", what, cause)
	}
	return fmt.Errorf("ship: %s: %w", what, err)
}

// appendBatch verifies a batch and appends it; the syncer makes it durable.
func (r *Receiver) appendBatch(b *shippb.Batch, streamEpoch uint64) error {
	l := r.cfg.Log
	recs := make([]txlog.Record, len(b.Records))
	next, lastEpoch := l.Last()
	next++
	for i, raw := range b.Records {
		if err := recs[i].UnmarshalBinary(raw); err != nil {
			return fmt.Errorf("ship: record %d of a batch (expected seqno %d): %w", i, next, err)
		}
		rec := &recs[i]
		if rec.Seqno != next {
			return fmt.Errorf("ship: primary sent seqno %d, expected %d", rec.Seqno, next)
		}
		if rec.Epoch < lastEpoch || rec.Epoch > streamEpoch {
			return fmt.Errorf("ship: record %d has epoch %d, outside [%d, %d]", rec.Seqno, rec.Epoch, lastEpoch, streamEpoch)
		}
		lastEpoch = rec.Epoch
		next++
	}
	if len(recs) == 0 {
		return nil
	}
	if err := l.Append(recs...); err != nil {
		return fmt.Errorf("ship: append seqnos %d..%d: %w", recs[0].Seqno, recs[len(recs)-1].Seqno, err)
	}
	return nil
}
