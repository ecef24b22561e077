package apply

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quire-ha/quire/txlog"
)

// Supervision (DESIGN.md §6, Supervision): an Applier run ends on any
// connection loss, server restart or guard, and its restart rows say where
// the next one resumes. A Supervisor runs it again with backoff, retries
// records a channel stopped on, keeps totals across runs for Status,
// changes the channel count with a drain (SetChannels), and applies a whole
// log before a promotion (ApplyThrough). What it needs from the process
// around it is a commit index (CommitSource), the log (Source) and a Host.

// MaxChannels is the most channels an applier may run.
const MaxChannels = 256

// CommitSource is the commit index a Supervisor applies up to: a
// CommitIndex whose value can also be read without waiting (status, and the
// target of a drain). *Watermark and FixedIndex are CommitSources.
type CommitSource interface {
	CommitIndex
	// Get returns the commit index now.
	Get() uint64
}

// FixedIndex is a commit index that never moves: a run applies up to it and
// then waits. ApplyThrough applies a whole log with one.
type FixedIndex uint64

// Get implements CommitSource.
func (f FixedIndex) Get() uint64 { return uint64(f) }

// WaitFor implements CommitIndex: it returns at once for a seqno up to f,
// and waits for ctx otherwise.
func (f FixedIndex) WaitFor(ctx context.Context, seqno uint64) (uint64, error) {
	if seqno <= uint64(f) {
		return uint64(f), nil
	}
	<-ctx.Done()
	return uint64(f), ctx.Err()
}

// Host is the process a Supervisor runs in: the agent. The Supervisor calls
// Prepare and Held from its Run, one call at a time, and KeepChannels from
// SetChannels' switch.
type Host interface {
	// Prepare readies the local database before every run of the applier
	// (read-only for clients, no semi-sync waits, …). It returns warnings
	// about settings that work but are not recommended; Status shows them.
	Prepare(ctx context.Context) (warnings []string, err error)
	// Held says which records the database already holds without restart
	// rows that cover them (a former primary's own term: they came from its
	// binlog), or nil. Before the first run of each Run the Supervisor
	// raises the restart rows to Held.Last, so they are not applied twice.
	Held() (*Held, error)
	// KeepChannels keeps, durably, the channel count SetChannels switches
	// to, before the switch: the restart rows are drained to drained. An
	// error cancels the switch.
	KeepChannels(n int, drained uint64) error
}

// Held is a run of records the database holds already: First to Last.Seqno.
type Held struct {
	// First is the first seqno of the run: every record before it must be
	// applied already, or the database lacks records under its own writes.
	First uint64
	// Last is the last record the database holds.
	Last txlog.Record
	// What says where the records came from, for logs and errors ("this
	// node was primary of epoch 3").
	What string
}

// Errors a Supervisor's calls wrap.
var (
	// ErrNotRunning: no Run of the Supervisor is under way.
	ErrNotRunning = errors.New("no supervised run is under way")
	// ErrBadChannels: the channel count asked for is out of range or does
	// not fit the configuration (say, a shard pinned beyond it).
	ErrBadChannels = errors.New("channel count refused")
	// ErrChangeBusy: another SetChannels call is under way.
	ErrChangeBusy = errors.New("a channel count change is already under way")
	// ErrShardMapChanged: the restart rows were written with another shard
	// map, so they cannot be drained with the current one.
	ErrShardMapChanged = errors.New("the shard map changed since the restart rows were written")
	// ErrSwitch: the rows were drained, but keeping the new count or
	// making an applier of it failed; the applier keeps its count.
	ErrSwitch = errors.New("switching the channel count failed")
	// ErrRecordsMissing: the restart rows show that the database lacks
	// records before a run it holds (Host.Held): re-provision it.
	ErrRecordsMissing = errors.New("records missing under the database's own writes")
)

// SupervisorConfig configures a Supervisor.
type SupervisorConfig struct {
	// Applier configures the appliers the Supervisor makes; Channels is the
	// count to start with. Its Registerer receives the metrics of the
	// current applier (a channel count change replaces them) and the
	// per-channel lag gauges; Logger receives the Supervisor's logs too.
	Applier Config
	// DB is the local database: the Supervisor reads and seeds the restart
	// rows through it between runs.
	DB *sql.DB
	// Source is the transaction log.
	Source Source
	// Host prepares the database; nil: nothing to prepare, nothing held,
	// channel counts not kept.
	Host Host
	// DrainCommand, if set, names the operator's command that drains the
	// restart rows and switches to n channels (it calls SetChannels); a
	// start refused with ErrDrainFirst names it.
	DrainCommand func(n int) string
}

// Supervisor runs an Applier for as long as its caller wants: New makes
// it, Run supervises runs up to a commit index, ApplyThrough applies a
// whole log, SetChannels changes the channel count, Status, WaitApplied and
// KeepFrom report. All methods may be called concurrently; one Run (or
// ApplyThrough's own run) is under way at a time, a second waits for it.
type Supervisor struct {
	cfg     SupervisorConfig
	db      *sql.DB
	src     Source
	host    Host
	schema  string
	log     *slog.Logger
	reg     *swapRegisterer // nil without a Registerer
	switchc chan *channelsReq
	// changing: a SetChannels call is under way.
	changing atomic.Bool

	mu sync.Mutex
	// ap is the current applier; a channel count change replaces it, and
	// while it drains the drain's applier is the current one.
	ap      *Applier
	count   int           // channels of the applier runs use
	cur     *runCtl       // the Run under way, nil when none
	changed chan struct{} // closed and replaced at every change of the above and of the run's state
	// stuck is what keeps runs from starting that retrying cannot fix,
	// nil when none.
	stuck    error
	runs     int
	lastErr  error
	lastAt   time.Time
	retryAt  time.Time
	warnings []string
	base     map[int]chanTotals      // counts of ended runs in this Run
	shardsOn map[int]map[string]bool // shards seen per channel
	ts       map[uint64]uint32       // source time of records read, not yet applied
	keep     uint64                  // highest seqno the database is known to hold
	rowsMin  uint64                  // lowest restart row read by the last prepare
	retries  map[uint64]*retryState  // stopped records, by seqno
	rate     []rateSample
}

type chanTotals struct{ txs, blocks uint64 }

type retryState struct {
	n    int
	next time.Time
}

type rateSample struct {
	at      time.Time
	applied uint64
}

// maxShardsShown bounds the shard names kept per channel for Status.
const maxShardsShown = 32

// NewSupervisor checks cfg and makes the first applier.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	if cfg.DB == nil || cfg.Source == nil {
		return nil, errors.New("apply: supervisor: DB and Source are required")
	}
	log := cfg.Applier.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Supervisor{cfg: cfg, db: cfg.DB, src: cfg.Source, host: cfg.Host, log: log,
		switchc: make(chan *channelsReq), changed: make(chan struct{})}
	if base := cfg.Applier.Registerer; base != nil {
		s.reg = &swapRegisterer{Registerer: base}
		s.cfg.Applier.Registerer = s.reg
	}
	ap, err := New(s.configFor(cfg.Applier.Channels, true))
	if err != nil {
		return nil, err
	}
	s.ap, s.count, s.schema = ap, ap.cfg.Channels, ap.cfg.Schema
	ap.observe = s.saw
	if base := cfg.Applier.Registerer; base != nil {
		if err := base.Register(newLagCollector(s.Status)); err != nil {
			log.Warn("per-channel lag metrics not registered", "err", err)
		}
	}
	return s, nil
}

// configFor is the applier configuration with n channels; registered
// says whether its metrics go to the registry.
func (s *Supervisor) configFor(n int, registered bool) Config {
	c := s.cfg.Applier
	c.Channels = n
	c.Logger = s.log
	if !registered {
		c.Registerer = nil
	}
	return c
}

// Channels returns the channel count runs use.
func (s *Supervisor) Channels() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// applier returns the current applier.
func (s *Supervisor) applier() *Applier {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ap
}

func (s *Supervisor) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// runCtl is one supervised Run: its commit index, raised for as long as an
// ApplyThrough call lasts, and a way to make the applier's current run
// start over (it then reads the commit index again).
type runCtl struct {
	ci   CommitSource
	done chan struct{} // closed when the Run has ended
	kick chan struct{} // restart the current applier run

	mu     sync.Mutex
	lifted uint64        // apply up to here even beyond ci (0: not lifted)
	liftc  chan struct{} // closed when lifted rises
}

func newRunCtl(ci CommitSource) *runCtl {
	return &runCtl{ci: ci, done: make(chan struct{}), kick: make(chan struct{}, 1), liftc: make(chan struct{})}
}

// Get implements CommitSource: the commit index, or the lift above it.
func (r *runCtl) Get() uint64 {
	r.mu.Lock()
	l := r.lifted
	r.mu.Unlock()
	return max(r.ci.Get(), l)
}

// WaitFor implements CommitIndex over the commit index and the lift.
func (r *runCtl) WaitFor(ctx context.Context, seqno uint64) (uint64, error) {
	for {
		r.mu.Lock()
		l, lc := r.lifted, r.liftc
		r.mu.Unlock()
		if v := max(r.ci.Get(), l); v >= seqno {
			return v, nil
		}
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lc:
				cancel()
			case <-wctx.Done():
			}
		}()
		v, err := r.ci.WaitFor(wctx, seqno)
		cancel()
		if err == nil {
			return max(v, l), nil
		}
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
		// The lift rose: look again.
	}
}

// lift lets the run apply up to seqno, beyond the commit index.
func (r *runCtl) lift(seqno uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if seqno > r.lifted {
		r.lifted = seqno
		close(r.liftc)
		r.liftc = make(chan struct{})
	}
}

// unlift ends the lift to seqno (a later, higher lift stays).
func (r *runCtl) unlift(seqno uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lifted == seqno {
		r.lifted = 0
	}
}

// restart asks the applier's current run to start over.
func (r *runCtl) restart() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// errRestart ends an applier run that restart stopped.
var errRestart = errors.New("apply: run restarted")

// Run supervises the applier until ctx ends: it applies records up to ci,
// runs the applier again after every error (after a back-off, see
// retryAfter; every run resumes from the restart rows), retries records a
// channel stopped on (never skips them), and carries out SetChannels. A
// start refused with ErrDrainFirst is not retried: the applier stays
// stopped until SetChannels drains and switches. If another Run is under
// way, Run first waits for it to end.
func (s *Supervisor) Run(ctx context.Context, ci CommitSource) {
	rc := newRunCtl(ci)
	for {
		s.mu.Lock()
		prev := s.cur
		if prev == nil {
			s.cur = rc
			s.mu.Unlock()
			break
		}
		s.mu.Unlock()
		select {
		case <-prev.done:
		case <-ctx.Done():
			return
		}
	}
	s.supervise(ctx, rc)
}

// supervise is Run once rc is the Run under way; it ends it.
func (s *Supervisor) supervise(ctx context.Context, rc *runCtl) {
	s.mu.Lock()
	s.runs, s.lastErr, s.lastAt, s.retryAt, s.stuck = 0, nil, time.Time{}, time.Time{}, nil
	s.base, s.shardsOn, s.ts, s.retries, s.rate = map[int]chanTotals{}, map[int]map[string]bool{}, map[uint64]uint32{}, map[uint64]*retryState{}, nil
	s.notifyLocked()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cur, s.stuck = nil, nil
		s.notifyLocked()
		s.mu.Unlock()
		close(rc.done)
	}()
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.watch(wctx) }()
	defer func() { wcancel(); wg.Wait() }()

	seeded := false
	backoff := minBackoff
	// confirm is a channel count change whose answer waits for the next
	// run to start.
	var confirm *channelsReq
	defer func() { confirm.answer(errors.New("apply: the supervised run stopped")) }()
	for {
		s.setStuck(nil)
		start := time.Now()
		err := s.prepare(ctx, &seeded)
		var req *channelsReq
		if err == nil {
			s.mu.Lock()
			s.runs++
			ap := s.ap
			s.notifyLocked()
			s.mu.Unlock()
			req, err = s.runOnce(ctx, ap, rc, &confirm)
			s.ended(ap)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRestart) {
			backoff = minBackoff
			continue
		}
		if req == nil {
			confirm = confirm.answer(err)
			wait, next, refused := retryAfter(err, time.Since(start), backoff)
			if refused {
				// Retrying cannot help: the rows stay uneven until a
				// drain with their channel count, which SetChannels does.
				s.refused(ctx, err)
				select {
				case <-ctx.Done():
					return
				case req = <-s.switchc:
				}
			} else {
				s.failed(err, time.Now().Add(wait))
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				case req = <-s.switchc:
					t.Stop()
				}
				backoff = next
			}
		}
		if req != nil {
			confirm = s.changeChannels(ctx, req, rc)
			backoff = minBackoff
		}
	}
}

// Back-off between applier runs.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
	// longRun: a run that lasted longer resets the back-off.
	longRun = 30 * time.Second
)

// retryAfter decides what follows an applier run that ended with err after
// ran, the back-off being backoff: wait that long before the next run, or
// stay stopped (refused: retrying cannot help), and the back-off after
// that. A long run, or a guard (a leftover session was committing: resume
// at once), resets the back-off; it doubles up to maxBackoff otherwise.
func retryAfter(err error, ran, backoff time.Duration) (wait, next time.Duration, refused bool) {
	if errors.Is(err, ErrDrainFirst) {
		return 0, minBackoff, true
	}
	wait = backoff
	if ran > longRun || errors.Is(err, ErrGuard) {
		wait = minBackoff
	}
	return wait, min(wait*2, maxBackoff), false
}

// recordRetryDelay is how long the supervisor waits before its n+1-th
// retry of a record a channel stopped on: 2s doubling to a minute (the
// first retry comes a second after the stop).
func recordRetryDelay(n int) time.Duration {
	return min(time.Second<<min(n, 6), time.Minute)
}

// runOnce runs ap until the run ends (its error), a channel count change
// arrives (the request; the run is stopped and has ended first) or rc asks
// for a restart (errRestart). It answers *confirm once the run is under
// way.
func (s *Supervisor) runOnce(ctx context.Context, ap *Applier, rc *runCtl, confirm **channelsReq) (*channelsReq, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- ap.Run(rctx, s.src, rc) }()
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
		case req := <-s.switchc:
			cancel()
			<-errc // its sessions are closed; a leftover commit is the next start's business
			return req, nil
		case <-rc.kick:
			cancel()
			<-errc
			return nil, errRestart
		case <-tick:
			if ap.Status().Running {
				*confirm = (*confirm).answer(nil)
				tick = nil
			}
		}
	}
}

// ended adds the counts of ap's ended run to the totals.
func (s *Supervisor) ended(ap *Applier) {
	st := ap.Status()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range append(st.Channels, st.Serial) {
		t := s.base[c.Channel]
		t.txs += c.Transactions
		t.blocks += c.Blocks
		s.base[c.Channel] = t
	}
}

func (s *Supervisor) failed(err error, retry time.Time) {
	s.log.Error("applier stopped; it restarts from its restart rows", "err", err, "retry_in", time.Until(retry).Round(time.Millisecond))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr, s.lastAt, s.retryAt = err, time.Now(), retry
	if errors.Is(err, ErrRecordsMissing) {
		s.stuck = err
	}
	s.notifyLocked()
}

func (s *Supervisor) setStuck(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stuck != err {
		s.stuck = err
		s.notifyLocked()
	}
}

// refused shows an applier start refused with ErrDrainFirst, with the
// command that drains the rows and switches, and leaves the applier
// stopped.
func (s *Supervisor) refused(ctx context.Context, err error) {
	s.mu.Lock()
	n := s.count
	s.mu.Unlock()
	cmd := ""
	if s.cfg.DrainCommand != nil {
		cmd = s.cfg.DrainCommand(n)
	}
	how := "the channel count is changed to it with a drain (SetChannels)"
	if cmd != "" {
		how = fmt.Sprintf("you run `%s`", cmd)
	}
	hint := fmt.Errorf("%w; the applier stays stopped until %s (it drains every channel to one seqno with the rows' channel count, then switches to %d channels), or until the applier is configured with the rows' channel count again", err, how, n)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rows, rerr := ReadRestartRows(rctx, s.db, s.schema)
	cancel()
	if rerr == nil && len(rows) > 0 {
		if lerr := s.checkLayout(rows); lerr != nil {
			hint = fmt.Errorf("%w; the applier stays stopped: %v", err, lerr)
			cmd = ""
		}
	}
	s.log.Error("applier refused to start: the channel count changed while the restart rows are at different seqnos", "err", hint, "run", cmd)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr, s.lastAt, s.retryAt, s.stuck = hint, time.Now(), time.Time{}, hint
	s.notifyLocked()
}

// watch runs beside the applier once a second: it samples the apply rate,
// forgets source times of applied records, and retries records channels
// stopped on, with backoff (recordRetryDelay).
func (s *Supervisor) watch(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ap := s.applier()
		st := ap.Status()
		now := time.Now()
		var due []uint64
		s.mu.Lock()
		s.rate = append(s.rate, rateSample{now, st.Applied})
		if len(s.rate) > 11 {
			s.rate = s.rate[len(s.rate)-11:]
		}
		for seqno := range s.ts {
			if seqno <= st.Applied {
				delete(s.ts, seqno)
			}
		}
		stopped := map[uint64]bool{}
		for _, c := range append(st.Channels, st.Serial) {
			if e := c.Stopped; e != nil && st.Running {
				stopped[e.Seqno] = true
				r := s.retries[e.Seqno]
				if r == nil {
					r = &retryState{next: now.Add(time.Second)}
					s.retries[e.Seqno] = r
				}
				if now.After(r.next) {
					r.n++
					r.next = now.Add(recordRetryDelay(r.n))
					due = append(due, e.Seqno)
				}
			}
		}
		for seqno := range s.retries {
			if !stopped[seqno] {
				delete(s.retries, seqno)
			}
		}
		s.mu.Unlock()
		for _, seqno := range due {
			if err := ap.Retry(seqno); err != nil {
				s.log.Debug("apply: retry", "seqno", seqno, "err", err)
			}
		}
	}
}

// saw notes what a record the applier read means for Status: its source
// time (lag in seconds) and the shard its channel applies.
func (s *Supervisor) saw(rec *txlog.Record, ch int, shard string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ts == nil {
		return // no Run under way (a run of createRows reads nothing)
	}
	s.ts[rec.Seqno] = rec.Timestamp
	if shard == "" {
		return
	}
	set := s.shardsOn[ch]
	if set == nil {
		set = map[string]bool{}
		s.shardsOn[ch] = set
	}
	if len(set) < maxShardsShown {
		set[shard] = true
	}
}

// KeepFrom returns the highest seqno the database is known to hold
// (restart rows, the applied seqno, RaiseKeep): a log must never be
// truncated below it. It fits ship.ReceiverConfig.KeepFrom.
func (s *Supervisor) KeepFrom() uint64 {
	st := s.applier().Status()
	hi := st.Applied
	for _, c := range append(st.Channels, st.Serial) {
		hi = max(hi, c.Seqno)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keep = max(s.keep, hi)
	return s.keep
}

// ReadFrom returns the lowest seqno a restarted applier reads from the
// log: the lowest channel restart row + 1. ok is false, and the caller must
// keep the whole log, while the channel count changes or before the
// applier has run.
func (s *Supervisor) ReadFrom() (seqno uint64, ok bool) {
	if s.changing.Load() {
		return 0, false
	}
	st := s.applier().Status()
	if len(st.Channels) == 0 {
		return 0, false
	}
	lo := st.Channels[0].Seqno
	for _, c := range st.Channels {
		lo = min(lo, c.Seqno)
	}
	return lo + 1, true
}

// RaiseKeep tells the Supervisor that the database holds records up to
// seqno (KeepFrom).
func (s *Supervisor) RaiseKeep(seqno uint64) {
	s.mu.Lock()
	s.keep = max(s.keep, seqno)
	s.mu.Unlock()
}

// WaitApplied waits until every record up to seqno is applied, following
// the applier across channel count changes.
func (s *Supervisor) WaitApplied(ctx context.Context, seqno uint64) error {
	for {
		s.mu.Lock()
		ap, changed := s.ap, s.changed
		s.mu.Unlock()
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
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

// ApplyThrough applies every record up to seqno, beyond the commit index if
// need be (a promotion applies its whole log, DESIGN.md §6), and returns
// once they are all applied. If a Run is under way it lets that Run apply
// up to seqno for as long as the call lasts (and, if the call fails, makes
// its applier start over, so nothing more beyond the commit index is
// applied). Otherwise it runs the applier itself, through the same
// preparation, seeding and restart rows as Run, with a FixedIndex of seqno,
// and stops it before it returns. It gives up early when runs are stuck on
// something retrying cannot fix (ErrDrainFirst, ErrRecordsMissing).
func (s *Supervisor) ApplyThrough(ctx context.Context, seqno uint64) error {
	if seqno == 0 {
		return nil
	}
	for {
		s.mu.Lock()
		rc, own := s.cur, false
		if rc == nil {
			rc, own = newRunCtl(FixedIndex(seqno)), true
			s.cur = rc
		}
		s.mu.Unlock()
		if own {
			s.log.Info("applying the log up to a seqno with a run of its own", "seqno", seqno)
			rctx, cancel := context.WithCancel(ctx)
			go s.supervise(rctx, rc)
			_, err := s.waitThrough(ctx, rc, seqno)
			cancel()
			<-rc.done
			if err == nil {
				s.log.Info("applied the log up to the seqno; run stopped", "seqno", seqno)
			}
			return err
		}
		rc.lift(seqno)
		ended, err := s.waitThrough(ctx, rc, seqno)
		if ended {
			continue // that Run ended first: run again, or lift the next one
		}
		rc.unlift(seqno)
		if err != nil && rc.ci.Get() < seqno {
			rc.restart()
		}
		return err
	}
}

// waitThrough waits until every record up to seqno is applied. ended: rc's
// Run ended first. err: ctx ended, or runs are stuck.
func (s *Supervisor) waitThrough(ctx context.Context, rc *runCtl, seqno uint64) (ended bool, err error) {
	for {
		s.mu.Lock()
		ap, changed, stuck := s.ap, s.changed, s.stuck
		s.mu.Unlock()
		select {
		case <-rc.done:
			return true, nil
		default:
		}
		if stuck != nil {
			return false, fmt.Errorf("apply: apply up to seqno %d: %w", seqno, stuck)
		}
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
			case <-rc.done:
			case <-wctx.Done():
			}
			cancel()
		}()
		err := ap.WaitApplied(wctx, seqno)
		cancel()
		if err == nil {
			return false, nil
		}
		if ctx.Err() != nil {
			s.mu.Lock()
			last := s.lastErr
			s.mu.Unlock()
			if last != nil {
				return false, fmt.Errorf("apply: applied up to %d of %d (last error: %v): %w", ap.Applied(), seqno, last, ctx.Err())
			}
			return false, fmt.Errorf("apply: applied up to %d of %d: %w", ap.Applied(), seqno, ctx.Err())
		}
	}
}
