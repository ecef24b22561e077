package apply

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quire-ha/quire/txlog"
)

// CommitOrder says how the commits of different channels are ordered.
type CommitOrder string

const (
	// CommitShard lets channels commit independently (Tungsten's mode):
	// records of one shard commit in order, records of different shards in
	// any order. Needs gtid_strict_mode=OFF on the replica.
	CommitShard CommitOrder = "shard"
	// CommitGlobal makes every commit follow seqno order, so each replica's
	// binlog is a prefix of the same history. Slower: commits of different
	// channels cannot overlap.
	CommitGlobal CommitOrder = "global"
)

// Config configures an Applier. Zero fields take the defaults noted.
type Config struct {
	// DSN is the replica's go-sql-driver/mysql DSN. The applier opens its
	// own connections and turns multiStatements on.
	DSN string
	// Channels is the number of parallel channels (default 4, at most
	// MaxChannels).
	Channels int
	// Shards maps schemas to shards and shards to channels.
	Shards ShardConfig
	// CommitOrder is CommitShard (default) or CommitGlobal.
	CommitOrder CommitOrder
	// BlockSize is the most source transactions one channel commits in one
	// database transaction (default 10; 1 turns block commit off).
	BlockSize int
	// BlockBytes caps a block's raw event bytes (default 4 MiB).
	BlockBytes int
	// BlockTime caps how long a channel spends gathering one block
	// (default 1s), including the wait for a partial-block slot.
	BlockTime time.Duration
	// PartialBlocks is how many channels may apply a block that is not
	// full at the same time (default 1; a value of Channels or more turns
	// the limit off). A channel whose queue ran dry before its block was
	// full waits for a slot and keeps adding the records that arrive
	// meanwhile, up to BlockTime; a full block never waits. So a stream
	// that the replica keeps up with is applied in blocks of several
	// transactions, as by one channel, instead of one commit per
	// transaction on every channel, while a backlog still fills every
	// channel's blocks and runs them all in parallel.
	PartialBlocks int
	// Window bounds divergence: no record is dispatched more than Window
	// seqnos after the oldest uncommitted one (default 10000).
	Window uint64
	// WindowTime bounds divergence in source commit time (default 0: off).
	WindowTime time.Duration
	// Schema holds the restart-row table apply_channel (default "quire").
	Schema string
	// MaxPacket caps the size of one statement batch sent to the server
	// (default 16 MiB, and never above the server's max_allowed_packet).
	MaxPacket int
	// LockTimeout bounds waiting for another applier's or a leftover
	// session's lock at start (default 30s).
	LockTimeout time.Duration
	// MaxRetries is how often a transaction is retried after a deadlock or
	// lock wait timeout before its channel stops (default 10).
	MaxRetries int
	// Logger receives the applier's logs (default: discarded).
	Logger *slog.Logger
	// Registerer, if set, receives the applier's metrics.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Channels == 0 {
		c.Channels = 4
	}
	if c.CommitOrder == "" {
		c.CommitOrder = CommitShard
	}
	if c.BlockSize == 0 {
		c.BlockSize = 10
	}
	if c.BlockBytes == 0 {
		c.BlockBytes = 4 << 20
	}
	if c.BlockTime == 0 {
		c.BlockTime = time.Second
	}
	if c.PartialBlocks == 0 {
		c.PartialBlocks = 1
	}
	if c.Window == 0 {
		c.Window = 10000
	}
	if c.Schema == "" {
		c.Schema = "quire"
	}
	if c.MaxPacket == 0 {
		c.MaxPacket = 16 << 20
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = 30 * time.Second
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c *Config) validate() error {
	switch {
	case c.DSN == "":
		return errors.New("apply: config: dsn is empty")
	case c.Channels < 1 || c.Channels > MaxChannels:
		return fmt.Errorf("apply: config: channels is %d, want 1..%d", c.Channels, MaxChannels)
	case c.CommitOrder != CommitShard && c.CommitOrder != CommitGlobal:
		return fmt.Errorf("apply: config: commit order %q, want %q or %q", c.CommitOrder, CommitShard, CommitGlobal)
	case c.BlockSize < 1:
		return fmt.Errorf("apply: config: block size %d, want at least 1", c.BlockSize)
	case c.BlockBytes < 1:
		return fmt.Errorf("apply: config: block bytes %d, want at least 1", c.BlockBytes)
	case c.PartialBlocks < 1:
		return fmt.Errorf("apply: config: partial blocks %d, want at least 1", c.PartialBlocks)
	case c.BlockTime < 0 || c.WindowTime < 0 || c.LockTimeout < 0:
		return errors.New("apply: config: negative duration")
	case c.MaxPacket < 64<<10:
		return fmt.Errorf("apply: config: max packet %d, want at least 64 KiB", c.MaxPacket)
	case c.MaxRetries < 1:
		return fmt.Errorf("apply: config: max retries %d, want at least 1", c.MaxRetries)
	case c.Schema == "" || len(c.Schema) > 64 || strings.ContainsAny(c.Schema, "`\x00/\\."):
		return fmt.Errorf("apply: config: schema %q is not a plain schema name", c.Schema)
	}
	if _, err := mysql.ParseDSN(c.DSN); err != nil {
		return fmt.Errorf("apply: config: dsn: %w", err)
	}
	return nil
}

// Applier applies committed transaction-log records to the local replica
// with N parallel channels (DESIGN.md §4). Create it with New and call Run;
// Status, Applied, WaitApplied, Skip and Retry may be called concurrently.
type Applier struct {
	cfg    Config
	shards *ShardMap
	log    *slog.Logger
	m      *metrics
	hooks  hooks
	// observe, if set, sees every record the reader classified, with the
	// channel that applies it and its shard ("" when none): a Supervisor
	// keeps source times and shards per channel for its Status.
	observe func(rec *txlog.Record, channel int, shard string)

	mu      sync.Mutex
	rs      *runState // nil when not running
	changed chan struct{}
	last    Status // status of the last run, kept after it ended
}

// hooks let tests act at exact points of the apply path.
type hooks struct {
	// beforeCommit runs before a block's COMMIT, which is then sent on its
	// own.
	beforeCommit func(channel int, first, last uint64)
	// beforeExec runs before a channel's block is sent, slotted telling
	// whether the channel holds a partial-block slot.
	beforeExec func(channel int, first, last uint64, slotted bool)
	// afterStatements runs after a non-atomic serialized record's
	// statements and before its restart rows are written.
	afterStatements func(seqno uint64)
}

// New checks cfg and returns an Applier.
func New(cfg Config) (*Applier, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	shards, err := NewShardMap(cfg.Shards, cfg.Channels)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Applier{cfg: cfg, shards: shards, log: cfg.Logger, m: m, changed: make(chan struct{})}, nil
}

// runState is the state of one run.
type runState struct {
	sched     *Scheduler
	resume    uint64
	rows      []uint64 // restart rows at start, per channel
	chans     []*chanState
	serial    *chanState
	stops     map[uint64]*stopped
	strict    bool // gtid_strict_mode is on
	maxPacket int
	n         int
	drainRec  *txlog.Record // the record a drain stops at
	// partial holds a token per channel applying a partial block; nil
	// when PartialBlocks does not limit the run's channels.
	partial chan struct{}
	// slotWaiters counts channels waiting for a partial-block slot.
	slotWaiters atomic.Int32
}

type chanState struct {
	seqno   uint64
	gtid    string
	txs     uint64
	blocks  uint64
	queue   chan *job
	stopped *ApplyError
}

type opCmd int

const (
	opSkip opCmd = iota + 1
	opRetry
)

type stopped struct {
	err *ApplyError
	cmd chan opCmd
}

// job is a record on its way through the applier.
type job struct {
	rec       *txlog.Record
	shard     string
	serialize bool
	reason    string
	plan      *plan
	retried   bool // an operator asked to retry the record
}

func (rs *runState) chanOf(ch int) *chanState {
	if ch == SerialChannel {
		return rs.serial
	}
	return rs.chans[ch]
}

// notifyLocked wakes everyone waiting for a state change.
func (a *Applier) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// Run applies records from src, reading from the seqno after the lowest
// restart row and never beyond ci, until ctx is done or an error ends the
// run. It returns the error that ended it. After an error wrapping ErrGuard,
// a connection loss or a server restart, the caller runs it again: the
// restart rows say exactly where to resume.
func (a *Applier) Run(ctx context.Context, src Source, ci CommitIndex) error {
	return a.run(ctx, src, ci, 0)
}

// Drain applies records up to and including upTo, then brings every
// restart row to upTo and returns nil. After a drain the channel count or
// shard map may change.
func (a *Applier) Drain(ctx context.Context, src Source, ci CommitIndex, upTo uint64) error {
	if upTo == 0 {
		return errors.New("apply: drain: target seqno is 0")
	}
	return a.run(ctx, src, ci, upTo)
}

var errRunDone = errors.New("apply: run finished")

func (a *Applier) run(parent context.Context, src Source, ci CommitIndex, stopAt uint64) error {
	a.mu.Lock()
	if a.rs != nil {
		a.mu.Unlock()
		return errors.New("apply: already running")
	}
	a.rs = &runState{} // placeholder, replaced below
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.rs != nil && a.rs.sched != nil {
			a.last = a.statusLocked()
			a.last.Running = false
		}
		a.rs = nil
		a.notifyLocked()
		a.mu.Unlock()
	}()

	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(errRunDone)

	dsn, err := mysql.ParseDSN(a.cfg.DSN)
	if err != nil {
		return fmt.Errorf("apply: dsn: %w", err)
	}
	dsn.MultiStatements = true
	dsn.InterpolateParams = false
	connector, err := mysql.NewConnector(dsn)
	if err != nil {
		return fmt.Errorf("apply: dsn: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()

	// The control connection holds the applier's lock for the whole run.
	ctl, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("apply: connect: %w", err)
	}
	defer ctl.Close()
	rs, serial, workers, err := a.start(ctx, db, ctl, stopAt)
	if err != nil {
		return err
	}
	defer func() {
		for _, w := range append(workers, serial) {
			w.conn.Close()
		}
	}()

	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.loop(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	err = a.read(ctx, rs, serial, src, ci, stopAt)
	if err == nil && stopAt > 0 {
		err = a.finishDrain(ctx, rs, serial, stopAt)
	}
	if err == nil {
		cancel(errRunDone)
	} else {
		cancel(err)
	}
	wg.Wait()
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && cause != errRunDone {
		if parent.Err() != nil {
			return parent.Err()
		}
		return cause
	}
	return err
}

// start takes the locks, checks the server, reads the restart rows and opens
// the channel connections.
func (a *Applier) start(ctx context.Context, db *sql.DB, ctl *sql.Conn, stopAt uint64) (*runState, *worker, []*worker, error) {
	n := a.cfg.Channels
	if err := a.lock(ctx, ctl); err != nil {
		return nil, nil, nil, err
	}
	var strict, logBin bool
	var maxAllowed int64
	if err := ctl.QueryRowContext(ctx, "SELECT @@global.gtid_strict_mode, @@global.log_bin, @@global.max_allowed_packet").Scan(&strict, &logBin, &maxAllowed); err != nil {
		return nil, nil, nil, fmt.Errorf("apply: read server settings: %w", err)
	}
	if strict && a.cfg.CommitOrder == CommitShard {
		return nil, nil, nil, errors.New("apply: gtid_strict_mode is ON on the replica, but commit order \"shard\" commits GTIDs out of order, which MariaDB then refuses (error 1950); set gtid_strict_mode=OFF on the replicas or use commit order \"global\"")
	}
	if !logBin {
		return nil, nil, nil, errors.New("apply: the replica's binary log is off (log_bin); replicas must binlog what they apply so they can be promoted")
	}
	maxPacket := a.cfg.MaxPacket
	if lim := int(min(maxAllowed, math.MaxInt32)) - 16<<10; lim < maxPacket {
		maxPacket = lim
	}
	if maxPacket < 64<<10 {
		return nil, nil, nil, fmt.Errorf("apply: the replica's max_allowed_packet (%d) is too small", maxAllowed)
	}
	if err := a.execNoLog(ctx, ctl, createSQL(a.cfg.Schema)...); err != nil {
		return nil, nil, nil, fmt.Errorf("apply: create restart-row table: %w", err)
	}
	rows, err := ReadRestartRows(ctx, ctl, a.cfg.Schema)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := a.endLeftovers(ctx, ctl, max(n, len(rows))); err != nil {
		return nil, nil, nil, err
	}
	// Read again: a leftover session may have committed meanwhile.
	if rows, err = ReadRestartRows(ctx, ctl, a.cfg.Schema); err != nil {
		return nil, nil, nil, err
	}
	plan, err := planStart(rows, n, a.shards.Layout())
	if err != nil {
		return nil, nil, nil, err
	}
	if stopAt > 0 {
		for ch, s := range plan.seqnos {
			if s > stopAt {
				return nil, nil, nil, fmt.Errorf("apply: drain to seqno %d: channel %d has already applied up to %d", stopAt, ch, s)
			}
		}
	}
	if plan.reset {
		if len(rows) > 0 {
			a.log.Info("apply: restart rows re-created", "channels", n, "old_channels", len(rows), "seqno", plan.base.Seqno)
		}
		if err := a.execNoLog(ctx, ctl, resetSQL(a.cfg.Schema, n, a.shards.Layout(), plan.base)...); err != nil {
			return nil, nil, nil, fmt.Errorf("apply: write restart rows: %w", err)
		}
	}
	rs := &runState{
		sched:     NewScheduler(n, a.cfg.Window, a.cfg.WindowTime, plan.resume-1),
		resume:    plan.resume,
		rows:      plan.seqnos,
		stops:     map[uint64]*stopped{},
		strict:    strict,
		maxPacket: maxPacket,
		n:         n,
		serial:    &chanState{},
	}
	if a.cfg.PartialBlocks < n {
		rs.partial = make(chan struct{}, a.cfg.PartialBlocks)
	}
	var workers []*worker
	closeAll := func() {
		for _, w := range workers {
			w.conn.Close()
		}
	}
	for ch := range n {
		cs := &chanState{seqno: plan.seqnos[ch], queue: make(chan *job, min(a.cfg.Window, 1<<16)+1)}
		rs.chans = append(rs.chans, cs)
		w, err := a.newWorker(ctx, db, rs, ch)
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		workers = append(workers, w)
		a.m.seqno.WithLabelValues(channelLabel(ch)).Set(float64(cs.seqno))
		a.m.stopped.WithLabelValues(channelLabel(ch)).Set(0)
	}
	serial, err := a.newWorker(ctx, db, rs, SerialChannel)
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	a.mu.Lock()
	a.rs = rs
	a.notifyLocked()
	a.mu.Unlock()
	a.log.Info("apply: started", "channels", n, "resume", plan.resume, "commit_order", string(a.cfg.CommitOrder), "block_size", a.cfg.BlockSize, "partial_blocks", min(a.cfg.PartialBlocks, n))
	return rs, serial, workers, nil
}

// lockName names the lock a channel's session holds while it lives.
func (a *Applier) lockName(ch int) string {
	if ch == SerialChannel {
		return a.cfg.Schema + ".apply.serial"
	}
	return fmt.Sprintf("%s.apply.%d", a.cfg.Schema, ch)
}

// lock takes the applier's named lock: one applier per server.
func (a *Applier) lock(ctx context.Context, ctl *sql.Conn) error {
	name := a.cfg.Schema + ".apply"
	var got sql.NullInt64
	if err := ctl.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, a.cfg.LockTimeout.Seconds()).Scan(&got); err != nil {
		return fmt.Errorf("apply: take lock %s: %w", name, err)
	}
	if got.Int64 != 1 {
		var holder sql.NullInt64
		_ = ctl.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", name).Scan(&holder)
		return fmt.Errorf("apply: another applier holds lock %s on this server (connection %d) after waiting %s", name, holder.Int64, a.cfg.LockTimeout)
	}
	return nil
}

// endLeftovers waits until no session of an earlier run is left: such a
// session (its client gone, say after a cancelled run) may still be
// committing. It kills them and waits for their locks.
func (a *Applier) endLeftovers(ctx context.Context, ctl *sql.Conn, n int) error {
	names := []string{a.lockName(SerialChannel)}
	for ch := range n {
		names = append(names, a.lockName(ch))
	}
	for _, name := range names {
		var holder sql.NullInt64
		if err := ctl.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", name).Scan(&holder); err != nil {
			return fmt.Errorf("apply: check lock %s: %w", name, err)
		}
		if !holder.Valid {
			continue
		}
		a.log.Warn("apply: killing a leftover applier session", "lock", name, "connection", holder.Int64)
		if _, err := ctl.ExecContext(ctx, fmt.Sprintf("KILL CONNECTION %d", holder.Int64)); err != nil && !isErrNo(err, 1094) {
			return fmt.Errorf("apply: kill leftover session %d: %w", holder.Int64, err)
		}
		var got sql.NullInt64
		if err := ctl.QueryRowContext(ctx, "SELECT GET_LOCK(?, ?)", name, a.cfg.LockTimeout.Seconds()).Scan(&got); err != nil {
			return fmt.Errorf("apply: wait for lock %s: %w", name, err)
		}
		if got.Int64 != 1 {
			return fmt.Errorf("apply: leftover session %d still holds lock %s after %s", holder.Int64, name, a.cfg.LockTimeout)
		}
		if _, err := ctl.ExecContext(ctx, "DO RELEASE_LOCK(?)", name); err != nil {
			return fmt.Errorf("apply: release lock %s: %w", name, err)
		}
	}
	return nil
}

// execNoLog runs statements outside the binlog: the applier's bookkeeping
// must never get a GTID of its own on the replica.
func (a *Applier) execNoLog(ctx context.Context, c *sql.Conn, stmts ...string) error {
	if _, err := c.ExecContext(ctx, "SET @@session.sql_log_bin=0"); err != nil {
		return err
	}
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			c.ExecContext(ctx, "ROLLBACK")
			c.ExecContext(ctx, "SET @@session.sql_log_bin=1")
			return err
		}
	}
	_, err := c.ExecContext(ctx, "SET @@session.sql_log_bin=1")
	return err
}

// parseGTIDPos parses @@gtid_binlog_pos: one GTID per domain.
func parseGTIDPos(s string) (map[uint32]gtid, error) {
	out := map[uint32]gtid{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		g, err := parseGTID(part)
		if err != nil {
			return nil, err
		}
		out[g.domain] = g
	}
	return out, nil
}

// read is the reader: it takes records in seqno order up to the commit
// index, classifies them and places them with the scheduler.
func (a *Applier) read(ctx context.Context, rs *runState, serial *worker, src Source, ci CommitIndex, stopAt uint64) error {
	if stopAt > 0 && stopAt < rs.resume {
		return nil
	}
	r, err := src.NewReader(rs.resume)
	if err != nil {
		return fmt.Errorf("apply: open the log at seqno %d: %w", rs.resume, err)
	}
	var commit uint64
	for next := rs.resume; stopAt == 0 || next <= stopAt; next++ {
		if next > commit {
			if commit, err = ci.WaitFor(ctx, next); err != nil {
				return ctxErr(ctx, fmt.Errorf("apply: wait for commit index %d: %w", next, err))
			}
		}
		rec, err := r.Next(ctx)
		if err != nil {
			return ctxErr(ctx, fmt.Errorf("apply: read seqno %d: %w", next, err))
		}
		if rec.Seqno != next {
			return fmt.Errorf("apply: the log returned seqno %d, want %d", rec.Seqno, next)
		}
		j := &job{rec: &rec}
		j.shard, j.serialize, j.reason = Classify(j.rec, a.shards)
		ch := SerialChannel
		if !j.serialize {
			ch = a.shards.Channel(j.shard)
		}
		if a.observe != nil {
			a.observe(j.rec, ch, j.shard)
		}
		done, err := rs.alreadyApplied(next, ch)
		if err != nil {
			return err
		}
		if done {
			a.mu.Lock()
			rs.sched.Skipped(next)
			a.notifyLocked()
			a.mu.Unlock()
			if stopAt > 0 && next == stopAt {
				rs.drainRec = j.rec
			}
			continue
		}
		if stopAt > 0 && next == stopAt {
			rs.drainRec = j.rec
		}
		if err := a.place(ctx, rs, serial, j, ch); err != nil {
			return err
		}
	}
	return nil
}

// alreadyApplied reports whether the record was applied before this run.
func (rs *runState) alreadyApplied(seqno uint64, ch int) (bool, error) {
	if ch != SerialChannel {
		return seqno <= rs.rows[ch], nil
	}
	behind := 0
	for _, s := range rs.rows {
		if s < seqno {
			behind++
		}
	}
	switch behind {
	case len(rs.rows):
		return false, nil
	case 0:
		return true, nil
	}
	return false, fmt.Errorf("apply: restart rows are inconsistent: serialized record %d is applied on some channels and not on others (%v)", seqno, rs.rows)
}

// place offers a record to the scheduler until it is dispatched or run.
func (a *Applier) place(ctx context.Context, rs *runState, serial *worker, j *job, ch int) error {
	it := Item{Seqno: j.rec.Seqno, Channel: ch, Serialize: j.serialize, Timestamp: j.rec.Timestamp}
	for {
		a.mu.Lock()
		d := rs.sched.Offer(it)
		wait := a.changed
		a.mu.Unlock()
		switch d.Step {
		case Dispatch:
			select {
			case rs.chans[ch].queue <- j:
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		case RunAlone:
			a.m.serialized.WithLabelValues(j.reason).Inc()
			return serial.applyOne(ctx, j, nil)
		default:
			a.m.waits.WithLabelValues(d.Step.String()).Inc()
			select {
			case <-wait:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
	}
}

// finishDrain waits for everything up to stopAt and brings every restart
// row to it.
func (a *Applier) finishDrain(ctx context.Context, rs *runState, serial *worker, stopAt uint64) error {
	if err := a.waitApplied(ctx, rs, stopAt); err != nil {
		return err
	}
	if rs.drainRec == nil {
		return nil // every row was at stopAt already
	}
	stmt := fmt.Sprintf("UPDATE %s SET %s WHERE seqno<%d", table(a.cfg.Schema), rowValues(rs.drainRec, ""), stopAt)
	if err := a.execNoLog(ctx, serial.conn, stmt); err != nil {
		return fmt.Errorf("apply: drain: advance restart rows to %d: %w", stopAt, err)
	}
	a.mu.Lock()
	for _, cs := range rs.chans {
		cs.seqno = stopAt
	}
	a.notifyLocked()
	a.mu.Unlock()
	a.log.Info("apply: drained", "seqno", stopAt)
	return nil
}

func (a *Applier) waitApplied(ctx context.Context, rs *runState, seqno uint64) error {
	for {
		a.mu.Lock()
		ok := rs.sched.Applied() >= seqno
		wait := a.changed
		a.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// ctxErr prefers the run's cancel cause over the error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// Applied returns the highest seqno up to which every record has been
// applied (committed on the replica), as of the current or last run.
func (a *Applier) Applied() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rs != nil && a.rs.sched != nil {
		return a.rs.sched.Applied()
	}
	return a.last.Applied
}

// WaitApplied blocks until every record up to seqno has been applied by a
// run, or ctx is done.
func (a *Applier) WaitApplied(ctx context.Context, seqno uint64) error {
	for {
		a.mu.Lock()
		ok := a.rs != nil && a.rs.sched != nil && a.rs.sched.Applied() >= seqno
		wait := a.changed
		a.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ChannelStatus describes one channel.
type ChannelStatus struct {
	// Channel is the channel number, or SerialChannel.
	Channel int
	// Seqno and GTID are the channel's restart row: the last record it
	// has applied (or skipped past at a serialization point).
	Seqno uint64
	GTID  string
	// Queued is the number of records waiting in the channel's queue.
	Queued int
	// Transactions and Blocks count what the channel committed in this run.
	Transactions, Blocks uint64
	// Stopped is set while the channel is stopped on an apply error.
	Stopped *ApplyError
}

// Status describes the applier.
type Status struct {
	Running bool
	// Resume is the seqno the current run started reading at.
	Resume uint64
	// Applied: every record up to it has been applied.
	Applied uint64
	// Inflight counts records dispatched and not yet committed.
	Inflight int
	Channels []ChannelStatus
	Serial   ChannelStatus
}

// Status returns the applier's state, or that of its last run.
func (a *Applier) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rs == nil || a.rs.sched == nil {
		return a.last
	}
	return a.statusLocked()
}

func (a *Applier) statusLocked() Status {
	rs := a.rs
	st := Status{Running: true, Resume: rs.resume, Applied: rs.sched.Applied(), Inflight: rs.sched.Inflight()}
	conv := func(ch int, cs *chanState) ChannelStatus {
		return ChannelStatus{Channel: ch, Seqno: cs.seqno, GTID: cs.gtid, Queued: len(cs.queue),
			Transactions: cs.txs, Blocks: cs.blocks, Stopped: cs.stopped}
	}
	for ch, cs := range rs.chans {
		st.Channels = append(st.Channels, conv(ch, cs))
	}
	st.Serial = conv(SerialChannel, rs.serial)
	return st
}

// Skip tells the channel stopped on seqno to skip that record: its restart
// row moves past it without applying it. It is an operator's decision and
// is logged; nothing is ever skipped otherwise.
func (a *Applier) Skip(seqno uint64) error { return a.operate(seqno, opSkip) }

// Retry tells the channel stopped on seqno to try the record again, say
// after an operator fixed the data.
func (a *Applier) Retry(seqno uint64) error { return a.operate(seqno, opRetry) }

func (a *Applier) operate(seqno uint64, cmd opCmd) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rs == nil || a.rs.stops == nil {
		return errors.New("apply: not running")
	}
	st, ok := a.rs.stops[seqno]
	if !ok {
		return fmt.Errorf("apply: no channel is stopped on seqno %d", seqno)
	}
	select {
	case st.cmd <- cmd:
	default:
		return fmt.Errorf("apply: an operator request for seqno %d is already pending", seqno)
	}
	what := "skip"
	if cmd == opRetry {
		what = "retry"
	}
	a.log.Warn("apply: operator request", "action", what, "seqno", seqno, "gtid", st.err.GTID,
		"schemas", strings.Join(st.err.Schemas, ","), "error", st.err.Err.Error())
	return nil
}
