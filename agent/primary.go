package agent

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quire-ha/quire/binlog"
	"github.com/quire-ha/quire/localdb"
	"github.com/quire-ha/quire/manager"
	"github.com/quire-ha/quire/semisync"
	"github.com/quire-ha/quire/txlog"
)

// extractStart is where a primary term's extraction began: the local
// binlog end when the agent first became primary of the epoch. It is
// written durably before the first record of the term, so a restart before
// that record exists starts again at the same place and numbers the same
// transactions the same way.
type extractStart struct {
	Epoch      uint64 `json:"epoch"`
	FirstSeqno uint64 `json:"first_seqno"`
	File       string `json:"file"`
	Pos        uint64 `json:"pos"`
	GTIDState  string `json:"gtid_state"`
}

func (a *Agent) extractStartPath() string { return filepath.Join(a.cfg.DataDir, "extract-start.json") }

func (a *Agent) loadExtractStart() (*extractStart, error) {
	b, err := os.ReadFile(a.extractStartPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: read %s: %w", a.extractStartPath(), err)
	}
	var st extractStart
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("agent: %s is damaged (%v): it records where this primary term's extraction started; restore it or remove it only if the transaction log holds a record of the current epoch", a.extractStartPath(), err)
	}
	return &st, nil
}

func (a *Agent) saveExtractStart(st extractStart) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeState(a.extractStartPath(), append(b, '\n'))
}

// resumePoint decides where extraction of epoch continues: after the last
// record if the log already holds records of this epoch, else at the
// recorded start of the epoch, else (first time primary in this epoch) at
// the local binlog's current end, which is recorded first.
func (a *Agent) resumePoint(ctx context.Context, epoch uint64) (binlog.Resume, *extractStart, error) {
	last, lastEpoch := a.txl.Last()
	if last > 0 && lastEpoch > epoch {
		return binlog.Resume{}, nil, fmt.Errorf("agent: the log's last record %d has epoch %d, newer than the primary role's epoch %d: refusing to extract (this node was deposed)", last, lastEpoch, epoch)
	}
	st, err := a.loadExtractStart()
	if err != nil {
		return binlog.Resume{}, nil, err
	}
	if st != nil && st.Epoch == epoch {
		if last > 0 && lastEpoch == epoch {
			rec, err := a.txl.Read(last)
			if err != nil {
				return binlog.Resume{}, nil, fmt.Errorf("agent: read last record %d: %w", last, err)
			}
			return binlog.Resume{Seqno: last, GTID: rec.GTID, Position: binlog.Position{File: rec.SourceFile, Pos: rec.SourcePos}}, st, nil
		}
		if st.FirstSeqno != last+1 {
			return binlog.Resume{}, nil, fmt.Errorf("agent: epoch %d's extraction started at seqno %d but the log ends at %d: the log was changed under the agent", epoch, st.FirstSeqno, last)
		}
		return binlog.Resume{Seqno: last, Position: binlog.Position{File: st.File, Pos: st.Pos}}, st, nil
	}
	if last > 0 && lastEpoch == epoch {
		return binlog.Resume{}, nil, fmt.Errorf("agent: the log holds records of epoch %d but %s does not record where the term's extraction started: restore it", epoch, a.extractStartPath())
	}
	// A new primary term starts at the local binlog's end: the node was a
	// read-only replica, so nothing after it waits for an ACK. The very
	// first term of a cluster (an empty log) starts at the beginning of
	// the oldest binlog instead: a commit already waiting for its
	// semi-sync ACK lies before the end, and starting the dump after it
	// would acknowledge it without any replica.
	var pos binlog.Position
	var gtid string
	if last == 0 {
		pos, err = firstBinlog(ctx, a.db)
	} else {
		pos, gtid, err = binlog.CurrentPosition(ctx, a.db)
	}
	if err != nil {
		return binlog.Resume{}, nil, fmt.Errorf("agent: where does extraction start: %w", err)
	}
	st = &extractStart{Epoch: epoch, FirstSeqno: last + 1, File: pos.File, Pos: pos.Pos, GTIDState: gtid}
	if err := a.saveExtractStart(*st); err != nil {
		return binlog.Resume{}, nil, err
	}
	a.log.Info("primary term starts extraction at the binlog end", "epoch", epoch, "first_seqno", st.FirstSeqno, "position", pos, "gtid_state", gtid)
	return binlog.Resume{Seqno: last, Position: pos}, st, nil
}

// newGate builds the ack gate of a term and decides where the binlog dump
// restarts: at the last ACK persisted in this term (a lower bound of what
// the sync set holds), else at the term's start. Records the log already
// holds past that point are fed to the gate again; nothing is ACKed before
// K sync-set replicas report them.
func (a *Agent) newGate(ctx context.Context, epoch uint64, term *extractStart, resume *binlog.Resume) (*ackGate, error) {
	rc := a.cfg.Replication
	spec := a.currentGateSpec()
	policy, err := semisync.ParsePolicy(spec.Policy)
	if err != nil {
		return nil, fmt.Errorf("agent: replication.policy: %w", err)
	}
	if spec.K > len(spec.Members) {
		return nil, fmt.Errorf("agent: K is %d but the sync set has %d members [%s]: commits could never be acknowledged; list the replicas whose acks count (replication.sync_set, or quire set-sync-set), or set K to 0 for asynchronous replication",
			spec.K, len(spec.Members), strings.Join(spec.Members, ", "))
	}
	commit := term.FirstSeqno - 1
	commitPos := semisync.BinlogPosition{File: term.File, Pos: term.Pos}
	acked, err := a.loadAckState()
	if err != nil {
		return nil, err
	}
	if acked != nil && acked.Epoch == epoch && acked.Seqno >= commit && acked.Seqno <= a.txl.LastSeqno() {
		commit, commitPos = acked.Seqno, semisync.BinlogPosition{File: acked.File, Pos: acked.Pos}
	}
	resume.Acked = binlog.Position{File: commitPos.File, Pos: commitPos.Pos}
	g, err := semisync.New(semisync.Config{
		Members: spec.Members, K: spec.K, Policy: policy,
		CommitIndex: commit, CommitPosition: commitPos, AckedCeiling: a.txl.LastSeqno(),
		RecoverLag: 100,
	})
	if err != nil {
		return nil, fmt.Errorf("agent: ack gate: %w", err)
	}
	if a.gateMetrics == nil {
		if a.gateMetrics, err = newGateMetrics(a.reg); err != nil {
			return nil, err
		}
	}
	ag := &ackGate{
		a: a, epoch: epoch, g: g, log: a.log.With("component", "ack-gate"), m: a.gateMetrics,
		changed: make(chan struct{}), persistCh: make(chan ackState, 1),
		record: a.recordDegraded, clear: a.clearDegraded, published: commit,
		degradeAfter: 2 * rc.Heartbeat * time.Duration(rc.DeadAfterHeartbeats),
	}
	// Records held since the last persisted ACK were extracted before.
	var again []txlog.Record
	for s := commit + 1; s <= a.txl.LastSeqno(); s++ {
		rec, err := a.txl.Read(s)
		if err != nil {
			return nil, fmt.Errorf("agent: re-read record %d for the ack gate: %w", s, err)
		}
		rec.Events, rec.FormatDesc = nil, nil
		again = append(again, rec)
	}
	ag.pendingReplay = again
	if a.managed() {
		ag.record, ag.clear = a.recordMarker, a.clearMarker
	}
	a.log.Info("ack gate", "epoch", epoch, "k", spec.K, "sync_set", spec.Members, "policy", spec.Policy, "commit_seqno", commit, "dump_from", commitPos, "to_confirm", len(again))
	return ag, nil
}

// firstBinlog returns the start of the oldest binlog the server holds.
func firstBinlog(ctx context.Context, db *sql.DB) (binlog.Position, error) {
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return binlog.Position{}, fmt.Errorf("SHOW BINARY LOGS: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return binlog.Position{}, err
	}
	if !rows.Next() {
		return binlog.Position{}, fmt.Errorf("SHOW BINARY LOGS returned nothing: binary logging (log_bin) is off")
	}
	vals := make([]any, len(cols))
	var name string
	vals[0] = &name
	for i := 1; i < len(vals); i++ {
		vals[i] = new(sql.RawBytes)
	}
	if err := rows.Scan(vals...); err != nil {
		return binlog.Position{}, fmt.Errorf("SHOW BINARY LOGS: %w", err)
	}
	return binlog.Position{File: name, Pos: 4}, nil
}

// readerServerID is the server_id the agent's binlog reader registers
// with: stable per node, far from the small ids DBAs give servers.
func readerServerID(node string) uint32 {
	return 3_000_000_000 + crc32.ChecksumIEEE([]byte(node))%1_000_000_000
}

// runPrimary extracts the local binlog into the log and serves it.
func (a *Agent) runPrimary(ctx context.Context, epoch uint64) error {
	a.ship.SetRole(false, epoch)
	if err := localdb.CheckPrimarySettings(ctx, a.db, a.log); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	resume, term, err := a.resumePoint(ctx, epoch)
	if err != nil {
		return err
	}
	gate, err := a.newGate(ctx, epoch, term, &resume)
	if err != nil {
		return err
	}
	cfg := a.cfg
	addr := net.JoinHostPort(cfg.MySQL.Host, strconv.Itoa(cfg.MySQL.Port))
	if cfg.MySQL.Socket != "" {
		addr = cfg.MySQL.Socket
	}
	src, err := binlog.Open(ctx, binlog.Config{
		Addr: addr, User: cfg.MySQL.User, Password: cfg.MySQL.Password.Reveal(),
		ServerID: readerServerID(cfg.NodeID), HeartbeatPeriod: cfg.Replication.Heartbeat,
		DeadAfter: cfg.Replication.Heartbeat * 2, MaxTxSize: int64(cfg.Replication.MaxTransactionBytes),
		Epoch: epoch, Logger: a.log, Metrics: a.binlogMetrics, SemiSync: true,
	}, resume)
	if err != nil {
		return fmt.Errorf("agent: open binlog: %w", err)
	}
	defer src.Close()
	gate.src = src
	if err := gate.extracted(gate.pendingReplay); err != nil {
		return err
	}
	gate.pendingReplay = nil
	gctx, gcancel := context.WithCancel(ctx)
	defer gcancel()
	go gate.persistLoop(gctx)
	go gate.tick(gctx)
	a.mu.Lock()
	a.gate = gate
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.gate = nil
		a.mu.Unlock()
	}()
	a.ship.SetGate(gate, gate)
	a.ship.SetRole(true, epoch)
	a.serving.Store(true)
	defer func() {
		a.serving.Store(false)
		a.ship.SetRole(false, epoch)
	}()
	a.log.Info("extracting", "epoch", epoch, "next_seqno", resume.Seqno+1)
	// Writes open only now that extraction of the term has recorded where
	// it starts (otherwise a write could slip past the log), and open
	// again whenever the database comes back read-only (a restarted
	// server starts so).
	go a.keepWritable(gctx, epoch)
	a.roleUp(Role{Kind: RolePrimary, Epoch: epoch})

	// One goroutine reads transactions; this one appends whatever has
	// arrived, and a third makes it durable.
	recs := make(chan txlog.Record, 1024)
	rerr := make(chan error, 1)
	go func() {
		defer close(recs)
		for {
			rec, err := src.Next(ctx)
			if err != nil {
				rerr <- err
				return
			}
			select {
			case recs <- rec:
			case <-ctx.Done():
				rerr <- ctx.Err()
				return
			}
		}
	}()
	// The syncer fsyncs what this loop appended and tells the gate: while
	// one fsync runs, the loop keeps appending, so records reach the log
	// streams (and the replicas' fsyncs) without waiting for the primary's.
	var (
		qmu    sync.Mutex
		queued []txlog.Record // appended, not yet told to the gate; no events
	)
	kick := make(chan struct{}, 1)
	syncErr := make(chan error, 1)
	sctx, scancel := context.WithCancel(ctx)
	var swg sync.WaitGroup
	swg.Add(1)
	defer func() {
		scancel()
		swg.Wait()
	}()
	go func() {
		defer swg.Done()
		for {
			select {
			case <-sctx.Done():
				return
			case <-kick:
			}
			qmu.Lock()
			recs := queued
			queued = nil
			qmu.Unlock()
			if len(recs) == 0 {
				continue
			}
			// An ACK never covers a record this log could lose: the gate
			// hears of records only once they are durable here too.
			if err := a.txl.Sync(); err != nil {
				syncErr <- fmt.Errorf("agent: fsync seqnos %d..%d: %w", recs[0].Seqno, recs[len(recs)-1].Seqno, err)
				return
			}
			if err := gate.extracted(recs); err != nil {
				syncErr <- err
				return
			}
		}
	}()

	batch := make([]txlog.Record, 0, 1024)
	for {
		var rec txlog.Record
		var ok bool
		select {
		case rec, ok = <-recs:
		case err := <-syncErr:
			return err
		}
		if !ok {
			err := <-rerr
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("agent: extraction stopped: %w", err)
		}
		batch = append(batch[:0], rec)
		size := len(rec.Events)
	drain:
		for len(batch) < cap(batch) && size < 64<<20 {
			select {
			case rec, ok := <-recs:
				if !ok {
					break drain
				}
				batch = append(batch, rec)
				size += len(rec.Events)
			default:
				break drain
			}
		}
		// Append makes the records visible to the log streams at once, so
		// the replicas receive and fsync them while this log fsyncs.
		if err := a.txl.Append(batch...); err != nil {
			return fmt.Errorf("agent: append seqnos %d..%d: %w", batch[0].Seqno, batch[len(batch)-1].Seqno, err)
		}
		qmu.Lock()
		for i := range batch {
			queued = append(queued, txlog.Record{Seqno: batch[i].Seqno, SourceFile: batch[i].SourceFile, SourcePos: batch[i].SourcePos})
		}
		qmu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

// keepWritable opens the database for writes while this agent serves as
// primary of epoch, and again each time it finds it read-only: a mariadbd
// that restarted comes up read-only with semi-sync on (fail closed), so its
// commits wait for this agent's gate; once the settings are checked again,
// writes reopen. It gives up nothing: a database that is down is probed
// again at the next tick.
func (a *Agent) keepWritable(ctx context.Context, epoch uint64) {
	t := time.NewTicker(min(a.cfg.Replication.Heartbeat, time.Second))
	defer t.Stop()
	for {
		ro, err := localdb.Probe(ctx, a.db, time.Second)
		switch {
		case err != nil:
			a.writable.Store(false)
		case !a.leaseHeld(epoch):
			a.writable.Store(false)
			if !ro {
				a.log.Error("primary lease lost: the managers did not confirm this node as primary in time; fencing its own database (read_only=ON, client sessions killed) until they do", "epoch", epoch)
				if _, err := localdb.Fence(ctx, a.db); err != nil {
					a.log.Error("could not fence the database after losing the lease; the gate acknowledges nothing meanwhile", "err", err)
				}
			}
		case !ro:
			a.writable.Store(true)
		case !a.mayOpenWrites(epoch):
			a.writable.Store(false)
		default:
			a.writable.Store(false)
			if err := localdb.CheckPrimarySettings(ctx, a.db, a.log); err != nil {
				a.log.Error("primary database is read-only and its settings are not usable; writes stay closed", "err", err)
				break
			}
			if err := localdb.OpenWrites(ctx, a.db); err != nil {
				a.log.Warn("could not open writes; trying again", "err", err)
				break
			}
			a.writable.Store(true)
			a.log.Warn("primary database opened for writes (read_only=OFF)", "epoch", epoch)
		}
		select {
		case <-ctx.Done():
			a.writable.Store(false)
			return
		case <-t.C:
		}
	}
}

// mayOpenWrites reports whether this agent may make its database writable
// as primary of epoch: without managers its static role says so; with
// managers, their last assignment must name it primary of that epoch and
// its lease must hold.
func (a *Agent) mayOpenWrites(epoch uint64) bool {
	if !a.managed() {
		return true
	}
	asg, ok := a.assignment()
	return ok && asg.Role == manager.RolePrimary && asg.Epoch == epoch && a.leaseHeld(epoch)
}
