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

// ApplyStatus is the replica's applier as /status shows it: the status of
// its apply.Supervisor.
type ApplyStatus = apply.SupervisorStatus

// ApplyChannel is one applier channel.
type ApplyChannel = apply.SupervisedChannel

// ApplyRecordError is a record a channel could not apply.
type ApplyRecordError = apply.StoppedRecord

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

// replicaApply is the agent's side of its applier, an apply.Supervisor: it
// makes the supervisor from the configuration, prepares the local database
// before every run and names what a former primary's database holds
// (apply.Host), keeps a changed channel count in the data directory
// (channels.go), and runs the supervisor in the replica role up to the
// stream's commit index. One exists per agent (the applier's metrics are
// registered once); each replica role runs it.
type replicaApply struct {
	a      *Agent
	log    *slog.Logger
	sup    *apply.Supervisor // nil when the configuration was refused
	newErr error             // why the configuration was refused
	schema string
	// startCount is the channel count the applier started with,
	// startNote the warning that goes with it (channels.go).
	startCount int
	startNote  string

	// Without a supervisor: what the replica role's status shows.
	mu    sync.Mutex
	keep  uint64         // highest seqno the database is known to hold
	recv  *ship.Receiver // of the running role; nil when none runs
	since time.Time
}

// replicaApplier returns the agent's applier, creating it on first use.
func (a *Agent) replicaApplier() *replicaApply {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rep != nil {
		return a.rep
	}
	log := a.log.With("component", "apply")
	ra := &replicaApply{a: a, log: log, schema: "quire"}
	cfg := applyConfig(a.cfg, log)
	cfg.Registerer = a.reg
	cfg.Channels, ra.startNote, ra.newErr = a.startChannels(log)
	ra.startCount = cfg.Channels
	if ra.newErr == nil {
		ra.sup, ra.newErr = apply.NewSupervisor(apply.SupervisorConfig{
			Applier: cfg, DB: a.db, Host: ra,
			Source: apply.SourceFunc(func(from uint64) (apply.Reader, error) {
				r, err := a.txl.NewReader(from)
				if err != nil {
					return nil, err
				}
				return r, nil
			}),
			DrainCommand: func(n int) string {
				return fmt.Sprintf("quire channels --agent %s --set-count %d", a.controlAddr(), n)
			},
		})
	}
	if ra.newErr != nil {
		ra.sup = nil
		log.Error("the applier's configuration is refused; this replica stores the log but applies nothing", "err", ra.newErr)
	}
	a.rep = ra
	return ra
}

// receiverIndex is the replica role's commit index: the one the stream
// carries, capped at what the replica holds (ship.Receiver).
type receiverIndex struct{ r *ship.Receiver }

// Get implements apply.CommitSource.
func (c receiverIndex) Get() uint64 { return c.r.CommitIndex() }

// WaitFor implements apply.CommitIndex.
func (c receiverIndex) WaitFor(ctx context.Context, seqno uint64) (uint64, error) {
	for {
		ch := c.r.Changed() // before reading, so no change slips between
		if v := c.r.CommitIndex(); v >= seqno {
			return v, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return c.r.CommitIndex(), ctx.Err()
		}
	}
}

// applyWholeLog applies every record of the local log up to last, the old
// term's uncommitted tail included, and waits for it (promotion, DESIGN.md
// §6): through the replica role's applier if it runs, or else (say, right
// after an agent restart, with no role) with a run of its own over the log
// with a commit index fixed at last, through the same preparation, seeding
// and restart rows, which it stops once everything is applied. A primary's
// database holds its log already.
func (a *Agent) applyWholeLog(ctx context.Context, last uint64) error {
	a.mu.Lock()
	role := a.role
	a.mu.Unlock()
	if role.Kind == RolePrimary || last == 0 {
		return nil
	}
	ra := a.replicaApplier()
	if ra.sup == nil {
		return fmt.Errorf("the applier's configuration is refused: %w", ra.newErr)
	}
	return ra.sup.ApplyThrough(ctx, last)
}

// keepFrom is the receiver's KeepFrom: the log must never be truncated
// below what the database holds.
func (ra *replicaApply) keepFrom() uint64 {
	if ra.sup != nil {
		return ra.sup.KeepFrom()
	}
	ra.mu.Lock()
	defer ra.mu.Unlock()
	return ra.keep
}

// raiseKeep says the database holds records up to s.
func (ra *replicaApply) raiseKeep(s uint64) {
	if ra.sup != nil {
		ra.sup.RaiseKeep(s)
		return
	}
	ra.mu.Lock()
	ra.keep = max(ra.keep, s)
	ra.mu.Unlock()
}

// run applies the log while the replica role runs: up to recv's commit
// index, restarting the applier with backoff after errors (apply.Supervisor).
func (ra *replicaApply) run(ctx context.Context, recv *ship.Receiver) {
	if ra.sup != nil {
		ra.sup.Run(ctx, receiverIndex{recv})
		return
	}
	ra.mu.Lock()
	ra.recv, ra.since = recv, time.Now()
	ra.mu.Unlock()
	<-ctx.Done()
	ra.mu.Lock()
	ra.recv = nil
	ra.mu.Unlock()
}

// Prepare implements apply.Host: before every run the database is made
// read-only for clients and its commits stop waiting for semi-sync ACKs;
// the warnings name settings that are not recommended.
func (ra *replicaApply) Prepare(ctx context.Context) ([]string, error) {
	conn, err := ra.a.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent: apply: connect to the local database: %w", err)
	}
	defer conn.Close()
	var ro bool
	if err := conn.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&ro); err != nil {
		return nil, fmt.Errorf("agent: apply: read read_only: %w", err)
	}
	if !ro {
		ra.log.Warn("replica database was writable: SET GLOBAL read_only = ON")
		if _, err := conn.ExecContext(ctx, "SET GLOBAL read_only = ON"); err != nil {
			return nil, fmt.Errorf("agent: apply: SET GLOBAL read_only = ON: %w", err)
		}
	}
	// A replica's commits must never wait for a semi-sync ACK: no one
	// sends one to a replica, and with wait_no_slave every commit of the
	// applier would hang. Switching it off fences first (localdb).
	if _, err := localdb.StopSemiSyncWaits(ctx, ra.a.db, ra.log); err != nil {
		return nil, fmt.Errorf("agent: apply: %w", err)
	}
	return ra.checkSettings(ctx, conn)
}

// Held implements apply.Host: a former primary's database holds the
// records of its own last term (they came from its binlog), as far as the
// log still holds them.
func (ra *replicaApply) Held() (*apply.Held, error) {
	term, err := ra.a.loadExtractStart()
	if err != nil || term == nil {
		return nil, err
	}
	held, err := lastOfEpoch(ra.a.txl, term.Epoch, term.FirstSeqno)
	if err != nil || held == nil {
		return nil, err
	}
	return &apply.Held{First: term.FirstSeqno, Last: *held, What: fmt.Sprintf("this node was primary of epoch %d", term.Epoch)}, nil
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

// waitApplied waits until the applier has applied seqno, if the agent is a
// replica (Drain).
func (a *Agent) waitApplied(ctx context.Context, seqno uint64) error {
	a.mu.Lock()
	role, ra := a.role, a.rep
	a.mu.Unlock()
	if role.Kind != RoleReplica || ra == nil {
		return nil
	}
	if ra.sup == nil {
		return fmt.Errorf("the applier's configuration is refused: %w", ra.newErr)
	}
	return ra.sup.WaitApplied(ctx, seqno)
}

// status describes the applier of the running replica role, or nil.
func (ra *replicaApply) status() *ApplyStatus {
	if ra.sup == nil {
		ra.mu.Lock()
		recv, since := ra.recv, ra.since
		ra.mu.Unlock()
		if recv == nil {
			return nil
		}
		commit := recv.CommitIndex()
		return &ApplyStatus{CommitSeqno: commit, LagTransactions: commit,
			LastError: fmt.Sprintf("agent: apply configuration: %v", ra.newErr), LastErrorAt: since}
	}
	st := ra.sup.Status()
	if st != nil {
		if note := ra.countNote(); note != "" {
			st.Warnings = append(st.Warnings, note)
		}
	}
	return st
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
