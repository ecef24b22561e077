package apply

import (
	"context"
	"fmt"
	"time"
)

// Before every run the Supervisor has its Host prepare the database and
// reads the restart rows; before the first run of each Run it raises them
// to what the database already holds (Host.Held).

// prepare readies the database for a run (Host.Prepare), reads the
// restart rows and, before the first run of a Run, raises them to what the
// database holds (Host.Held).
func (s *Supervisor) prepare(ctx context.Context, seeded *bool) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var warnings []string
	if s.host != nil {
		w, err := s.host.Prepare(ctx)
		if err != nil {
			return err
		}
		warnings = w
	}
	rows, err := ReadRestartRows(ctx, s.db, s.schema)
	if err != nil {
		return err
	}
	lo, hi := rowRange(rows)
	s.mu.Lock()
	s.warnings = warnings
	s.rowsMin = max(s.rowsMin, lo)
	s.keep = max(s.keep, hi)
	s.mu.Unlock()
	if !*seeded {
		if err := s.seed(ctx); err != nil {
			return err
		}
		*seeded = true
	}
	return nil
}

// seed raises the restart rows to the last record the database holds
// (Host.Held): applying those records again would apply them twice. It
// refuses when the database lacks records from before them.
func (s *Supervisor) seed(ctx context.Context) error {
	if s.host == nil {
		return nil
	}
	h, err := s.host.Held()
	if err != nil || h == nil {
		return err
	}
	rows, err := ReadRestartRows(ctx, s.db, s.schema)
	if err != nil {
		return err
	}
	lo, hi := rowRange(rows)
	if len(rows) > 0 && lo >= h.Last.Seqno {
		return nil
	}
	if lo+1 < h.First {
		// Uneven rows may still cover every record before First: each
		// channel skips records up to its own row.
		gap, err := s.firstUncovered(ctx, rows, lo+1, h.First-1)
		if err != nil {
			return fmt.Errorf("apply: %s from seqno %d to %d, but its restart rows (%d..%d) do not show that every record before was applied: %w", h.What, h.First, h.Last.Seqno, lo, hi, err)
		}
		if gap != 0 {
			return fmt.Errorf("apply: %s from seqno %d to %d, but its restart rows (%d..%d) say its database never applied record %d before that: "+
				"records are missing under its own writes (it was promoted without applying its whole log); re-provision this database: %w",
				h.What, h.First, h.Last.Seqno, lo, hi, gap, ErrRecordsMissing)
		}
	}
	if len(rows) == 0 {
		if err := s.createRows(ctx); err != nil {
			return err
		}
	}
	held := h.Last
	ts := "NULL"
	if held.Timestamp > 0 {
		ts = fmt.Sprintf("FROM_UNIXTIME(%d)", held.Timestamp)
	}
	stmt := fmt.Sprintf("UPDATE %s SET epoch=?, seqno=?, source_gtid=?, source_file=?, source_pos=?, shard='', source_ts=%s, applied_at=SYSDATE(6) WHERE seqno<?", table(s.schema), ts)
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("apply: seed restart rows: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET SESSION sql_log_bin=0"); err != nil {
		return fmt.Errorf("apply: seed restart rows: %w", err)
	}
	res, err := conn.ExecContext(ctx, stmt, held.Epoch, held.Seqno, held.GTID, held.SourceFile, held.SourcePos, held.Seqno)
	conn.ExecContext(ctx, "SET SESSION sql_log_bin=1")
	if err != nil {
		return fmt.Errorf("apply: seed restart rows to seqno %d: %w", held.Seqno, err)
	}
	n, _ := res.RowsAffected()
	s.log.Warn("restart rows raised to the last record the database holds already: "+h.What,
		"first_seqno", h.First, "seqno", held.Seqno, "gtid", held.GTID, "rows", n)
	s.RaiseKeep(held.Seqno)
	return nil
}

// firstUncovered returns the first record in from..to that the restart
// rows do not show applied, or 0 if they cover all of them.
func (s *Supervisor) firstUncovered(ctx context.Context, rows []RestartRow, from, to uint64) (uint64, error) {
	m, err := NewShardMap(s.cfg.Applier.Shards, rows[0].ChannelCount)
	if err != nil {
		return 0, fmt.Errorf("the shard map does not fit the rows' %d channels: %w", rows[0].ChannelCount, err)
	}
	if m.Layout() != rows[0].Layout {
		return 0, fmt.Errorf("the rows were written with another shard map")
	}
	plan, err := planStart(rows, rows[0].ChannelCount, rows[0].Layout)
	if err != nil {
		return 0, err
	}
	r, err := s.src.NewReader(from)
	if err != nil {
		return 0, fmt.Errorf("read the log at seqno %d: %w", from, err)
	}
	var recs []placed
	for seqno := from; seqno <= to; seqno++ {
		rec, err := r.Next(ctx)
		if err != nil {
			return 0, fmt.Errorf("read seqno %d: %w", seqno, err)
		}
		shard, serialize, _ := Classify(&rec, m)
		ch := SerialChannel
		if !serialize {
			ch = m.Channel(shard)
		}
		recs = append(recs, placed{seqno: rec.Seqno, channel: ch})
	}
	return firstUnapplied(plan.seqnos, recs)
}

// placed is a record's seqno and the channel that applies it.
type placed struct {
	seqno   uint64
	channel int
}

// firstUnapplied returns the first of recs that restart rows at rows (by
// channel) do not show applied, or 0 when they show all of them applied.
func firstUnapplied(rows []uint64, recs []placed) (uint64, error) {
	rs := &runState{rows: rows}
	for _, p := range recs {
		done, err := rs.alreadyApplied(p.seqno, p.channel)
		if err != nil {
			return 0, err
		}
		if !done {
			return p.seqno, nil
		}
	}
	return 0, nil
}

// rowRange returns the lowest and highest seqno of rows (0, 0 for none).
func rowRange(rows []RestartRow) (lo, hi uint64) {
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
func (s *Supervisor) createRows(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	ap := s.applier()
	go func() { done <- ap.Run(ctx, s.src, &Watermark{}) }()
	for {
		ap.mu.Lock()
		running, changed := ap.rs != nil && ap.rs.sched != nil, ap.changed
		ap.mu.Unlock()
		if running {
			cancel()
			<-done
			return nil
		}
		select {
		case err := <-done:
			return fmt.Errorf("apply: create restart rows: %w", err)
		case <-changed:
		}
	}
}
