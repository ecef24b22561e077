package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quire-ha/quire/apply"
	"github.com/quire-ha/quire/ship"
)

// Changing a replica's channel count (DESIGN.md §4). The restart rows are
// valid only for the channel count and shard layout that wrote them, so
// the agent stops its applier, drains every channel to one seqno with the
// count the rows were written with, and restarts the applier with the new
// count, which then re-creates the rows. The new count is kept in the data
// directory (channelsFile) and overrides apply.channels until the
// configuration says the same.

// channelsFile, in data_dir, holds the channel count SetChannels set.
const channelsFile = "apply-channels.json"

// MaxChannels is the most channels an applier may run.
const MaxChannels = 256

// channelsSetting is the content of channelsFile.
type channelsSetting struct {
	// Channels is the count SetChannels set.
	Channels int `json:"channels"`
	// ConfigChannels is apply.channels of the configuration at the time: a
	// configuration changed since then wins over the setting.
	ConfigChannels int `json:"config_channels"`
	// DrainedSeqno is where every restart row was before the switch.
	DrainedSeqno uint64    `json:"drained_seqno"`
	SetAt        time.Time `json:"set_at"`
}

func (a *Agent) channelsPath() string { return filepath.Join(a.cfg.DataDir, channelsFile) }

// loadChannelsSetting reads path; it returns nil if the file does not
// exist.
func loadChannelsSetting(path string) (*channelsSetting, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: read %s: %w", path, err)
	}
	var s channelsSetting
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("agent: %s is damaged (%v): it holds the channel count `quire channels --set-count` set; remove it to use apply.channels from the configuration", path, err)
	}
	if s.Channels < 1 || s.Channels > MaxChannels {
		return nil, fmt.Errorf("agent: %s says %d channels, want 1..%d: remove it to use apply.channels from the configuration", path, s.Channels, MaxChannels)
	}
	return &s, nil
}

// removeChannelsSetting removes path, if it exists, durably.
func removeChannelsSetting(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("agent: remove %s: %w", path, err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("agent: remove %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("agent: remove %s: %w", path, err)
	}
	return nil
}

// channelsChoice is the channel count an agent starts its applier with.
type channelsChoice struct {
	// Channels is the count to use.
	Channels int
	// Drop: the kept setting no longer applies; remove its file.
	Drop bool
	// Warn, if set, is logged as a warning and shown in /status.
	Warn string
	// Info, if set, is logged.
	Info string
}

// chooseChannels picks the applier's channel count from apply.channels
// (configured) and the setting SetChannels kept (nil if none). The setting
// wins while the configuration still says what it said when the count was
// set; once the configuration says the same count, or was changed since,
// the configuration wins and the setting is dropped.
func chooseChannels(configured int, s *channelsSetting) channelsChoice {
	switch {
	case s == nil:
		return channelsChoice{Channels: configured}
	case s.Channels == configured:
		return channelsChoice{Channels: configured, Drop: true,
			Info: fmt.Sprintf("apply.channels in the configuration is %d, the count `quire channels --set-count` set: %s is no longer needed", configured, channelsFile)}
	case s.ConfigChannels != configured:
		return channelsChoice{Channels: configured, Drop: true,
			Warn: fmt.Sprintf("apply.channels in the configuration was changed from %d to %d after `quire channels --set-count %d`: using %d channels from the configuration",
				s.ConfigChannels, configured, s.Channels, configured)}
	}
	return channelsChoice{Channels: s.Channels,
		Warn: fmt.Sprintf("apply.channels in the configuration is %d, but `quire channels --set-count` set %d channels (kept in data_dir/%s): using %d; set apply.channels: %d in the agent's configuration",
			configured, s.Channels, channelsFile, s.Channels, s.Channels)}
}

// startChannels returns the channel count the applier starts with and the
// warning to show in /status, and logs the choice.
func (a *Agent) startChannels(log *slog.Logger) (int, string, error) {
	configured := a.cfg.Apply.Channels
	s, err := loadChannelsSetting(a.channelsPath())
	if err != nil {
		return configured, "", err
	}
	c := chooseChannels(configured, s)
	if c.Warn != "" {
		log.Warn(c.Warn, "config_channels", configured, "channels", c.Channels)
	}
	if c.Info != "" {
		log.Info(c.Info, "channels", c.Channels)
	}
	if c.Drop {
		if err := removeChannelsSetting(a.channelsPath()); err != nil {
			log.Warn("could not remove the obsolete channel count setting", "err", err)
		}
		return c.Channels, "", nil
	}
	return c.Channels, c.Warn, nil
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
	// says why it has not started; the agent retries as after any error.
	Running    bool
	ApplierErr error
	// ConfigNote, if set, asks the operator to update the configuration.
	ConfigNote string
}

// channelsReq is a SetChannels call handed to the replica role's loop.
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

// fail answers r with err (a gRPC status error): nothing was switched.
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

// SetChannels changes the channel count of the replica's applier to n: the
// running applier stops, every channel is drained to one seqno with the
// count the restart rows were written with (which may differ from the
// applier's when its start was refused with apply.ErrDrainFirst), the
// count is kept in the data directory, and the applier restarts with n
// channels. Errors carry gRPC status codes; when one is returned the
// applier's channel count did not change, unless ctx ended while the new
// run was starting (the error says so).
func (a *Agent) SetChannels(ctx context.Context, n int) (ChannelsResult, error) {
	if n < 1 || n > MaxChannels {
		return ChannelsResult{}, status.Errorf(codes.InvalidArgument, "set channels: count %d is out of range: want 1..%d", n, MaxChannels)
	}
	a.mu.Lock()
	role, ra := a.role, a.rep
	a.mu.Unlock()
	if role.Kind != RoleReplica || ra == nil {
		return ChannelsResult{}, status.Errorf(codes.FailedPrecondition, "set channels: this agent is not a replica (role %s): only a replica's applier has channels", role.Kind)
	}
	ra.mu.Lock()
	ap, runDone, count := ra.ap, ra.runDone, ra.count
	ra.mu.Unlock()
	switch {
	case runDone == nil:
		msg := "the replica role is not running"
		if err := a.roleError(); err != nil {
			msg += ": " + err.Error()
		}
		return ChannelsResult{}, status.Errorf(codes.FailedPrecondition, "set channels: %s", msg)
	case ap == nil:
		return ChannelsResult{}, status.Errorf(codes.FailedPrecondition, "set channels: the applier's configuration is refused (%v): fix the configuration and restart the agent", ra.newErr)
	}
	if _, err := apply.New(ra.configFor(n, false)); err != nil {
		return ChannelsResult{}, status.Errorf(codes.InvalidArgument, "set channels: %d channels: %v", n, err)
	}
	if !ra.changing.CompareAndSwap(false, true) {
		return ChannelsResult{}, status.Error(codes.FailedPrecondition, "set channels: a channel count change is already under way")
	}
	defer ra.changing.Store(false)

	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	rows, err := apply.ReadRestartRows(rctx, a.db, ra.schema)
	cancel()
	if err != nil {
		return ChannelsResult{}, status.Errorf(codes.Unavailable, "set channels: %v", err)
	}
	if count == n && (len(rows) == 0 || rows[0].ChannelCount == n) {
		st := ap.Status()
		return ChannelsResult{OldCount: n, Count: n, Running: st.Running, ConfigNote: ra.note(n)}, nil
	}
	if len(rows) > 0 {
		if err := ra.checkLayout(rows); err != nil {
			return ChannelsResult{}, status.Errorf(codes.FailedPrecondition, "set channels: %v", err)
		}
	}

	req := &channelsReq{ctx: ctx, n: n, reply: make(chan channelsReply, 1)}
	select {
	case ra.switchc <- req:
	case <-runDone:
		return ChannelsResult{}, status.Error(codes.Unavailable, "set channels: the replica role stopped")
	case <-ctx.Done():
		return ChannelsResult{}, status.FromContextError(ctx.Err()).Err()
	}
	// The loop always answers a request it took; the drain ends with ctx,
	// the wait for the next run's start may not.
	select {
	case r := <-req.reply:
		return r.res, r.err
	case <-ctx.Done():
		return ChannelsResult{}, status.Errorf(status.FromContextError(ctx.Err()).Code(),
			"set channels: no answer in time (%v): the switch to %d channels may be done or not; see quire channels and the agent's log", ctx.Err(), n)
	}
}

// configFor is the applier's configuration with n channels; registered
// says whether its metrics go to the agent's registry.
func (ra *replicaApply) configFor(n int, registered bool) apply.Config {
	c := ra.cfg
	c.Channels = n
	if !registered {
		c.Registerer = nil
	}
	return c
}

// checkLayout refuses a drain with the rows' channel count when the shard
// map changed since they were written: the drain would be refused too.
func (ra *replicaApply) checkLayout(rows []apply.RestartRow) error {
	lo, hi := rowRange(rows)
	if lo == hi {
		return nil // drained already: any count and layout may follow
	}
	m, err := apply.NewShardMap(ra.cfg.Shards, rows[0].ChannelCount)
	if err != nil {
		return fmt.Errorf("the restart rows were written with %d channels, and the shard map does not fit them: %w", rows[0].ChannelCount, err)
	}
	if m.Layout() != rows[0].Layout {
		return fmt.Errorf("the shard map (apply.shard_map) differs from the one the restart rows were written with (%d channels, rows at seqnos %d..%d), so they cannot be drained: "+
			"restore the previous shard map in the agent's configuration and restart the agent, then change the channel count", rows[0].ChannelCount, lo, hi)
	}
	return nil
}

// note is the configuration note for a count of n.
func (ra *replicaApply) note(n int) string {
	if configured := ra.a.cfg.Apply.Channels; n != configured {
		return fmt.Sprintf("apply.channels in the agent's configuration is %d: set apply.channels: %d there (until then data_dir/%s keeps %d)", configured, n, channelsFile, n)
	}
	return ""
}

// applier returns the current applier (nil if the configuration was
// refused).
func (ra *replicaApply) applier() *apply.Applier {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	return ra.ap
}

// waitApplied waits until the applier has applied seqno, following the
// applier across channel count changes.
func (ra *replicaApply) waitApplied(ctx context.Context, seqno uint64) error {
	for {
		ra.mu.Lock()
		ap, swapped := ra.ap, ra.swapped
		ra.mu.Unlock()
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-swapped:
				cancel()
			case <-wctx.Done():
			}
		}()
		err := ap.WaitApplied(wctx, seqno)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
}

// runOnce runs ap until the run ends (its error) or a channel count change
// arrives (the request; the run is stopped and has ended first). It answers
// *confirm once the run is under way.
func (ra *replicaApply) runOnce(ctx context.Context, ap *apply.Applier, src apply.Source, ci apply.CommitIndex, confirm **channelsReq) (*channelsReq, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- ap.Run(rctx, src, ci) }()
	var tick <-chan time.Time
	if *confirm != nil {
		t := time.NewTicker(20 * time.Millisecond) // the applier has no start notification
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case err := <-errc:
			return nil, err
		case req := <-ra.switchc:
			cancel()
			<-errc // its sessions are closed; a leftover commit is the next start's business
			return req, nil
		case <-tick:
			if ap.Status().Running {
				*confirm = (*confirm).answer(nil)
				tick = nil
			}
		}
	}
}

// changeChannels carries out req with no applier run under way: drain with
// the rows' channel count, keep the new count, switch. It returns req if
// its answer waits for the next run to start, nil if it was answered.
func (ra *replicaApply) changeChannels(ctx context.Context, req *channelsReq, recv *ship.Receiver) *channelsReq {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(req.ctx, cancel)()
	res, err := ra.drainAndSwitch(ctx, req.n, recv)
	if err != nil {
		ra.log.Error("channel count change failed; the applier restarts with its current channel count", "channels", req.n, "err", err)
		req.fail(err)
		return nil
	}
	req.res = res
	return req
}

// drainAndSwitch drains the restart rows with their own channel count up
// to the highest committed seqno the agent holds, keeps n in the data
// directory and makes the applier one of n channels. Errors carry gRPC
// status codes.
func (ra *replicaApply) drainAndSwitch(ctx context.Context, n int, recv *ship.Receiver) (ChannelsResult, error) {
	rows, err := apply.ReadRestartRows(ctx, ra.a.db, ra.schema)
	if err != nil {
		return ChannelsResult{}, status.Errorf(codes.Unavailable, "set channels: %v", err)
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
	target := max(recv.CommitIndex(), hi)
	ra.log.Info("channel count change: applier stopped, draining", "channels", res.OldCount, "new_channels", n,
		"rows_from", lo, "rows_to", hi, "to_seqno", target)
	if len(rows) > 0 && target > 0 {
		if err := ra.checkLayout(rows); err != nil {
			return res, status.Errorf(codes.FailedPrecondition, "set channels: %v", err)
		}
		if err := ra.drain(ctx, res.OldCount, target, hi, recv); err != nil {
			return res, err
		}
		res.DrainedSeqno = target
	}
	ra.log.Info("channel count change: drained", "seqno", res.DrainedSeqno, "channels", res.OldCount)

	path := ra.a.channelsPath()
	if res.ConfigNote = ra.note(n); res.ConfigNote == "" {
		err = removeChannelsSetting(path)
	} else {
		var b []byte
		b, err = json.MarshalIndent(channelsSetting{Channels: n, ConfigChannels: ra.a.cfg.Apply.Channels, DrainedSeqno: res.DrainedSeqno, SetAt: time.Now().UTC()}, "", "  ")
		if err == nil {
			err = writeState(path, append(b, '\n'))
		}
	}
	if err != nil {
		return res, status.Errorf(codes.Internal, "set channels: keep the new count: %v (the rows are drained to %d; the applier keeps its channel count)", err, res.DrainedSeqno)
	}
	if err := ra.swap(n, res.ConfigNote); err != nil {
		return res, status.Errorf(codes.Internal, "set channels: %v", err)
	}
	ra.log.Info(fmt.Sprintf("channel count change: switched to %d channels", n), "channels", n, "old_channels", res.OldCount, "drained_seqno", res.DrainedSeqno)
	if res.ConfigNote != "" {
		ra.log.Warn(res.ConfigNote)
	}
	return res, nil
}

// drain runs an applier of count channels (the rows' own) up to target.
// Records up to held are known to be committed.
func (ra *replicaApply) drain(ctx context.Context, count int, target, held uint64, recv *ship.Receiver) error {
	dap, err := apply.New(ra.configFor(count, false))
	if err != nil {
		return status.Errorf(codes.FailedPrecondition, "set channels: an applier with the rows' %d channels: %v", count, err)
	}
	var floor atomic.Uint64
	floor.Store(max(ra.floor.Load(), held))
	src := apply.SourceFunc(func(from uint64) (apply.Reader, error) { return ra.a.txl.NewReader(from) })
	// While it drains, the drain's applier is the one /status shows and
	// the watch retries records of.
	defer ra.setApplier(ra.setApplier(dap))
	err = dap.Drain(ctx, src, commitIndex{r: recv, floor: &floor}, target)
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
	what := fmt.Sprintf("set channels: drain with %d channels to seqno %d (applied %d)", count, target, st.Applied)
	if len(stopped) > 0 {
		what += ": " + strings.Join(stopped, "; ") + "; fix the record (the applier retries it) and run the command again"
	}
	code := codes.Unavailable
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, apply.ErrDrainFirst):
		code = codes.FailedPrecondition
	}
	return status.Errorf(code, "%s: %v; the applier restarts with its current channel count", what, err)
}

// setApplier makes ap the current applier and returns the previous one.
func (ra *replicaApply) setApplier(ap *apply.Applier) *apply.Applier {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	prev := ra.ap
	ra.ap = ap
	close(ra.swapped)
	ra.swapped = make(chan struct{})
	return prev
}

// swap makes the applier one of n channels, its metrics replacing the old
// applier's.
func (ra *replicaApply) swap(n int, note string) error {
	ra.mu.Lock()
	same := ra.count == n
	ra.mu.Unlock()
	if same {
		ra.mu.Lock()
		ra.countNote = note
		ra.mu.Unlock()
		return nil
	}
	shards, err := apply.NewShardMap(ra.cfg.Shards, n)
	if err != nil {
		return err
	}
	old := ra.reg.unregisterAll()
	ap, err := apply.New(ra.configFor(n, true))
	if err != nil {
		ra.reg.unregisterAll()
		for _, c := range old {
			ra.reg.Register(c)
		}
		return fmt.Errorf("an applier of %d channels: %w", n, err)
	}
	ra.setApplier(ap)
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.shards, ra.count, ra.countNote = shards, n, note
	ra.shardsOn = map[int]map[string]bool{}
	return nil
}

// refused shows an applier start refused with apply.ErrDrainFirst, with
// the command that drains the rows and switches, and leaves the applier
// stopped.
func (ra *replicaApply) refused(ctx context.Context, err error) {
	ra.mu.Lock()
	n := ra.count
	ra.mu.Unlock()
	cmd := fmt.Sprintf("quire channels --agent %s --set-count %d", ra.a.controlAddr(), n)
	hint := fmt.Errorf("%w; the applier stays stopped until you run `%s` (it drains every channel to one seqno with the rows' channel count, then switches to %d channels), or until apply.channels is set back to the rows' count and the agent restarts", err, cmd, n)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rows, rerr := apply.ReadRestartRows(rctx, ra.a.db, ra.schema)
	cancel()
	if rerr == nil && len(rows) > 0 {
		if lerr := ra.checkLayout(rows); lerr != nil {
			hint = fmt.Errorf("%w; the applier stays stopped: %v", err, lerr)
			cmd = ""
		}
	}
	ra.log.Error("applier refused to start: the channel count changed while the restart rows are at different seqnos", "err", hint, "run", cmd)
	ra.mu.Lock()
	ra.lastErr, ra.lastAt, ra.retryAt = hint, time.Now(), time.Time{}
	ra.mu.Unlock()
}

// controlAddr is the address operators reach this agent's gRPC service
// at: the bound address, with the host name for an unspecified host.
func (a *Agent) controlAddr() string {
	addr := a.GRPCAddr()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if h, err := os.Hostname(); err == nil && h != "" {
			return net.JoinHostPort(h, port)
		}
	}
	return addr
}
