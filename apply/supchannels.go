package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Changing the channel count (DESIGN.md §4). The restart rows are valid
// only for the channel count and shard layout that wrote them, so the
// Supervisor stops its applier, drains every channel to one seqno with the
// count the rows were written with, keeps the new count (Host.KeepChannels)
// and restarts the applier with it, which then re-creates the rows.

// ChannelsResult is the outcome of SetChannels.
type ChannelsResult struct {
	// OldCount is the count the restart rows were written with (0: there
	// were none yet).
	OldCount int
	// Count is the applier's channel count now.
	Count int
	// DrainedSeqno: every restart row was at it before the switch.
	DrainedSeqno uint64
	// Running: the applier runs with Count channels. Otherwise ApplierErr
	// says why it has not started; the Supervisor retries as after any
	// error.
	Running    bool
	ApplierErr error
}

// channelsReq is a SetChannels call handed to the Run's loop.
type channelsReq struct {
	ctx   context.Context
	n     int
	res   ChannelsResult
	reply chan channelsReply // buffered: the loop never blocks on it
}

type channelsReply struct {
	res ChannelsResult
	err error
}

// fail answers r with err: nothing was switched.
func (r *channelsReq) fail(err error) {
	r.reply <- channelsReply{err: err}
}

// answer answers r, whose switch is done, once the applier's next run has
// started (runErr nil) or failed to start (runErr). It is a no-op on nil
// and returns nil.
func (r *channelsReq) answer(runErr error) *channelsReq {
	if r == nil {
		return nil
	}
	r.res.Running, r.res.ApplierErr = runErr == nil, runErr
	r.reply <- channelsReply{res: r.res}
	return nil
}

// SetChannels changes the applier's channel count to n while a Run is
// under way: the running applier stops, every channel is drained to one
// seqno with the count the restart rows were written with (which may
// differ from the applier's when its start was refused with ErrDrainFirst),
// the count is kept (Host.KeepChannels), and the applier restarts with n
// channels. When an error is returned the channel count did not change,
// unless ctx ended while the new run was starting (the error says so).
// Errors wrap ErrBadChannels, ErrNotRunning, ErrChangeBusy,
// ErrShardMapChanged, ErrDrainFirst, ErrSwitch or ctx's error where they
// apply.
func (s *Supervisor) SetChannels(ctx context.Context, n int) (ChannelsResult, error) {
	if n < 1 || n > MaxChannels {
		return ChannelsResult{}, fmt.Errorf("apply: count %d is out of range: want 1..%d: %w", n, MaxChannels, ErrBadChannels)
	}
	s.mu.Lock()
	ap, rc, count := s.ap, s.cur, s.count
	s.mu.Unlock()
	if rc == nil {
		return ChannelsResult{}, fmt.Errorf("apply: set channels: %w", ErrNotRunning)
	}
	if _, err := New(s.configFor(n, false)); err != nil {
		return ChannelsResult{}, fmt.Errorf("apply: %d channels: %v: %w", n, err, ErrBadChannels)
	}
	if !s.changing.CompareAndSwap(false, true) {
		return ChannelsResult{}, fmt.Errorf("apply: set channels: %w", ErrChangeBusy)
	}
	defer s.changing.Store(false)

	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	rows, err := ReadRestartRows(rctx, s.db, s.schema)
	cancel()
	if err != nil {
		return ChannelsResult{}, err
	}
	if count == n && (len(rows) == 0 || rows[0].ChannelCount == n) {
		return ChannelsResult{OldCount: n, Count: n, Running: ap.Status().Running}, nil
	}
	if len(rows) > 0 {
		if err := s.checkLayout(rows); err != nil {
			return ChannelsResult{}, err
		}
	}

	req := &channelsReq{ctx: ctx, n: n, reply: make(chan channelsReply, 1)}
	select {
	case s.switchc <- req:
	case <-rc.done:
		return ChannelsResult{}, errors.New("apply: set channels: the supervised run stopped")
	case <-ctx.Done():
		return ChannelsResult{}, fmt.Errorf("apply: set channels: %w", ctx.Err())
	}
	// The loop always answers a request it took; the drain ends with ctx,
	// the wait for the next run's start may not.
	select {
	case r := <-req.reply:
		return r.res, r.err
	case <-ctx.Done():
		return ChannelsResult{}, fmt.Errorf("apply: set channels: no answer in time (%w): the switch to %d channels may be done or not; see the applier's status and log", ctx.Err(), n)
	}
}

// checkLayout refuses a drain with the rows' channel count when the shard
// map changed since they were written: the drain would be refused too.
func (s *Supervisor) checkLayout(rows []RestartRow) error {
	lo, hi := rowRange(rows)
	if lo == hi {
		return nil // drained already: any count and layout may follow
	}
	m, err := NewShardMap(s.cfg.Applier.Shards, rows[0].ChannelCount)
	if err != nil {
		return fmt.Errorf("apply: the restart rows were written with %d channels, and the shard map does not fit them: %v: %w", rows[0].ChannelCount, err, ErrShardMapChanged)
	}
	if m.Layout() != rows[0].Layout {
		return fmt.Errorf("apply: the shard map (apply.shard_map) differs from the one the restart rows were written with (%d channels, rows at seqnos %d..%d), so they cannot be drained: "+
			"restore the previous shard map in the agent's configuration and restart the agent, then change the channel count: %w", rows[0].ChannelCount, lo, hi, ErrShardMapChanged)
	}
	return nil
}

// changeChannels carries out req with no applier run under way: drain with
// the rows' channel count, keep the new count, switch. It returns req if
// its answer waits for the next run to start, nil if it was answered.
func (s *Supervisor) changeChannels(ctx context.Context, req *channelsReq, rc *runCtl) *channelsReq {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(req.ctx, cancel)()
	res, err := s.drainAndSwitch(ctx, req.n, rc)
	if err != nil {
		if req.ctx.Err() != nil && !errors.Is(err, req.ctx.Err()) {
			err = fmt.Errorf("%w (%w)", err, req.ctx.Err())
		}
		s.log.Error("channel count change failed; the applier restarts with its current channel count", "channels", req.n, "err", err)
		req.fail(err)
		return nil
	}
	req.res = res
	return req
}

// drainAndSwitch drains the restart rows with their own channel count up
// to the highest committed seqno known, keeps n and makes the applier one
// of n channels.
func (s *Supervisor) drainAndSwitch(ctx context.Context, n int, rc *runCtl) (ChannelsResult, error) {
	rows, err := ReadRestartRows(ctx, s.db, s.schema)
	if err != nil {
		return ChannelsResult{}, err
	}
	lo, hi := rowRange(rows)
	res := ChannelsResult{Count: n, DrainedSeqno: hi}
	if len(rows) > 0 {
		res.OldCount = rows[0].ChannelCount
	}
	// Records up to the highest row are committed: some channel applied
	// them (or, on a former primary, the database holds them). A session
	// of the stopped run may still be committing, so the rows just read
	// may move, but never past the commit index: the drain runs even when
	// they look even, and its start waits for such sessions.
	target := max(rc.Get(), hi)
	s.log.Info("channel count change: applier stopped, draining", "channels", res.OldCount, "new_channels", n,
		"rows_from", lo, "rows_to", hi, "to_seqno", target)
	if len(rows) > 0 && target > 0 {
		if err := s.checkLayout(rows); err != nil {
			return res, err
		}
		if err := s.drain(ctx, res.OldCount, target, hi, rc); err != nil {
			return res, err
		}
		res.DrainedSeqno = target
	}
	s.log.Info("channel count change: drained", "seqno", res.DrainedSeqno, "channels", res.OldCount)
	if s.host != nil {
		if err := s.host.KeepChannels(n, res.DrainedSeqno); err != nil {
			return res, fmt.Errorf("apply: keep the new count: %v (the rows are drained to %d; the applier keeps its channel count): %w", err, res.DrainedSeqno, ErrSwitch)
		}
	}
	if err := s.swap(n); err != nil {
		return res, fmt.Errorf("apply: %v: %w", err, ErrSwitch)
	}
	s.log.Info(fmt.Sprintf("channel count change: switched to %d channels", n), "channels", n, "old_channels", res.OldCount, "drained_seqno", res.DrainedSeqno)
	return res, nil
}

// atLeast is a commit index that is at least min: records up to min are
// known to be committed.
type atLeast struct {
	ci  CommitSource
	min uint64
}

func (c atLeast) Get() uint64 { return max(c.ci.Get(), c.min) }

func (c atLeast) WaitFor(ctx context.Context, seqno uint64) (uint64, error) {
	if v := c.Get(); v >= seqno {
		return v, nil
	}
	v, err := c.ci.WaitFor(ctx, seqno)
	return max(v, c.min), err
}

// drain runs an applier of count channels (the rows' own) up to target.
// Records up to held are known to be committed.
func (s *Supervisor) drain(ctx context.Context, count int, target, held uint64, rc *runCtl) error {
	dap, err := New(s.configFor(count, false))
	if err != nil {
		return fmt.Errorf("apply: an applier with the rows' %d channels: %v: %w", count, err, ErrShardMapChanged)
	}
	// While it drains, the drain's applier is the one Status shows and
	// the watch retries records of.
	defer s.setApplier(s.setApplier(dap))
	err = dap.Drain(ctx, s.src, atLeast{rc, held}, target)
	if err == nil {
		return nil
	}
	var stopped []string
	st := dap.Status()
	for _, c := range append(st.Channels, st.Serial) {
		if e := c.Stopped; e != nil {
			stopped = append(stopped, fmt.Sprintf("channel %d is stopped on seqno %d (GTID %s): %v", e.Channel, e.Seqno, e.GTID, e.Err))
		}
	}
	what := fmt.Sprintf("apply: drain with %d channels to seqno %d (applied %d)", count, target, st.Applied)
	if len(stopped) > 0 {
		what += ": " + strings.Join(stopped, "; ") + "; fix the record (the applier retries it) and run the command again"
	}
	return fmt.Errorf("%s: %w; the applier restarts with its current channel count", what, err)
}

// setApplier makes ap the current applier and returns the previous one.
func (s *Supervisor) setApplier(ap *Applier) *Applier {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.ap
	s.ap = ap
	s.notifyLocked()
	return prev
}

// swap makes the applier one of n channels, its metrics replacing the old
// applier's.
func (s *Supervisor) swap(n int) error {
	if s.Channels() == n {
		return nil
	}
	var old []prometheus.Collector
	if s.reg != nil {
		old = s.reg.unregisterAll()
	}
	ap, err := New(s.configFor(n, true))
	if err != nil {
		if s.reg != nil {
			s.reg.unregisterAll()
			for _, c := range old {
				s.reg.Register(c)
			}
		}
		return fmt.Errorf("an applier of %d channels: %w", n, err)
	}
	ap.observe = s.saw
	s.setApplier(ap)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count = n
	s.shardsOn = map[int]map[string]bool{}
	return nil
}

// swapRegisterer remembers the collectors registered through it, so that
// an applier replaced by one with another channel count can take its
// metrics' names.
type swapRegisterer struct {
	prometheus.Registerer
	mu sync.Mutex
	cs []prometheus.Collector
}

// Register implements prometheus.Registerer.
func (r *swapRegisterer) Register(c prometheus.Collector) error {
	if err := r.Registerer.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.cs = append(r.cs, c)
	r.mu.Unlock()
	return nil
}

// MustRegister implements prometheus.Registerer.
func (r *swapRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister implements prometheus.Registerer.
func (r *swapRegisterer) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	for i, x := range r.cs {
		if x == c {
			r.cs = append(r.cs[:i], r.cs[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
	return r.Registerer.Unregister(c)
}

// unregisterAll unregisters every collector registered through r and
// returns them.
func (r *swapRegisterer) unregisterAll() []prometheus.Collector {
	r.mu.Lock()
	cs := r.cs
	r.cs = nil
	r.mu.Unlock()
	for _, c := range cs {
		r.Registerer.Unregister(c)
	}
	return cs
}
