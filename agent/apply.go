package agent

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/quire-ha/quire/apply"
	"github.com/quire-ha/quire/config"
	"github.com/quire-ha/quire/localdb"
	"github.com/quire-ha/quire/ship"
	"github.com/quire-ha/quire/txlog"
)

// The replica role applies the log with package apply (DESIGN.md §4): the
// receiver stores what the primary sends, and the applier replays records
// up to the commit index that travels on the stream, never beyond it.

// ReplicaMaxLag is the default of /replica's max_lag: the most committed
// transactions a replica may have left to apply and still answer 200.
const ReplicaMaxLag = 100

// ApplyStatus is the replica's applier as /status shows it.
type ApplyStatus struct {
	// Running: an applier run is under way (it may still have stopped
	// channels, see Errors).
	Running bool `json:"running"`
	// AppliedSeqno: every record up to it is applied to the database.
	AppliedSeqno uint64 `json:"applied_seqno"`
	// CommitSeqno is the commit index the stream carried: the applier never
	// applies beyond it.
	CommitSeqno uint64 `json:"commit_seqno"`
	// LagTransactions is CommitSeqno − AppliedSeqno.
	LagTransactions uint64 `json:"lag_transactions"`
	// LagSeconds is how long ago the oldest committed record not yet
	// applied committed on the source (whole seconds of source clock; the
	// nodes' clocks must agree). Absent when unknown.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
	// Rate is the apply rate over the last ten seconds, in transactions
	// per second.
	Rate float64 `json:"rate_tx_per_s"`
	// Queued counts records waiting in channel queues; Inflight records
	// dispatched and not yet committed.
	Queued   int `json:"queued"`
	Inflight int `json:"inflight"`
	// Transactions, Blocks and Serialized count, since the role started,
	// source transactions applied, database transactions committed by the
	// channels, and records applied serialized (alone).
	Transactions uint64 `json:"transactions"`
	Blocks       uint64 `json:"blocks"`
	Serialized   uint64 `json:"serialized"`
	// Runs counts applier starts since the role started; more than one
	// means it was restarted after an error.
	Runs int `json:"runs"`
	// Channels lists every channel, the serial one (channel -1) last.
	Channels []ApplyChannel `json:"channels"`
	// Errors lists the records channels are stopped on. Nothing is skipped:
	// the agent retries them with backoff, an operator fixes the data or
	// skips the record.
	Errors []ApplyRecordError `json:"errors,omitempty"`
	// LastError is what ended the last applier run (or kept it from
	// starting), RetryAt when the agent tries again.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	RetryAt     time.Time `json:"retry_at,omitzero"`
	// Warnings name settings that work but are not recommended.
	Warnings []string `json:"warnings,omitempty"`
}

// ApplyChannel is one applier channel.
type ApplyChannel struct {
	// Channel is the channel number, -1 for the serial channel.
	Channel int `json:"channel"`
	// Shards the channel applied records of since the agent started.
	Shards []string `json:"shards,omitempty"`
	// Seqno and GTID are the channel's restart row.
	Seqno uint64 `json:"seqno"`
	GTID  string `json:"gtid,omitempty"`
	// LagTransactions counts committed seqnos the channel may still have
	// to apply: the commit index minus max(Seqno, the applied seqno) —
	// below the applied seqno every channel is done.
	LagTransactions uint64   `json:"lag_transactions"`
	LagSeconds      *float64 `json:"lag_seconds,omitempty"`
	Queued          int      `json:"queued"`
	// Transactions and Blocks are counted since the role started;
	// AvgBlock is their ratio (transactions per database commit).
	Transactions uint64  `json:"transactions"`
	Blocks       uint64  `json:"blocks"`
	AvgBlock     float64 `json:"avg_block"`
	// Stopped is set while the channel is stopped on a record.
	Stopped *ApplyRecordError `json:"stopped,omitempty"`
}

// ApplyRecordError is a record a channel could not apply.
type ApplyRecordError struct {
	Channel int      `json:"channel"`
	Seqno   uint64   `json:"seqno"`
	GTID    string   `json:"gtid"`
	Schemas []string `json:"schemas"`
	// Error is the SQL error.
	Error string `json:"error"`
	// Retries counts the agent's retries of the record so far.
	Retries int `json:"retries"`
}

// applyConfig maps the agent's apply: section to apply.Config. The keys are
// docs/configuration.md's; block_time caps how long a channel gathers a
// block, including its wait for a partial-block slot; 0 keeps the
// applier's own cap on gathering and turns the partial-block limit off
// (every channel commits what it has at once).
func applyConfig(cfg *config.Agent, log *slog.Logger) apply.Config {
	mc := mysql.NewConfig()
	mc.User = cfg.MySQL.User
	mc.Passwd = cfg.MySQL.Password.Reveal()
	if cfg.MySQL.Socket != "" {
		mc.Net, mc.Addr = "unix", cfg.MySQL.Socket
	} else {
		mc.Net, mc.Addr = "tcp", net.JoinHostPort(cfg.MySQL.Host, strconv.Itoa(cfg.MySQL.Port))
	}
	mc.Timeout = 5 * time.Second
	ac := cfg.Apply
	out := apply.Config{
		DSN:           mc.FormatDSN(),
		Channels:      ac.Channels,
		CommitOrder:   apply.CommitOrder(ac.CommitOrder),
		BlockSize:     ac.BlockSize,
		BlockBytes:    int(min(int64(ac.BlockBytes), 1<<30)),
		BlockTime:     ac.BlockTime,
		PartialBlocks: ac.PartialBlocks,
		Window:        uint64(max(ac.MaxDivergenceSeqnos, 1)),
		WindowTime:    ac.MaxDivergence,
		Logger:        log,
	}
	if ac.BlockTime == 0 {
		out.PartialBlocks = 256
	}
	if len(ac.ShardMap) > 0 || len(ac.CriticalShards) > 0 {
		out.Shards = apply.ShardConfig{Schemas: ac.ShardMap, Critical: ac.CriticalShards}
	}
	return out
}

// replicaApply runs the applier of the replica role. One exists per agent
// (the applier's metrics are registered once); each replica role runs it.
type replicaApply struct {
	a      *Agent
	floor  atomic.Uint64 // apply up to here even beyond the commit index (promotion)
	newErr error         // why apply.New refused the configuration
	schema string
	log    *slog.Logger
	cfg    apply.Config    // the applier's configuration, Channels aside (channels.go)
	reg    *swapRegisterer // the applier's metrics, replaced with the applier
	// switchc carries channel count changes to the running role's loop.
	switchc  chan *channelsReq
	changing atomic.Bool // a SetChannels call is under way

	mu sync.Mutex
	// ap is nil when the configuration was refused; a channel count change
	// replaces it (with shards, count and swapped) between runs.
	ap        *apply.Applier
	shards    *apply.ShardMap
	count     int           // ap's channels
	swapped   chan struct{} // closed when ap is replaced
	countNote string        // a channel count set over apply.channels (status warning)
	runDone   chan struct{} // closed when the running role's loop ends; nil when none runs

	recv     *ship.Receiver // of the running role; nil when none runs
	runs     int
	lastErr  error
	lastAt   time.Time
	retryAt  time.Time
	warnings []string
	base     map[int]chanTotals      // counts of ended runs in this role
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

// maxShardsShown bounds the shard names kept per channel for status.
const maxShardsShown = 32

// replicaApplier returns the agent's applier, creating it on first use.
func (a *Agent) replicaApplier() *replicaApply {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rep != nil {
		return a.rep
	}
	log := a.log.With("component", "apply")
	cfg := applyConfig(a.cfg, log)
	ra := &replicaApply{a: a, log: log, schema: "quire", reg: &swapRegisterer{Registerer: a.reg},
		switchc: make(chan *channelsReq), swapped: make(chan struct{})}
	cfg.Registerer = ra.reg
	cfg.Channels, ra.countNote, ra.newErr = a.startChannels(log)
	ra.cfg, ra.count = cfg, cfg.Channels
	if ra.newErr == nil {
		ra.ap, ra.newErr = apply.New(cfg)
	}
	if ra.newErr == nil {
		ra.shards, ra.newErr = apply.NewShardMap(cfg.Shards, cfg.Channels)
	}
	if ra.newErr != nil {
		ra.ap = nil
		log.Error("the applier's configuration is refused; this replica stores the log but applies nothing", "err", ra.newErr)
	}
	if err := a.reg.Register(newApplyCollector(ra.status)); err != nil {
		log.Warn("per-channel lag metrics not registered", "err", err)
	}
	a.rep = ra
	return ra
}

// commitIndex adapts the receiver's commit index to apply.CommitIndex.
// floor, when set, lets the applier apply beyond the stream's commit index
// up to it: a replica being promoted applies its whole log (DESIGN.md §6,
// Promotion), uncommitted records of the old term included.
type commitIndex struct {
	r     *ship.Receiver
	floor *atomic.Uint64
}

// WaitFor implements apply.CommitIndex.
func (c commitIndex) WaitFor(ctx context.Context, seqno uint64) (uint64, error) {
	t := time.NewTicker(50 * time.Millisecond) // the floor has no change channel
	defer t.Stop()
	for {
		ch := c.r.Changed() // before reading, so no change slips between
		v := max(c.r.CommitIndex(), c.floor.Load())
		if v >= seqno {
			return v, nil
		}
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}

// applyWholeLog makes the replica's applier apply every record up to last
// and waits for it (promotion).
func (a *Agent) applyWholeLog(ctx context.Context, last uint64) error {
	a.mu.Lock()
	role, ra := a.role, a.rep
	a.mu.Unlock()
	if role.Kind != RoleReplica || ra == nil {
		return nil
	}
	ra.floor.Store(last)
	return a.waitApplied(ctx, last)
}

// trackingReader notes what each record means for status: its source time
// (lag in seconds) and its channel's shard.
type trackingReader struct {
	r  *txlog.Reader
	ra *replicaApply
}

func (t trackingReader) Next(ctx context.Context) (txlog.Record, error) {
	rec, err := t.r.Next(ctx)
	if err == nil {
		t.ra.saw(&rec)
	}
	return rec, err
}

func (ra *replicaApply) saw(rec *txlog.Record) {
	ch, shard := apply.SerialChannel, ""
	if len(rec.Schemas) == 1 && rec.Flags&(txlog.FlagDDL|txlog.FlagMultiSchema|txlog.FlagUnknownSchema) == 0 {
		shard = ra.shards.Shard(rec.Schemas[0])
		if !ra.shards.Critical(shard) {
			ch = ra.shards.Channel(shard)
		}
	}
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.ts[rec.Seqno] = rec.Timestamp
	if shard == "" {
		return
	}
	set := ra.shardsOn[ch]
	if set == nil {
		set = map[string]bool{}
		ra.shardsOn[ch] = set
	}
	if len(set) < maxShardsShown {
		set[shard] = true
	}
}

// keepFrom is the receiver's KeepFrom: the log must never be truncated
// below what the database holds.
func (ra *replicaApply) keepFrom() uint64 {
	hi := uint64(0)
	if ap := ra.applier(); ap != nil {
		st := ap.Status()
		hi = st.Applied
		for _, c := range append(st.Channels, st.Serial) {
			hi = max(hi, c.Seqno)
		}
	}
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.keep = max(ra.keep, hi)
	return ra.keep
}

func (ra *replicaApply) raiseKeep(s uint64) {
	ra.mu.Lock()
	ra.keep = max(ra.keep, s)
	ra.mu.Unlock()
}

// run applies the log while the replica role runs: up to recv's commit
// index, restarting the applier with backoff after errors. Records a
// channel cannot apply stay in Status and are retried with backoff; none
// is skipped.
func (ra *replicaApply) run(ctx context.Context, recv *ship.Receiver) {
	runDone := make(chan struct{})
	ra.mu.Lock()
	ra.recv, ra.runs, ra.lastErr, ra.lastAt, ra.retryAt = recv, 0, nil, time.Time{}, time.Time{}
	ra.base, ra.shardsOn, ra.ts, ra.retries, ra.rate = map[int]chanTotals{}, map[int]map[string]bool{}, map[uint64]uint32{}, map[uint64]*retryState{}, nil
	ra.runDone = runDone
	ra.mu.Unlock()
	defer func() {
		ra.mu.Lock()
		ra.recv, ra.runDone = nil, nil
		ra.mu.Unlock()
		close(runDone)
	}()
	if ra.applier() == nil {
		ra.failed(fmt.Errorf("agent: apply configuration: %w", ra.newErr), time.Time{})
		<-ctx.Done()
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ra.watch(ctx) }()
	defer wg.Wait()

	src := apply.SourceFunc(func(from uint64) (apply.Reader, error) {
		r, err := ra.a.txl.NewReader(from)
		if err != nil {
			return nil, err
		}
		return trackingReader{r: r, ra: ra}, nil
	})
	ci := commitIndex{r: recv, floor: &ra.floor}
	seeded := false
	backoff := 100 * time.Millisecond
	// confirm is a channel count change whose answer waits for the next
	// run to start (channels.go).
	var confirm *channelsReq
	defer func() { confirm.answer(errors.New("the replica role stopped")) }()
	for {
		start := time.Now()
		err := ra.prepare(ctx, &seeded)
		var req *channelsReq
		if err == nil {
			ra.mu.Lock()
			ra.runs++
			ap := ra.ap
			ra.mu.Unlock()
			req, err = ra.runOnce(ctx, ap, src, ci, &confirm)
			ra.ended(ap)
		}
		if ctx.Err() != nil {
			return
		}
		if req == nil {
			confirm = confirm.answer(err)
			if time.Since(start) > 30*time.Second {
				backoff = 100 * time.Millisecond
			}
			if errors.Is(err, apply.ErrGuard) {
				backoff = 100 * time.Millisecond // a leftover session was committing: resume at once
			}
			if errors.Is(err, apply.ErrDrainFirst) {
				// Retrying cannot help: the rows stay uneven until a drain
				// with their channel count, which SetChannels does.
				ra.refused(ctx, err)
				select {
				case <-ctx.Done():
					return
				case req = <-ra.switchc:
				}
			} else {
				ra.failed(err, time.Now().Add(backoff))
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				case req = <-ra.switchc:
				}
				backoff = min(backoff*2, 10*time.Second)
			}
		}
		if req != nil {
			confirm = ra.changeChannels(ctx, req, recv)
			backoff = 100 * time.Millisecond
		}
	}
}

// ended adds the counts of ap's ended run to the role's totals.
func (ra *replicaApply) ended(ap *apply.Applier) {
	st := ap.Status()
	ra.mu.Lock()
	defer ra.mu.Unlock()
	for _, c := range append(st.Channels, st.Serial) {
		t := ra.base[c.Channel]
		t.txs += c.Transactions
		t.blocks += c.Blocks
		ra.base[c.Channel] = t
	}
}

func (ra *replicaApply) failed(err error, retry time.Time) {
	ra.log.Error("applier stopped; it restarts from its restart rows", "err", err, "retry_in", time.Until(retry).Round(time.Millisecond))
	ra.mu.Lock()
	ra.lastErr, ra.lastAt, ra.retryAt = err, time.Now(), retry
	ra.mu.Unlock()
}

// prepare readies the database for a run: read-only for clients, no
// semi-sync waits, the restart rows of a former primary raised to what its
// database already holds.
func (ra *replicaApply) prepare(ctx context.Context, seeded *bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := ra.a.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("agent: apply: connect to the local database: %w", err)
	}
	defer conn.Close()
	var ro bool
	if err := conn.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&ro); err != nil {
		return fmt.Errorf("agent: apply: read read_only: %w", err)
	}
	if !ro {
		ra.log.Warn("replica database was writable: SET GLOBAL read_only = ON")
		if _, err := conn.ExecContext(ctx, "SET GLOBAL read_only = ON"); err != nil {
			return fmt.Errorf("agent: apply: SET GLOBAL read_only = ON: %w", err)
		}
	}
	// A replica's commits must never wait for a semi-sync ACK: no one
	// sends one to a replica, and with wait_no_slave every commit of the
	// applier would hang. Switching it off fences first (localdb).
	if _, err := localdb.StopSemiSyncWaits(ctx, ra.a.db, ra.log); err != nil {
		return fmt.Errorf("agent: apply: %w", err)
	}
	warnings, err := ra.checkSettings(ctx, conn)
	if err != nil {
		return err
	}
	rows, err := apply.ReadRestartRows(ctx, conn, ra.schema)
	if err != nil {
		return err
	}
	lo, hi := rowRange(rows)
	ra.mu.Lock()
	ra.warnings = warnings
	ra.rowsMin = max(ra.rowsMin, lo)
	ra.keep = max(ra.keep, hi)
	ra.mu.Unlock()
	if !*seeded {
		if err := ra.seed(ctx, conn); err != nil {
			return err
		}
		*seeded = true
	}
	return nil
}

// checkSettings returns warnings about settings the applier works with but
// that are not recommended.
func (ra *replicaApply) checkSettings(ctx context.Context, conn *sql.Conn) ([]string, error) {
	rows, err := conn.QueryContext(ctx, "SHOW MASTER STATUS")
	if err != nil {
		return nil, fmt.Errorf("agent: apply: SHOW MASTER STATUS: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("agent: apply: SHOW MASTER STATUS: %w", err)
	}
	ignore := ""
	if rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("agent: apply: SHOW MASTER STATUS: %w", err)
		}
		for i, c := range cols {
			if strings.EqualFold(c, "Binlog_Ignore_DB") {
				ignore = vals[i].String
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("agent: apply: SHOW MASTER STATUS: %w", err)
	}
	var out []string
	if !slices.Contains(strings.Split(ignore, ","), ra.schema) {
		out = append(out, fmt.Sprintf("binlog_ignore_db does not name %q: the restart-row updates of the %s schema go to this replica's binlog (set binlog_ignore_db=%s in my.cnf)", ra.schema, ra.schema, ra.schema))
	}
	return out, nil
}

// seed raises the restart rows of a former primary to the last record of
// its own last term: its database holds those records (they came from its
// binlog), and applying them again would apply them twice. It refuses when
// the database lacks records from before that term.
func (ra *replicaApply) seed(ctx context.Context, conn *sql.Conn) error {
	term, err := ra.a.loadExtractStart()
	if err != nil || term == nil {
		return err
	}
	held, err := lastOfEpoch(ra.a.txl, term.Epoch, term.FirstSeqno)
	if err != nil || held == nil {
		return err
	}
	rows, err := apply.ReadRestartRows(ctx, conn, ra.schema)
	if err != nil {
		return err
	}
	lo, _ := rowRange(rows)
	if len(rows) > 0 && lo >= held.Seqno {
		return nil
	}
	if lo+1 < term.FirstSeqno {
		return fmt.Errorf("agent: apply: this node was primary of epoch %d from seqno %d to %d, but its restart rows say its database applied only up to %d before: "+
			"records %d..%d are missing under its own writes (it was promoted without applying its whole log); re-provision this database",
			term.Epoch, term.FirstSeqno, held.Seqno, lo, lo+1, term.FirstSeqno-1)
	}
	if len(rows) == 0 {
		if err := ra.createRows(ctx); err != nil {
			return err
		}
	}
	ts := "NULL"
	if held.Timestamp > 0 {
		ts = fmt.Sprintf("FROM_UNIXTIME(%d)", held.Timestamp)
	}
	stmt := fmt.Sprintf("UPDATE `%s`.`apply_channel` SET epoch=?, seqno=?, source_gtid=?, source_file=?, source_pos=?, shard='', source_ts=%s, applied_at=SYSDATE(6) WHERE seqno<?", ra.schema, ts)
	if _, err := conn.ExecContext(ctx, "SET SESSION sql_log_bin=0"); err != nil {
		return fmt.Errorf("agent: apply: seed restart rows: %w", err)
	}
	res, err := conn.ExecContext(ctx, stmt, held.Epoch, held.Seqno, held.GTID, held.SourceFile, held.SourcePos, held.Seqno)
	conn.ExecContext(ctx, "SET SESSION sql_log_bin=1")
	if err != nil {
		return fmt.Errorf("agent: apply: seed restart rows to seqno %d: %w", held.Seqno, err)
	}
	n, _ := res.RowsAffected()
	ra.log.Warn("restart rows raised to the end of this node's own primary term: its database holds those records",
		"epoch", term.Epoch, "first_seqno", term.FirstSeqno, "seqno", held.Seqno, "gtid", held.GTID, "rows", n)
	ra.raiseKeep(held.Seqno)
	return nil
}

// rowRange returns the lowest and highest seqno of rows (0, 0 for none).
func rowRange(rows []apply.RestartRow) (lo, hi uint64) {
	for i, r := range rows {
		if i == 0 || r.Seqno < lo {
			lo = r.Seqno
		}
		hi = max(hi, r.Seqno)
	}
	return lo, hi
}

// createRows lets the applier create its table and rows (at seqno 0): a
// run with a commit index of 0 starts, writes them, and waits for records
// it may never apply; it is then stopped.
func (ra *replicaApply) createRows(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	ap := ra.applier()
	go func() {
		done <- ap.Run(ctx, apply.SourceFunc(func(from uint64) (apply.Reader, error) {
			return ra.a.txl.NewReader(from)
		}), &apply.Watermark{})
	}()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			cancel()
			return fmt.Errorf("agent: apply: create restart rows: %w", err)
		case <-t.C:
		}
		if ap.Status().Running {
			cancel()
			<-done
			return nil
		}
	}
}

// lastOfEpoch returns the last record of epoch in l, which starts at seqno
// first or later, or nil if l holds none. Epochs never decrease along the
// log, so the records of one epoch are one run of seqnos.
func lastOfEpoch(l *txlog.Log, epoch, first uint64) (*txlog.Record, error) {
	last, lastEpoch := l.Last()
	lo := max(first, l.FirstSeqno())
	if last < lo || lastEpoch < epoch {
		return nil, nil
	}
	epochAt := func(s uint64) (uint64, error) {
		rec, err := l.Read(s)
		if err != nil {
			return 0, fmt.Errorf("agent: apply: read record %d: %w", s, err)
		}
		return rec.Epoch, nil
	}
	e, err := epochAt(lo)
	if err != nil {
		return nil, err
	}
	if e != epoch {
		return nil, nil
	}
	hi := last
	if lastEpoch != epoch {
		// Find the last seqno in [lo, last] whose epoch is still epoch.
		var serr error
		n := sort.Search(int(last-lo+1), func(i int) bool {
			e, err := epochAt(lo + uint64(i))
			if err != nil && serr == nil {
				serr = err
			}
			return err != nil || e > epoch
		})
		if serr != nil {
			return nil, serr
		}
		hi = lo + uint64(n) - 1
	}
	rec, err := l.Read(hi)
	if err != nil {
		return nil, fmt.Errorf("agent: apply: read record %d: %w", hi, err)
	}
	return &rec, nil
}

// watch runs beside the applier once a second: it samples the apply rate,
// forgets source times of applied records, and retries records channels
// stopped on, with backoff (1s doubling to 1 min).
func (ra *replicaApply) watch(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ap := ra.applier()
		st := ap.Status()
		now := time.Now()
		var due []uint64
		ra.mu.Lock()
		ra.rate = append(ra.rate, rateSample{now, st.Applied})
		if len(ra.rate) > 11 {
			ra.rate = ra.rate[len(ra.rate)-11:]
		}
		for s := range ra.ts {
			if s <= st.Applied {
				delete(ra.ts, s)
			}
		}
		stopped := map[uint64]bool{}
		for _, c := range append(st.Channels, st.Serial) {
			if e := c.Stopped; e != nil && st.Running {
				stopped[e.Seqno] = true
				r := ra.retries[e.Seqno]
				if r == nil {
					r = &retryState{next: now.Add(time.Second)}
					ra.retries[e.Seqno] = r
				}
				if now.After(r.next) {
					r.n++
					r.next = now.Add(min(time.Second<<min(r.n, 6), time.Minute))
					due = append(due, e.Seqno)
				}
			}
		}
		for s := range ra.retries {
			if !stopped[s] {
				delete(ra.retries, s)
			}
		}
		ra.mu.Unlock()
		for _, s := range due {
			if err := ap.Retry(s); err != nil {
				ra.log.Debug("apply: retry", "seqno", s, "err", err)
			}
		}
	}
}

// waitApplied waits until the applier has applied seqno, if the agent is a
// replica (Drain).
func (a *Agent) waitApplied(ctx context.Context, seqno uint64) error {
	a.mu.Lock()
	role, ra := a.role, a.rep
	a.mu.Unlock()
	if role.Kind != RoleReplica || ra == nil {
		return nil
	}
	if ra.applier() == nil {
		return fmt.Errorf("the applier's configuration is refused: %w", ra.newErr)
	}
	return ra.waitApplied(ctx, seqno)
}

// status describes the applier of the running replica role, or nil.
func (ra *replicaApply) status() *ApplyStatus {
	ra.mu.Lock()
	recv, ap := ra.recv, ra.ap
	ra.mu.Unlock()
	if recv == nil {
		return nil
	}
	var st apply.Status
	if ap != nil {
		st = ap.Status()
	}
	commit := recv.CommitIndex()
	now := time.Now()
	ra.mu.Lock()
	defer ra.mu.Unlock()
	out := &ApplyStatus{
		Running: st.Running, AppliedSeqno: st.Applied, CommitSeqno: commit, Inflight: st.Inflight,
		Runs: ra.runs, Warnings: slices.Clone(ra.warnings),
	}
	if ra.countNote != "" {
		out.Warnings = append(out.Warnings, ra.countNote)
	}
	// Before the first run of this process, the restart rows read by
	// prepare are what is known.
	out.AppliedSeqno = max(out.AppliedSeqno, ra.rowsMin)
	if ra.lastErr != nil {
		out.LastError, out.LastErrorAt = ra.lastErr.Error(), ra.lastAt
		if !st.Running {
			out.RetryAt = ra.retryAt
		}
	}
	lagFrom := func(pos uint64) (uint64, *float64) {
		if commit <= pos {
			return 0, new(float64)
		}
		if ts, ok := ra.ts[pos+1]; ok && ts > 0 {
			s := max(0, now.Sub(time.Unix(int64(ts), 0)).Seconds())
			return commit - pos, &s
		}
		return commit - pos, nil
	}
	out.LagTransactions, out.LagSeconds = lagFrom(out.AppliedSeqno)
	if n := len(ra.rate); n > 1 {
		a, b := ra.rate[0], ra.rate[n-1]
		if d := b.at.Sub(a.at).Seconds(); d > 0 && b.applied >= a.applied {
			out.Rate = float64(b.applied-a.applied) / d
		}
	}
	chans := st.Channels
	if st.Running || len(chans) > 0 {
		chans = append(slices.Clone(chans), st.Serial)
	}
	for _, c := range chans {
		// Ended runs are in base; a running one adds its own counts.
		t := ra.base[c.Channel]
		if st.Running {
			t.txs += c.Transactions
			t.blocks += c.Blocks
		}
		ch := ApplyChannel{
			Channel: c.Channel, Seqno: c.Seqno, GTID: c.GTID, Queued: c.Queued,
			Transactions: t.txs, Blocks: t.blocks,
		}
		if ch.Blocks > 0 {
			ch.AvgBlock = float64(ch.Transactions) / float64(ch.Blocks)
		}
		for s := range ra.shardsOn[c.Channel] {
			ch.Shards = append(ch.Shards, s)
		}
		sort.Strings(ch.Shards)
		ch.LagTransactions, ch.LagSeconds = lagFrom(max(c.Seqno, out.AppliedSeqno))
		if e := c.Stopped; e != nil {
			re := &ApplyRecordError{Channel: e.Channel, Seqno: e.Seqno, GTID: e.GTID, Schemas: e.Schemas, Error: e.Err.Error()}
			if r := ra.retries[e.Seqno]; r != nil {
				re.Retries = r.n
			}
			ch.Stopped = re
			out.Errors = append(out.Errors, *re)
		}
		out.Queued += c.Queued
		out.Transactions += ch.Transactions
		if c.Channel == apply.SerialChannel {
			out.Serialized += ch.Transactions
		} else {
			out.Blocks += ch.Blocks
		}
		out.Channels = append(out.Channels, ch)
	}
	return out
}

// replicaHealthy says why the agent should not get read traffic as a
// replica (/replica), or nil: the applier must run without a stopped
// channel and have at most maxLag committed transactions left to apply.
func replicaHealthy(st Status, maxLag uint64) error {
	ap := st.Apply
	switch {
	case st.Role.Kind != RoleReplica || st.RoleError != "":
		return errors.New("not a replica")
	case ap == nil || !ap.Running:
		msg := "applier not running"
		if ap != nil && ap.LastError != "" {
			msg += ": " + ap.LastError
		}
		return errors.New(msg)
	case len(ap.Errors) > 0:
		e := ap.Errors[0]
		return fmt.Errorf("applier stopped on seqno %d (GTID %s): %s", e.Seqno, e.GTID, e.Error)
	case ap.LagTransactions > maxLag:
		return fmt.Errorf("applier lags %d transactions (more than %d)", ap.LagTransactions, maxLag)
	}
	return nil
}
