package binlog

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/quire-ha/quire/txlog"
)

// Resume says where a Source starts: just after the last transaction the
// log already holds.
type Resume struct {
	// Seqno is the seqno of the last record in the log; 0 for an empty
	// log. The first record the Source returns gets Seqno+1.
	Seqno uint64
	// GTID is the last record's source GTID. When set, the Source checks
	// that the transaction ending at Position still has it whenever it
	// reads that transaction again.
	GTID string
	// Position is where the last record's transaction ends in the source
	// binlog (Record.SourceFile, Record.SourcePos); reading continues
	// there. A new primary's first extraction starts at its binlog end
	// before it opens writes (CurrentPosition).
	Position Position
	// GTIDState, used only when Position is zero, starts the dump after a
	// MariaDB GTID state instead, such as "0-1-5".
	GTIDState string
	// Acked is the position of the last transaction the sync set holds,
	// at or before Position; zero means Position. It matters only with
	// Config.SemiSync: MariaDB takes the position a dump starts from as
	// acknowledged by the semi-sync replica, so the Source starts every
	// dump at the last acknowledged position and drops the transactions
	// between it and the last record, which it has numbered already.
	Acked Position
}

// validate checks r on its own.
func (r Resume) validate() error {
	if r.Position.IsZero() {
		if r.GTIDState == "" {
			return fmt.Errorf("%w: resume needs a binlog position (the end of the last logged transaction) or a GTID state", ErrConfig)
		}
		if !r.Acked.IsZero() {
			return fmt.Errorf("%w: resume from a GTID state cannot have an acknowledged position", ErrConfig)
		}
		return validateGTIDState(r.GTIDState)
	}
	if err := r.Position.validate(); err != nil {
		return err
	}
	if !r.Acked.IsZero() {
		if err := r.Acked.validate(); err != nil {
			return err
		}
		if r.Acked.Compare(r.Position) > 0 {
			return fmt.Errorf("%w: acknowledged position %s is after the resume position %s", ErrConfig, r.Acked, r.Position)
		}
	}
	return nil
}

// Source reads a MariaDB primary's binlog as numbered transactions. Next
// must be called from one goroutine at a time; Ack and Close may be called
// from any goroutine.
type Source struct {
	cfg     Config
	log     *slog.Logger
	resume  Resume
	asm     *assembler
	closeCh chan struct{}

	// Owned by the goroutine calling Next.
	synced   bool // the current dump has passed the last record
	failures int  // consecutive failed dumps

	mu       sync.Mutex
	d        *Dumper
	seqno    uint64   // of the last record returned
	last     Position // end of the last record returned (or Resume.Position)
	lastGTID string
	acked    Position // highest position acknowledged (or to be, at the next dump start)
	closed   bool
	fatal    error
}

// Open starts reading after resume. It returns once the first dump runs,
// retrying failed connections with backoff until ctx ends; errors that
// retrying cannot fix (bad configuration, refused credentials, a position
// the source no longer has) return at once.
func Open(ctx context.Context, cfg Config, resume Resume) (*Source, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("binlog: open: %w", err)
	}
	if cfg.Epoch == 0 {
		return nil, fmt.Errorf("binlog: open: %w: Epoch is 0; records need the primary term (at least 1)", ErrConfig)
	}
	if err := resume.validate(); err != nil {
		return nil, fmt.Errorf("binlog: open: %w", err)
	}
	s := &Source{
		cfg:      cfg,
		log:      cfg.Logger.With("source", cfg.Addr),
		resume:   resume,
		asm:      newAssembler(cfg.MaxTxSize),
		closeCh:  make(chan struct{}),
		seqno:    resume.Seqno,
		last:     resume.Position,
		lastGTID: resume.GTID,
		acked:    resume.Acked,
	}
	if s.acked.IsZero() && cfg.SemiSync {
		s.acked = resume.Position
	}
	if _, err := s.dumper(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Next returns the next transaction of the source binlog, with Seqno
// (the previous one's + 1) and Epoch (Config.Epoch) filled in. It blocks
// until a transaction is complete, reconnecting as often as needed. It
// returns ctx's error when ctx ends, ErrClosed after Close, and errors
// retrying cannot fix (see the Err* variables); after such an error every
// later call returns it again.
func (s *Source) Next(ctx context.Context) (txlog.Record, error) {
	stop := context.AfterFunc(ctx, s.interrupt)
	defer stop()
	for {
		if err := s.state(); err != nil {
			return txlog.Record{}, err
		}
		d, err := s.dumper(ctx)
		if err != nil {
			return txlog.Record{}, err
		}
		ev, err := d.ReadEvent()
		if err != nil {
			s.disconnect(d)
			if err := s.state(); err != nil {
				return txlog.Record{}, err
			}
			if ctx.Err() != nil {
				return txlog.Record{}, ctx.Err()
			}
			if isFatal(err) {
				return txlog.Record{}, s.fail(err)
			}
			s.failures++
			s.log.Warn("binlog dump broken; reconnecting", "err", err, "after", s.lastPos(), "attempt", s.failures)
			continue
		}
		if ev.Header.EventType == replication.HEARTBEAT_EVENT {
			s.failures = 0 // the link works
		}
		rec, err := s.asm.add(ev)
		if err != nil {
			s.disconnect(d)
			return txlog.Record{}, s.fail(err)
		}
		if rec == nil {
			continue
		}
		s.failures = 0
		if ok, err := s.admit(rec); err != nil {
			s.disconnect(d)
			return txlog.Record{}, s.fail(err)
		} else if ok {
			return *rec, nil
		}
	}
}

// admit numbers rec, or reports false for a transaction numbered before
// (read again after a dump restart).
func (s *Source) admit(rec *txlog.Record) (bool, error) {
	pos := Position{File: rec.SourceFile, Pos: rec.SourcePos}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.last.IsZero() {
		c := pos.Compare(s.last)
		if c < 0 || (c == 0 && !s.synced) {
			if c == 0 {
				if s.lastGTID != "" && rec.GTID != s.lastGTID {
					return false, fmt.Errorf("binlog: the transaction ending at %s is %s, the log's last record says %s: %w", pos, rec.GTID, s.lastGTID, ErrDiverged)
				}
				s.synced = true
			}
			if m := s.cfg.Metrics; m != nil {
				m.dropped.Inc()
			}
			return false, nil
		}
		if c == 0 {
			return false, fmt.Errorf("%w: transaction %s ending at %s read twice in one dump", ErrProtocol, rec.GTID, pos)
		}
		if !s.synced {
			return false, fmt.Errorf("binlog: no transaction ends at the log's last position %s (%s ends at %s): %w", s.last, rec.GTID, pos, ErrDiverged)
		}
	}
	s.seqno++
	rec.Seqno = s.seqno
	rec.Epoch = s.cfg.Epoch
	s.last = pos
	s.lastGTID = rec.GTID
	if m := s.cfg.Metrics; m != nil {
		m.transactions.Inc()
	}
	return true, nil
}

// Ack tells the source that the transaction ending at file:pos (and every
// earlier one) is held by the sync set, so mariadbd lets their commits
// return. It may be called from any goroutine, concurrently with Next.
// The position must be one of a returned record's (SourceFile, SourcePos)
// or Resume's. Acks at or below an earlier one are ignored. If the link is
// down, the position is delivered when the next dump starts from it; a nil
// error means mariadbd has been or will be told.
func (s *Source) Ack(file string, pos uint64) error {
	p := Position{File: file, Pos: pos}
	if err := p.validate(); err != nil {
		return fmt.Errorf("binlog: ack: %w", err)
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case !s.cfg.SemiSync:
		s.mu.Unlock()
		return fmt.Errorf("binlog: ack %s: %w: the source is not semi-sync (Config.SemiSync)", p, ErrConfig)
	case s.last.IsZero() || p.Compare(s.last) > 0:
		last := s.last
		s.mu.Unlock()
		return fmt.Errorf("binlog: ack %s: %w: it is after the last transaction read (%s)", p, ErrConfig, last)
	case p.Compare(s.acked) <= 0:
		s.mu.Unlock()
		return nil
	}
	s.acked = p
	d := s.d
	s.mu.Unlock()
	if d == nil {
		return nil
	}
	if err := d.Ack(file, pos); err != nil {
		// Restart the dump: its start position carries the ack.
		s.log.Warn("semi-sync ack not sent; restarting the dump to deliver it", "pos", p, "err", err)
		d.Close()
	}
	return nil
}

// Close stops the Source. A blocked Next returns ErrClosed.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	d := s.d
	s.d = nil
	s.mu.Unlock()
	close(s.closeCh)
	if d != nil {
		return d.Close()
	}
	return nil
}

// dumper returns the running dump, or starts one: after a failure it waits
// (backoff) first.
func (s *Source) dumper(ctx context.Context) (*Dumper, error) {
	s.mu.Lock()
	d := s.d
	s.mu.Unlock()
	if d != nil {
		return d, nil
	}
	for {
		if err := s.state(); err != nil {
			return nil, err
		}
		if s.failures > 0 {
			wait := backoff(s.failures, s.cfg.ReconnectMin, s.cfg.ReconnectMax, rand.Float64())
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-s.closeCh:
				t.Stop()
				return nil, ErrClosed
			case <-t.C:
			}
			if m := s.cfg.Metrics; m != nil {
				m.reconnects.Inc()
			}
		}
		s.mu.Lock()
		from, state, synced := s.dumpStart()
		s.mu.Unlock()
		var err error
		if state != "" {
			d, err = DialGTID(ctx, s.cfg, state)
		} else {
			d, err = Dial(ctx, s.cfg, from)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if isFatal(err) {
				return nil, s.fail(err)
			}
			s.failures++
			s.log.Warn("binlog dump failed to start; retrying", "err", err, "attempt", s.failures)
			continue
		}
		s.asm.reset()
		s.synced = synced
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			d.Close()
			return nil, ErrClosed
		}
		s.d = d
		// Acks that arrived while the dump was starting. (A dump starts from
		// a GTID state only while nothing is acknowledged.)
		var pending Position
		if s.cfg.SemiSync && state == "" && s.acked.Compare(from) > 0 {
			pending = s.acked
		}
		s.mu.Unlock()
		if !pending.IsZero() {
			if err := d.Ack(pending.File, pending.Pos); err != nil {
				s.log.Warn("semi-sync ack not sent after dump start", "pos", pending, "err", err)
			}
		}
		return d, nil
	}
}

// dumpStart chooses where the next dump starts (s.mu held): the last
// acknowledged position with semi-sync (the start is an implicit ack),
// else the last record's end; a GTID state while no position is known.
// synced reports whether that start is the last record's end.
func (s *Source) dumpStart() (from Position, gtidState string, synced bool) {
	if s.cfg.SemiSync {
		if !s.acked.IsZero() {
			return s.acked, "", s.acked == s.last
		}
		return Position{}, s.resume.GTIDState, s.last.IsZero()
	}
	if !s.last.IsZero() {
		return s.last, "", true
	}
	return Position{}, s.resume.GTIDState, true
}

// disconnect drops dump d after a failure; a partial transaction is lost
// and read again by the next dump.
func (s *Source) disconnect(d *Dumper) {
	s.mu.Lock()
	if s.d == d {
		s.d = nil
	}
	s.mu.Unlock()
	d.Close()
	s.asm.reset()
}

// interrupt closes the running dump (Next's context ended).
func (s *Source) interrupt() {
	s.mu.Lock()
	d := s.d
	s.mu.Unlock()
	if d != nil {
		d.Close()
	}
}

// fail records a fatal error and returns it.
func (s *Source) fail(err error) error {
	s.mu.Lock()
	if s.fatal == nil {
		s.fatal = err
	}
	err = s.fatal
	s.mu.Unlock()
	s.log.Error("binlog extraction stopped", "err", err)
	return err
}

// state returns ErrClosed or the fatal error, if any.
func (s *Source) state() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.fatal != nil {
		return s.fatal
	}
	return nil
}

func (s *Source) lastPos() Position {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Last returns the seqno and position of the last record returned (or of
// Resume before the first).
func (s *Source) Last() (uint64, Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seqno, s.last
}
