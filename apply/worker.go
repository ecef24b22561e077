package apply

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// worker applies records on one connection: a channel's, or the serial
// connection that runs serialized records.
type worker struct {
	a    *Applier
	rs   *runState
	id   int // channel, or SerialChannel
	conn *sql.Conn
	held *job // taken from the queue but not fitting the last block
	slot bool // holds a partial-block slot (runState.partial)

	sentFDE []byte  // format-description event replayed on this session
	format  *format // parsed sentFDE or the last parsed one
}

func (a *Applier) newWorker(ctx context.Context, db *sql.DB, rs *runState, id int) (*worker, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply: %s: connect: %w", chanName(id), err)
	}
	if _, err := conn.ExecContext(ctx, sessionSQL); err != nil {
		conn.Close()
		return nil, fmt.Errorf("apply: %s: set up session: %w", chanName(id), err)
	}
	var got sql.NullInt64
	name := a.lockName(id)
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", name).Scan(&got); err != nil || got.Int64 != 1 {
		conn.Close()
		return nil, fmt.Errorf("apply: %s: take lock %s: got %v, %v", chanName(id), name, got.Int64, err)
	}
	return &worker{a: a, rs: rs, id: id, conn: conn}, nil
}

func chanName(ch int) string {
	if ch == SerialChannel {
		return "serial channel"
	}
	return fmt.Sprintf("channel %d", ch)
}

// loop applies the channel's queue, block by block, until ctx ends or a
// fatal error.
func (w *worker) loop(ctx context.Context) error {
	queue := w.rs.chans[w.id].queue
	for {
		first := w.held
		w.held = nil
		if first == nil {
			select {
			case first = <-queue:
			case <-ctx.Done():
				return nil
			}
		}
		jobs, ok := w.waitSlot(ctx, w.collect(first, queue), queue)
		if !ok {
			return nil
		}
		if err := w.applyBlock(ctx, jobs); err != nil {
			return err
		}
	}
}

// collect gathers a block: records already queued, up to the block limits,
// with one format-description event and, in global commit order,
// consecutive seqnos. It never waits for records.
func (w *worker) collect(first *job, queue chan *job) []*job {
	cfg := &w.a.cfg
	jobs := []*job{first}
	size := len(first.rec.Events)
	start := time.Now()
	for len(jobs) < cfg.BlockSize && size < cfg.BlockBytes && time.Since(start) < cfg.BlockTime {
		select {
		case j := <-queue:
			if !w.fits(jobs, j) {
				w.held = j
				return jobs
			}
			jobs = append(jobs, j)
			size += len(j.rec.Events)
		default:
			return jobs
		}
	}
	return jobs
}

// fits reports whether j may join the block jobs: same format-description
// event and, in global commit order, the next seqno.
func (w *worker) fits(jobs []*job, j *job) bool {
	first, last := jobs[0], jobs[len(jobs)-1]
	return bytes.Equal(j.rec.FormatDesc, first.rec.FormatDesc) &&
		(w.a.cfg.CommitOrder != CommitGlobal || j.rec.Seqno == last.rec.Seqno+1)
}

// full reports whether the block jobs has reached a block limit.
func (w *worker) full(jobs []*job) bool {
	size := 0
	for _, j := range jobs {
		size += len(j.rec.Events)
	}
	return len(jobs) >= w.a.cfg.BlockSize || size >= w.a.cfg.BlockBytes
}

// waitSlot takes a partial-block slot for a block that is not full (see
// Config.PartialBlocks). While it waits, records arriving on the queue
// join the block; a block that fills up, or that waited BlockTime in all,
// goes without a slot. It returns false if ctx ended.
func (w *worker) waitSlot(ctx context.Context, jobs []*job, queue chan *job) ([]*job, bool) {
	sem := w.rs.partial
	if sem == nil || w.id == SerialChannel {
		return jobs, true
	}
	var timer *time.Timer
	for !w.full(jobs) {
		q := queue
		if w.held != nil {
			q = nil // the block is closed: it can only wait
		}
		select {
		case sem <- struct{}{}:
			w.slot = true
			return jobs, true
		default:
		}
		if timer == nil {
			timer = time.NewTimer(w.a.cfg.BlockTime)
			defer timer.Stop()
			w.rs.slotWaiters.Add(1)
			defer w.rs.slotWaiters.Add(-1)
		}
		select {
		case sem <- struct{}{}:
			w.slot = true
			return jobs, true
		case j := <-q:
			if w.fits(jobs, j) {
				jobs = append(jobs, j)
			} else {
				w.held = j
			}
		case <-timer.C:
			w.a.m.slotTimeouts.WithLabelValues(channelLabel(w.id)).Inc()
			return jobs, true
		case <-ctx.Done():
			return nil, false
		}
	}
	return jobs, true
}

// releaseSlot gives back the partial-block slot, if held.
func (w *worker) releaseSlot() {
	if w.slot {
		w.slot = false
		<-w.rs.partial
	}
}

// applyBlock applies jobs in one database transaction; if that fails, one
// by one.
func (w *worker) applyBlock(ctx context.Context, jobs []*job) error {
	defer w.releaseSlot()
	err := w.try(ctx, jobs)
	// Retries, waits for an operator and one-by-one replays run without
	// the slot: a stopped channel must not hold up the others.
	w.releaseSlot()
	if err == nil {
		return nil
	}
	if classifyErr(err) == errFatal {
		return w.fatal(err)
	}
	if len(jobs) == 1 {
		return w.applyOne(ctx, jobs[0], err)
	}
	w.a.m.retries.WithLabelValues(channelLabel(w.id)).Inc()
	w.a.log.Debug("apply: block failed, applying its transactions one by one", "channel", w.id,
		"first", jobs[0].rec.Seqno, "last", jobs[len(jobs)-1].rec.Seqno, "error", err.Error())
	for _, j := range jobs {
		if err := w.applyOne(ctx, j, nil); err != nil {
			return err
		}
	}
	return nil
}

// applyOne applies one record, retrying deadlocks and lock wait timeouts.
// Any other error stops the channel until an operator skips or retries the
// record. firstErr, if set, is the result of a first attempt. It returns
// only fatal errors.
func (w *worker) applyOne(ctx context.Context, j *job, firstErr error) error {
	err := firstErr
	attempts := 0
	if err != nil {
		attempts = 1
	}
	for {
		if err == nil {
			attempts++
			if err = w.try(ctx, []*job{j}); err == nil {
				return nil
			}
		}
		switch classifyErr(err) {
		case errFatal:
			return w.fatal(err)
		case errRetry:
			if attempts < w.a.cfg.MaxRetries {
				w.a.m.retries.WithLabelValues(channelLabel(w.id)).Inc()
				w.a.log.Debug("apply: retrying", "channel", w.id, "seqno", j.rec.Seqno, "attempt", attempts, "error", err.Error())
				if err := sleepCtx(ctx, time.Duration(attempts)*20*time.Millisecond); err != nil {
					return context.Cause(ctx)
				}
				err = nil
				continue
			}
		}
		cmd, cerr := w.stopOn(ctx, j, err)
		if cerr != nil {
			return cerr
		}
		if cmd == opSkip {
			return w.skip(ctx, j)
		}
		j.retried = true
		attempts, err = 0, nil
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fatal turns an error that ends the run into its final form.
func (w *worker) fatal(err error) error {
	if isGuard(err) {
		return fmt.Errorf("apply: %s: %w: another session already applied these records (a previous run still committing?); run again to resume from the restart rows", chanName(w.id), ErrGuard)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("apply: %s: %w", chanName(w.id), err)
}

// stopOn stops the channel on a record it cannot apply and waits for an
// operator's decision.
func (w *worker) stopOn(ctx context.Context, j *job, err error) (opCmd, error) {
	a, rs := w.a, w.rs
	ae := &ApplyError{Channel: w.id, Seqno: j.rec.Seqno, GTID: j.rec.GTID, Schemas: j.rec.Schemas, Err: err}
	st := &stopped{err: ae, cmd: make(chan opCmd, 1)}
	a.mu.Lock()
	rs.stops[j.rec.Seqno] = st
	rs.chanOf(w.id).stopped = ae
	a.notifyLocked()
	a.mu.Unlock()
	a.m.stopped.WithLabelValues(channelLabel(w.id)).Set(1)
	a.log.Error("apply: channel stopped: it needs an operator (skip or retry)", "channel", channelLabel(w.id),
		"seqno", ae.Seqno, "gtid", ae.GTID, "schemas", strings.Join(ae.Schemas, ","), "error", err.Error())
	var cmd opCmd
	select {
	case cmd = <-st.cmd:
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	}
	a.mu.Lock()
	delete(rs.stops, j.rec.Seqno)
	rs.chanOf(w.id).stopped = nil
	a.notifyLocked()
	a.mu.Unlock()
	a.m.stopped.WithLabelValues(channelLabel(w.id)).Set(0)
	return cmd, nil
}

// replayError marks errors that are the record's fault, not the
// connection's: the channel stops on them.
type replayError struct{ err error }

func (e *replayError) Error() string { return e.err.Error() }
func (e *replayError) Unwrap() error { return e.err }

// planOf translates a job once.
func (w *worker) planOf(j *job) (*plan, error) {
	if j.plan != nil {
		return j.plan, nil
	}
	if w.format == nil || !bytes.Equal(w.format.raw, j.rec.FormatDesc) {
		f, err := parseFormat(j.rec.FormatDesc)
		if err != nil {
			return nil, &replayError{fmt.Errorf("translate: %w", err)}
		}
		w.format = f
	}
	p, err := translate(j.rec, w.format, w.a.cfg.Schema)
	if err != nil {
		return nil, &replayError{fmt.Errorf("translate: %w", err)}
	}
	j.plan = p
	return p, nil
}

// try makes one attempt at applying jobs.
func (w *worker) try(ctx context.Context, jobs []*job) error {
	if w.id == SerialChannel {
		return w.trySerial(ctx, jobs[0])
	}
	return w.tryAtomic(ctx, jobs)
}

// prelude replays the format-description event if this session has not
// seen this one. planOf has parsed it into w.format.
func (w *worker) prelude(pk *packer, fde []byte) {
	if !bytes.Equal(w.sentFDE, fde) {
		// Alone: the server answers a format-description BINLOG statement
		// without the more-results flag, which would leave the rest of a
		// multi-statement packet unread.
		pk.alone(binlogStatement(w.format.replay), 0)
		w.sentFDE = fde
	}
}

// addSteps adds a plan's data steps to pk.
func addSteps(pk *packer, p *plan) {
	for _, s := range p.steps {
		switch s.kind {
		case stepRows:
			pk.rows(s.events, s.stmtEnd)
		case stepQuery:
			pk.add(s.context)
			pk.alone(s.query, s.errCode)
			pk.add(ownSQLMode)
		}
	}
}

// exec sends packets in order.
func (w *worker) exec(ctx context.Context, packets []packet) error {
	for _, pk := range packets {
		_, err := w.conn.ExecContext(ctx, pk.sql)
		switch {
		case err != nil && pk.expectErr != 0 && isErrNo(err, pk.expectErr):
		case err != nil:
			return err
		case pk.expectErr != 0:
			return &replayError{fmt.Errorf("the statement failed on the source with error %d but succeeded here", pk.expectErr)}
		}
	}
	return nil
}

// rollback ends a failed attempt. A failing rollback ends the run.
func (w *worker) rollback(ctx context.Context, cause error) error {
	w.sentFDE = nil // replay it again next time, to be sure
	if classifyErr(cause) == errFatal {
		return cause
	}
	if _, err := w.conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		return fmt.Errorf("rollback after %v: %w", cause, err)
	}
	if _, err := w.conn.ExecContext(ctx, "SET @@session.sql_log_bin=1, @@session.sql_mode='NO_ENGINE_SUBSTITUTION'"); err != nil {
		return fmt.Errorf("reset session after %v: %w", cause, err)
	}
	return cause
}

// tryAtomic applies transactional records in one database transaction,
// with the restart-row guard first.
func (w *worker) tryAtomic(ctx context.Context, jobs []*job) error {
	plans := make([]*plan, len(jobs))
	for i, j := range jobs {
		p, err := w.planOf(j)
		if err != nil {
			return err
		}
		if !p.atomic {
			return &replayError{errors.New("record is not one transactional event group, yet it was not serialized")}
		}
		plans[i] = p
	}
	first, last := jobs[0], jobs[len(jobs)-1]
	pk := newPacker(w.rs.maxPacket)
	w.prelude(pk, first.rec.FormatDesc)
	pk.add(gtidSQL(plans[len(plans)-1].gtid, last.rec.Timestamp))
	pk.add("START TRANSACTION")
	pk.add(guardSQL(w.a.cfg.Schema, w.id, w.rs.n, first.rec.Seqno, last.rec, last.shard))
	for _, p := range plans {
		addSteps(pk, p)
	}
	separate := w.a.cfg.CommitOrder == CommitGlobal || w.a.hooks.beforeCommit != nil
	if !separate {
		pk.add("COMMIT")
	}
	if h := w.a.hooks.beforeExec; h != nil {
		h(w.id, first.rec.Seqno, last.rec.Seqno, w.slot)
	}
	if err := w.exec(ctx, pk.packets()); err != nil {
		return w.rollback(ctx, err)
	}
	if separate {
		if w.a.cfg.CommitOrder == CommitGlobal {
			// Waiting for other channels' commits while holding the slot
			// could wait for a channel that waits for the slot.
			w.releaseSlot()
			if err := w.waitTurn(ctx, first.rec.Seqno); err != nil {
				return err
			}
		}
		if h := w.a.hooks.beforeCommit; h != nil {
			h(w.id, first.rec.Seqno, last.rec.Seqno)
		}
		if _, err := w.conn.ExecContext(ctx, "COMMIT"); err != nil {
			return w.rollback(ctx, err)
		}
	}
	return w.committed(jobs)
}

// waitTurn waits, in global commit order, until every record before first
// has committed.
func (w *worker) waitTurn(ctx context.Context, first uint64) error {
	a := w.a
	for {
		a.mu.Lock()
		ok := w.rs.sched.MayCommit(first)
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

// trySerial applies a serialized record. A transactional one runs like a
// block of one, with every channel's restart row inside. Anything else (DDL,
// non-transactional tables) cannot share a transaction with the restart
// rows: its statements run first, logged with the source GTID, then the
// rows are written outside the binlog. If the server dies, the run is
// cancelled or the row update fails between the two, the replica's binlog
// tells what happened: see statementsRan. So every attempt asks it first,
// and a record whose statements ran only gets its rows.
func (w *worker) trySerial(ctx context.Context, j *job) error {
	p, err := w.planOf(j)
	if err != nil {
		return err
	}
	if p.atomic {
		return w.tryAtomic(ctx, []*job{j})
	}
	schema, n := w.a.cfg.Schema, w.rs.n
	rows := []string{
		"SET @@session.sql_log_bin=0",
		guardSQL(schema, SerialChannel, n, j.rec.Seqno, j.rec, j.shard),
		"SET @@session.sql_log_bin=1",
	}
	ran, err := w.statementsRan(ctx, p.gtid)
	if err != nil {
		return err
	}
	if ran {
		if parts := p.parts(); parts != 1 {
			if !j.retried {
				return &replayError{fmt.Errorf("the replica's binlog ends with this record's GTID %s, but the record writes %d event groups (CREATE ... SELECT?), so it may have been applied only in part; check the data, then skip or retry it", p.gtid, parts)}
			}
			// An operator checked the data and asked for a retry: run it.
		} else {
			w.a.log.Info("apply: serialized record was applied already (its GTID ends the replica's binlog); writing its restart rows only",
				"seqno", j.rec.Seqno, "gtid", j.rec.GTID)
			pk := newPacker(w.rs.maxPacket)
			for _, s := range rows {
				pk.add(s)
			}
			if err := w.exec(ctx, pk.packets()); err != nil {
				return w.rollback(ctx, err)
			}
			return w.committed([]*job{j})
		}
	}
	pk := newPacker(w.rs.maxPacket)
	w.prelude(pk, j.rec.FormatDesc)
	pk.add(gtidSQL(p.gtid, j.rec.Timestamp))
	inTx, regtid, logOff := false, false, false
	if p.flags&gtidStandalone == 0 {
		pk.add("START TRANSACTION")
		inTx = true
	}
	for _, s := range p.steps {
		if s.kind != stepCommit && regtid {
			// A DDL statement ended the group; what follows would get
			// a GTID of the replica's own: give it the record's again.
			// Under gtid_strict_mode that is refused, so it is written
			// outside the binlog then.
			if w.rs.strict {
				pk.add("SET @@session.sql_log_bin=0")
				logOff = true
			} else {
				pk.add(gtidSQL(p.gtid, j.rec.Timestamp))
			}
			regtid = false
		}
		switch s.kind {
		case stepRows:
			if !inTx {
				pk.add("START TRANSACTION")
				inTx = true
			}
			pk.rows(s.events, s.stmtEnd)
		case stepQuery:
			pk.add(s.context)
			pk.alone(s.query, s.errCode)
			pk.add(ownSQLMode)
			if p.ddl {
				inTx, regtid = false, true
			}
		case stepCommit:
			if inTx {
				pk.add("COMMIT")
				inTx = false
			}
		}
	}
	if inTx {
		pk.add("COMMIT")
	}
	if logOff {
		pk.add("SET @@session.sql_log_bin=1")
	}
	if err := w.exec(ctx, pk.packets()); err != nil {
		return w.rollback(ctx, err)
	}
	if h := w.a.hooks.afterStatements; h != nil {
		h(j.rec.Seqno)
	}
	pk = newPacker(w.rs.maxPacket)
	for _, s := range rows {
		pk.add(s)
	}
	if err := w.exec(ctx, pk.packets()); err != nil {
		return w.rollback(ctx, err)
	}
	return w.committed([]*job{j})
}

// statementsRan reports whether the replica's binlog ends, in g's domain,
// with g: then the serialized record carrying g ran its statements already
// (MariaDB 10.6+ logs a DDL statement atomically with its effect, and
// @@gtid_binlog_pos holds complete event groups only: a group a kill -9 cut
// off in the binlog file was rolled back by crash recovery and is not
// there). The answer is sound because a serialized record runs alone: every
// record before it has committed, nothing after it has been dispatched, the
// sessions of earlier runs were killed at start and the applier's own
// bookkeeping is not logged, so nothing but this record writes the GTID
// that follows the last one before it. (A GTID logged on the replica by
// someone else since makes the record run again, as it would have anyway.)
func (w *worker) statementsRan(ctx context.Context, g gtid) (bool, error) {
	var s string
	if err := w.conn.QueryRowContext(ctx, "SELECT @@global.gtid_binlog_pos").Scan(&s); err != nil {
		return false, fmt.Errorf("read gtid_binlog_pos: %w", err)
	}
	pos, err := parseGTIDPos(s)
	if err != nil {
		return false, fmt.Errorf("gtid_binlog_pos %q: %w", s, err)
	}
	last, ok := pos[g.domain]
	return ok && last == g, nil
}

// skip moves the restart row past a record without applying it, in a
// transaction that carries the record's GTID.
func (w *worker) skip(ctx context.Context, j *job) error {
	g, err := parseGTID(j.rec.GTID)
	if err != nil {
		g = gtid{}
	}
	pk := newPacker(w.rs.maxPacket)
	if g.seq > 0 {
		pk.add(gtidSQL(g, j.rec.Timestamp))
	}
	pk.add("START TRANSACTION")
	pk.add(guardSQL(w.a.cfg.Schema, w.id, w.rs.n, j.rec.Seqno, j.rec, j.shard))
	pk.add("COMMIT")
	if err := w.exec(ctx, pk.packets()); err != nil {
		return w.fatal(w.rollback(ctx, err))
	}
	w.a.m.skipped.Inc()
	w.a.log.Warn("apply: record skipped by an operator", "channel", channelLabel(w.id), "seqno", j.rec.Seqno,
		"gtid", j.rec.GTID, "schemas", strings.Join(j.rec.Schemas, ","))
	return w.committed([]*job{j})
}

// committed records that jobs committed. An error means the scheduler and
// the channel disagree, which is a bug; it ends the run.
func (w *worker) committed(jobs []*job) error {
	a, rs := w.a, w.rs
	last := jobs[len(jobs)-1].rec
	a.mu.Lock()
	err := rs.sched.Committed(w.id, last.Seqno)
	cs := rs.chanOf(w.id)
	cs.seqno, cs.gtid = last.Seqno, last.GTID
	cs.txs += uint64(len(jobs))
	cs.blocks++
	if w.id == SerialChannel {
		for _, c := range rs.chans {
			c.seqno, c.gtid = last.Seqno, last.GTID
		}
	}
	a.notifyLocked()
	a.mu.Unlock()
	if err != nil {
		return err
	}
	l := channelLabel(w.id)
	a.m.txs.WithLabelValues(l).Add(float64(len(jobs)))
	a.m.blocks.WithLabelValues(l).Inc()
	a.m.blockSize.WithLabelValues(l).Observe(float64(len(jobs)))
	if w.id != SerialChannel {
		a.m.queue.WithLabelValues(l).Set(float64(len(rs.chans[w.id].queue)))
	}
	if w.id == SerialChannel {
		for ch := range rs.chans {
			a.m.seqno.WithLabelValues(channelLabel(ch)).Set(float64(last.Seqno))
		}
	} else {
		a.m.seqno.WithLabelValues(l).Set(float64(last.Seqno))
	}
	return nil
}
