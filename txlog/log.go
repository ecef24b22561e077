package txlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultSegmentSize is the size at which a segment is rolled unless
// Options.SegmentSize says otherwise.
const DefaultSegmentSize = 64 << 20

// Options configure a Log. The zero value is usable.
type Options struct {
	// SegmentSize is the size in bytes after which a new segment is started
	// (default 64 MiB, at most 1 GiB). A record larger than this gets a
	// segment of its own.
	SegmentSize int64
	// FirstSeqno is the seqno a brand-new log expects first (default 1). It
	// is ignored when the directory already holds segments.
	FirstSeqno uint64
	// Logger receives recovery and failure messages (default slog.Default()).
	Logger *slog.Logger
	// Registerer, if set, gets the log's Prometheus metrics.
	Registerer prometheus.Registerer
}

// Stats are counters since Open.
type Stats struct {
	// Records and Bytes count appended records and their encoded bytes.
	Records, Bytes uint64
	// Fsyncs counts fsync calls on segment files (group commits, segment
	// rolls, truncations, close).
	Fsyncs uint64
	// PurgedSegments and PurgedBytes count segment files removed by Purge
	// and their size.
	PurgedSegments, PurgedBytes uint64
}

// Log is a durable, segmented transaction log in one directory. It is safe
// for concurrent use: writers (Append, TruncateAfter, Purge) are
// serialized, readers never block on fsync, and concurrent Sync callers
// share fsyncs.
//
// The log holds the records with seqnos FirstSeqno() through LastSeqno(); it
// is empty when FirstSeqno() > LastSeqno(), and the next record appended must
// have seqno LastSeqno()+1.
type Log struct {
	dir     string
	segSize int64
	logger  *slog.Logger
	lock    *os.File // holds the directory lock
	dirf    *os.File // the directory, for fsync
	metrics *metrics

	// wmu serializes writers: Append, segment rolls, TruncateAfter,
	// PurgeBefore, Close. Fields below that writers change are changed
	// with both wmu and mu held, so a wmu holder may read them without mu.
	wmu  sync.Mutex
	wbuf []byte // encoding buffer, guarded by wmu

	// smu is held by the one goroutine fsyncing on behalf of Sync callers
	// (and by TruncateAfter, Close and Purge's closing of files, which must
	// not race with it).
	smu sync.Mutex

	// pmu serializes Purge, which removes files after releasing wmu, with
	// itself and with Close. Lock order: pmu, wmu, smu, mu.
	pmu sync.Mutex

	mu        sync.RWMutex
	segs      []*segment // sorted; the last is the one appended to
	last      uint64     // seqno of the last record; segs[0].first-1 when empty
	lastEpoch uint64     // epoch of the last record; 0 when unknown
	notify    chan struct{}
	truncs    []truncation // every TruncateAfter since Open
	closed    bool
	failed    error         // sticky I/O failure: the log must be reopened
	failc     chan struct{} // closed when failed is set

	// gen is bumped (under mu) whenever records are removed, by
	// TruncateAfter or PurgeBefore, so readers that looked up an offset
	// without holding mu can tell whether what they read is still valid.
	gen     atomic.Uint64
	durable atomic.Uint64

	nRecords, nBytes, nFsyncs atomic.Uint64
	nPurgedSegs, nPurgedBytes atomic.Uint64
}

// truncation records one TruncateAfter so readers can tell whether records
// they already returned were removed.
type truncation struct {
	gen   uint64 // gen after the truncation
	after uint64 // seqnos after this one were removed
}

// Open opens the log in dir, creating the directory and an empty log if
// needed, and recovers it: every record of every segment is read and its
// checksum verified, a torn tail of the last segment is cut off (and logged),
// and any other damage or a seqno gap is an error naming the segment file, the
// byte offset and the seqno. Only one Log may have a directory open at a time.
func Open(dir string, opts Options) (*Log, error) {
	if opts.SegmentSize == 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize < 0 || opts.SegmentSize > 1<<30 {
		return nil, fmt.Errorf("txlog: open %s: segment size %d out of range (1 to %d)", dir, opts.SegmentSize, 1<<30)
	}
	if opts.FirstSeqno == 0 {
		opts.FirstSeqno = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// Owner only: the log holds every transaction's data. MkdirAll keeps
	// the mode of an existing directory (older versions made it 0750).
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("txlog: open %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("txlog: open %s: make it private (mode 0700): %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir:     dir,
		segSize: opts.SegmentSize,
		logger:  opts.Logger.With("txlog", dir),
		lock:    lock,
		notify:  make(chan struct{}),
		failc:   make(chan struct{}),
	}
	if err := l.recover(opts.FirstSeqno); err != nil {
		l.closeFiles()
		return nil, err
	}
	if opts.Registerer != nil {
		m, err := newMetrics(l, opts.Registerer)
		if err != nil {
			l.closeFiles()
			return nil, fmt.Errorf("txlog: open %s: register metrics: %w", dir, err)
		}
		l.metrics = m
	}
	return l, nil
}

// recover opens and scans the segments, cuts a torn tail and makes what
// remains durable.
func (l *Log) recover(firstSeqno uint64) error {
	d, err := os.Open(l.dir)
	if err != nil {
		return fmt.Errorf("txlog: open %s: %w", l.dir, err)
	}
	l.dirf = d
	segs, err := listSegments(l.dir)
	if err != nil {
		return err
	}
	if len(segs) == 0 {
		s, err := l.createSegment(firstSeqno)
		if err != nil {
			return err
		}
		l.segs = []*segment{s}
		l.last = firstSeqno - 1
		l.durable.Store(l.last)
		return nil
	}
	for i, s := range segs {
		if i > 0 {
			prev := segs[i-1]
			if s.first != prev.last()+1 {
				l.segs = segs[:i] // so that closeFiles closes what is open
				return &CorruptError{Segment: s.path, Offset: 0, Seqno: prev.last() + 1,
					Reason: fmt.Sprintf("seqno gap: segment %s ends at seqno %d, next segment starts at %d", filepath.Base(prev.path), prev.last(), s.first)}
			}
		}
		f, err := os.OpenFile(s.path, os.O_RDWR, 0)
		if err != nil {
			l.segs = segs[:i]
			return fmt.Errorf("txlog: open segment %s: %w", s.path, err)
		}
		s.f = f
		l.segs = segs[:i+1]
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("txlog: stat segment %s: %w", s.path, err)
		}
		isLast := i == len(segs)-1
		res, err := scanSegment(s, f, fi.Size(), isLast)
		if err != nil {
			return err
		}
		s.offsets, s.size = res.offsets, res.size
		if len(res.offsets) > 0 {
			l.lastEpoch = res.lastEpoch
		}
		if res.torn > 0 {
			if err := f.Truncate(res.size); err != nil {
				return fmt.Errorf("txlog: cut torn tail of segment %s: %w", s.path, err)
			}
			l.logger.Warn("txlog: cut torn tail",
				"segment", s.path, "offset", res.size, "bytes_cut", res.torn,
				"last_seqno", s.last(), "reason", res.reason)
		}
		if !isLast && len(res.offsets) == 0 {
			return &CorruptError{Segment: s.path, Seqno: s.first, Reason: "empty segment before the last"}
		}
	}
	l.last = l.segs[len(l.segs)-1].last()
	// Whatever survived a crash may still be only in the page cache.
	if err := l.active().f.Sync(); err != nil {
		return fmt.Errorf("txlog: sync segment %s: %w", l.active().path, err)
	}
	l.nFsyncs.Add(1)
	if err := syncDir(l.dirf); err != nil {
		return fmt.Errorf("txlog: sync directory %s: %w", l.dir, err)
	}
	l.durable.Store(l.last)
	return nil
}

// createSegment creates the empty segment file for first and makes its
// directory entry durable.
func (l *Log) createSegment(first uint64) (*segment, error) {
	path := filepath.Join(l.dir, segmentName(first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("txlog: create segment %s: %w", path, err)
	}
	if err := syncDir(l.dirf); err != nil {
		f.Close()
		return nil, fmt.Errorf("txlog: sync directory %s: %w", l.dir, err)
	}
	return &segment{first: first, path: path, f: f}, nil
}

// active returns the segment appended to. Callers hold wmu or mu.
func (l *Log) active() *segment { return l.segs[len(l.segs)-1] }

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// FirstSeqno returns the seqno of the first record held. The log is empty
// when it is greater than LastSeqno.
func (l *Log) FirstSeqno() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.segs[0].first
}

// LastSeqno returns the seqno of the last record appended (durable or not),
// or, if the log is empty, the seqno just before the one it expects next.
func (l *Log) LastSeqno() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.last
}

// LastEpoch returns the epoch of the last record, or 0 if the log is empty.
func (l *Log) LastEpoch() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.lastEpoch
}

// Last returns the seqno and epoch of the last record (see LastSeqno and
// LastEpoch).
func (l *Log) Last() (seqno, epoch uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.last, l.lastEpoch
}

// DurableSeqno returns the highest seqno known to be on stable storage.
func (l *Log) DurableSeqno() uint64 { return l.durable.Load() }

// Stats returns counters since Open.
func (l *Log) Stats() Stats {
	return Stats{Records: l.nRecords.Load(), Bytes: l.nBytes.Load(), Fsyncs: l.nFsyncs.Load(),
		PurgedSegments: l.nPurgedSegs.Load(), PurgedBytes: l.nPurgedBytes.Load()}
}

// usable returns why the log cannot be used, or nil.
func (l *Log) usable() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.usableLocked()
}

// usableLocked is usable for callers holding mu.
func (l *Log) usableLocked() error {
	if l.closed {
		return ErrClosed
	}
	if l.failed != nil {
		return fmt.Errorf("txlog: log failed earlier, reopen it: %w", l.failed)
	}
	return nil
}

// fail makes err sticky: after a failed fsync or a half-done change to the
// files, the in-memory state can no longer be trusted to match the disk.
func (l *Log) fail(err error) {
	l.mu.Lock()
	if l.failed == nil {
		l.failed = err
		close(l.failc)
		l.logger.Error("txlog: log failed, it must be reopened", "err", err)
	}
	l.mu.Unlock()
}

// Failed is closed once the log has failed (a failed fsync or a half-done
// change to its files); Err then says why. A process should stop and open
// the log again, which recovers it from the files.
func (l *Log) Failed() <-chan struct{} { return l.failc }

// Err returns the log's sticky failure, or nil.
func (l *Log) Err() error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.failed
}

// broadcast wakes everyone waiting for a change. Callers hold mu.
func (l *Log) broadcast() {
	close(l.notify)
	l.notify = make(chan struct{})
}

// Append adds records to the end of the log. Their seqnos must continue the
// log without gaps (the first one LastSeqno()+1) and their epochs must not
// decrease; otherwise Append returns an error wrapping ErrOutOfSequence (or
// ErrInvalidRecord for a record that cannot be encoded) and appends nothing.
//
// The records are written to the segment file (one write per segment
// touched) and are visible to readers when Append returns, but they are
// durable only after a later Sync. If a write fails, a prefix of recs may
// have been appended; LastSeqno tells how far it got.
func (l *Log) Append(recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	sizes := make([]int, len(recs))
	seqno, epoch := l.last, l.lastEpoch
	for i := range recs {
		r := &recs[i]
		if r.Seqno != seqno+1 {
			return fmt.Errorf("%w: append seqno %d, want %d (last is %d)", ErrOutOfSequence, r.Seqno, seqno+1, seqno)
		}
		if r.Epoch < epoch {
			return fmt.Errorf("%w: append seqno %d with epoch %d, lower than epoch %d of seqno %d", ErrOutOfSequence, r.Seqno, r.Epoch, epoch, seqno)
		}
		if err := checkSchemas(r.Schemas); err != nil {
			return fmt.Errorf("%w: seqno %d: %v", ErrInvalidRecord, r.Seqno, err)
		}
		n, err := r.EncodedSize()
		if err != nil {
			return err
		}
		sizes[i] = n
		seqno, epoch = r.Seqno, r.Epoch
	}

	buf := l.wbuf[:0]
	var offsets []uint32
	act := l.active()
	pending := int64(0)
	for i := range recs {
		if act.size+pending > 0 && act.size+pending+int64(sizes[i]) > l.segSize {
			if len(offsets) > 0 {
				if err := l.write(act, buf, offsets, recs[i-len(offsets)].Seqno-1, recs[i-1].Epoch); err != nil {
					return err
				}
			}
			buf, offsets, pending = buf[:0], offsets[:0], 0
			var err error
			if act, err = l.roll(); err != nil {
				return err
			}
		}
		offsets = append(offsets, uint32(act.size+pending))
		var err error
		if buf, err = recs[i].AppendBinary(buf); err != nil {
			return err // cannot happen: EncodedSize succeeded above
		}
		pending += int64(sizes[i])
	}
	err := l.write(act, buf, offsets, recs[len(recs)-len(offsets)].Seqno-1, recs[len(recs)-1].Epoch)
	if cap(buf) <= 4<<20 {
		l.wbuf = buf[:0]
	} else {
		l.wbuf = nil // do not keep a huge record's buffer around
	}
	return err
}

// write writes buf, holding whole encoded records whose offsets in s are
// given, at the end of s and publishes them; the first record's seqno is
// after+1 and the last one's epoch is epoch. On failure it cuts the file back.
// Callers hold wmu.
func (l *Log) write(s *segment, buf []byte, offsets []uint32, after, epoch uint64) error {
	if len(buf) == 0 {
		return nil
	}
	if _, err := s.f.WriteAt(buf, s.size); err != nil {
		err = fmt.Errorf("txlog: write segment %s at offset %d: %w", s.path, s.size, err)
		if terr := s.f.Truncate(s.size); terr != nil {
			l.fail(fmt.Errorf("%w; cutting it back failed too: %v", err, terr))
		}
		return err
	}
	l.mu.Lock()
	s.offsets = append(s.offsets, offsets...)
	s.size += int64(len(buf))
	l.last = after + uint64(len(offsets))
	l.lastEpoch = epoch
	l.broadcast()
	l.mu.Unlock()
	l.nRecords.Add(uint64(len(offsets)))
	l.nBytes.Add(uint64(len(buf)))
	return nil
}

// roll fsyncs the active segment and starts a new one. Callers hold wmu.
func (l *Log) roll() (*segment, error) {
	old := l.active()
	if err := l.fsync(old); err != nil {
		return nil, err
	}
	l.advanceDurable(old.last())
	s, err := l.createSegment(old.last() + 1)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.segs = append(l.segs, s)
	l.broadcast()
	l.mu.Unlock()
	return s, nil
}

// fsync syncs a segment file; a failure is sticky, since after a failed
// fsync the kernel may have dropped the dirty pages.
func (l *Log) fsync(s *segment) error {
	start := time.Now()
	err := s.f.Sync()
	l.nFsyncs.Add(1)
	if l.metrics != nil {
		l.metrics.fsyncSeconds.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		err = fmt.Errorf("txlog: sync segment %s: %w", s.path, err)
		l.fail(err)
		return err
	}
	return nil
}

// advanceDurable raises the durable seqno to at least seqno.
func (l *Log) advanceDurable(seqno uint64) {
	for {
		cur := l.durable.Load()
		if cur >= seqno || l.durable.CompareAndSwap(cur, seqno) {
			return
		}
	}
}

// Sync makes every record appended before the call durable. Concurrent
// callers share fsyncs: while one fsync runs, later callers queue, and the
// next fsync covers all of them.
func (l *Log) Sync() error {
	l.mu.RLock()
	target := l.last
	err := l.usableLocked()
	l.mu.RUnlock()
	if err != nil {
		return err
	}
	return l.syncTo(target)
}

// AppendSync appends recs and waits until they are durable. Concurrent
// callers share fsyncs, but each must bring the right seqnos, so concurrent
// writers need their own ordering (or call Append under their own lock and
// Sync outside it).
func (l *Log) AppendSync(recs ...Record) error {
	if err := l.Append(recs...); err != nil {
		return err
	}
	if len(recs) == 0 {
		return l.Sync()
	}
	return l.syncTo(recs[len(recs)-1].Seqno)
}

// syncTo returns once seqno is durable, fsyncing if nobody else has.
func (l *Log) syncTo(seqno uint64) error {
	if l.durable.Load() >= seqno {
		return nil
	}
	l.smu.Lock()
	defer l.smu.Unlock()
	if l.durable.Load() >= seqno {
		return nil // the fsync we waited for covered us
	}
	l.mu.RLock()
	err := l.usableLocked()
	s, upTo := l.active(), l.last
	l.mu.RUnlock()
	if err != nil {
		return err
	}
	// Segments before the active one were fsynced when rolled, so syncing
	// the active one makes everything up to upTo durable.
	if err := l.fsync(s); err != nil {
		return err
	}
	l.advanceDurable(upTo)
	l.mu.Lock()
	l.broadcast()
	l.mu.Unlock()
	return nil
}

// Wait blocks until the log holds seqno (appended, durable or not), the
// context is done, or the log is closed.
func (l *Log) Wait(ctx context.Context, seqno uint64) error {
	return l.wait(ctx, func() bool { return l.last >= seqno })
}

// WaitDurable blocks until seqno is durable, the context is done, or the log
// is closed. It does not itself fsync; some writer must call Sync.
func (l *Log) WaitDurable(ctx context.Context, seqno uint64) error {
	return l.wait(ctx, func() bool { return l.durable.Load() >= seqno })
}

// Changed returns a channel that is closed at the next change to the log:
// an append, a sync, a truncation, a purge or Close.
func (l *Log) Changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.notify
}

func (l *Log) wait(ctx context.Context, done func() bool) error {
	for {
		l.mu.RLock()
		ok, closed, ch := done(), l.closed, l.notify
		l.mu.RUnlock()
		if ok {
			return nil
		}
		if closed {
			return ErrClosed
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// TruncateAfter removes every record after seqno, durably, so that the next
// record appended must have seqno seqno+1 (failover: a replica drops what the
// new primary never had). It is a no-op if seqno ≥ LastSeqno. Truncating to
// before FirstSeqno()-1 is an error wrapping ErrPurged. Readers that already
// returned removed records fail with ErrTruncated.
func (l *Log) TruncateAfter(seqno uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.smu.Lock()
	defer l.smu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if seqno >= l.last {
		return nil
	}
	if first := l.segs[0].first; seqno+1 < first {
		return fmt.Errorf("%w: truncate after %d: the log starts at seqno %d", ErrPurged, seqno, first)
	}
	// keep is the segment that will end with seqno (or segs[0], emptied).
	keep := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].first > seqno }) - 1
	keep = max(keep, 0)
	ks := l.segs[keep]
	idx := int(seqno + 1 - ks.first) // index in ks of the first record removed
	cut := ks.boundary(idx)
	epoch := uint64(0)
	if idx > 0 {
		var err error
		if epoch, err = l.epochAt(ks, idx-1); err != nil {
			return err
		}
	}

	removed := l.segs[keep+1:]
	l.mu.Lock()
	l.segs = l.segs[:keep+1]
	ks.offsets = ks.offsets[:idx:idx] // a later append must not overwrite what readers hold
	ks.size = cut
	l.last, l.lastEpoch = seqno, epoch
	gen := l.gen.Add(1)
	l.truncs = append(l.truncs, truncation{gen: gen, after: seqno})
	if l.durable.Load() > seqno {
		l.durable.Store(seqno)
	}
	l.broadcast()
	l.mu.Unlock()

	// Newest first, each removal durable before the next, so a crash
	// leaves a log that is a prefix of the old one.
	for i := len(removed) - 1; i >= 0; i-- {
		s := removed[i]
		s.f.Close()
		if err := os.Remove(s.path); err != nil {
			err = fmt.Errorf("txlog: truncate after %d: remove segment %s: %w", seqno, s.path, err)
			l.fail(err)
			return err
		}
		if err := syncDir(l.dirf); err != nil {
			err = fmt.Errorf("txlog: truncate after %d: sync directory %s: %w", seqno, l.dir, err)
			l.fail(err)
			return err
		}
	}
	if err := ks.f.Truncate(cut); err != nil {
		err = fmt.Errorf("txlog: truncate after %d: truncate segment %s to %d bytes: %w", seqno, ks.path, cut, err)
		l.fail(err)
		return err
	}
	if err := l.fsync(ks); err != nil {
		return err
	}
	l.logger.Info("txlog: truncated", "after_seqno", seqno, "segments_removed", len(removed), "segment", ks.path, "size", cut)
	return nil
}

// epochAt reads the epoch of record index i of s from its header.
func (l *Log) epochAt(s *segment, i int) (uint64, error) {
	h, err := l.headerAt(s, i)
	return h.epoch, err
}

// headerAt reads the header of record index i of s. Callers hold wmu, so
// that s is neither truncated nor removed meanwhile.
func (l *Log) headerAt(s *segment, i int) (header, error) {
	off, _ := s.span(i)
	var hdr [headerSize]byte
	if _, err := s.f.ReadAt(hdr[:], off); err != nil {
		return header{}, fmt.Errorf("txlog: read segment %s at offset %d: %w", s.path, off, err)
	}
	h, err := parseHeader(hdr[:])
	if err != nil {
		return header{}, &CorruptError{Segment: s.path, Offset: off, Seqno: s.first + uint64(i), Reason: err.Error()}
	}
	return h, nil
}

// PurgeResult says what a purge removed.
type PurgeResult struct {
	// Segments, Records and Bytes count the segment files removed, the
	// records they held and their size.
	Segments int
	Records  uint64
	Bytes    int64
	// FirstSeqno is the log's first seqno afterwards.
	FirstSeqno uint64
}

// PurgeBefore removes whole segments all of whose records have seqnos below
// seqno (retention); see Purge. It returns the number of segments removed.
func (l *Log) PurgeBefore(seqno uint64) (int, error) {
	res, err := l.Purge(seqno, time.Time{})
	return res.Segments, err
}

// Purge removes the oldest segments, one after the other, as long as the
// next one
//   - is not the segment appended to and does not hold the last record
//     (so the log never becomes empty by a purge and LastEpoch stays known),
//   - holds only records with seqnos below before, and
//   - unless olderThan is zero, has a last record whose commit timestamp
//     (Record.Timestamp, whole seconds) lies before olderThan. A record with
//     timestamp 0 counts as old.
//
// Records below before may therefore remain. Readers see the purge at once:
// Read and NewReader of a purged seqno, and a Reader whose next record was
// purged, fail with an error wrapping ErrPurged; a read that was under way
// on a removed segment is retried and fails the same way, never returning
// other bytes. Files are removed oldest first, with a directory fsync after
// each, so a crash leaves a suffix of the log without a gap. Appends and
// syncs are held up only while the segments are chosen, not while files
// are removed. A failure to remove a file or to fsync the directory makes
// the log unusable until reopened (the segments still on disk are then part
// of the log again).
func (l *Log) Purge(before uint64, olderThan time.Time) (PurgeResult, error) {
	// pmu: one purge at a time, and Close waits for the file removals.
	l.pmu.Lock()
	defer l.pmu.Unlock()
	l.wmu.Lock()
	if err := l.usable(); err != nil {
		l.wmu.Unlock()
		return PurgeResult{}, err
	}
	var res PurgeResult
	n := 0
	for ; n < len(l.segs)-1; n++ {
		s := l.segs[n]
		if s.count() == 0 || s.last() >= l.last || s.last() >= before {
			break
		}
		if !olderThan.IsZero() {
			h, err := l.headerAt(s, len(s.offsets)-1)
			if err != nil {
				l.wmu.Unlock()
				return PurgeResult{FirstSeqno: l.FirstSeqno()}, fmt.Errorf("txlog: purge before %d: %w", before, err)
			}
			if !time.Unix(int64(h.timestamp), 0).Before(olderThan) {
				break
			}
		}
		res.Records += s.count()
		res.Bytes += s.size
	}
	res.Segments = n
	if n == 0 {
		res.FirstSeqno = l.segs[0].first
		l.wmu.Unlock()
		return res, nil
	}
	removed := l.segs[:n]
	l.mu.Lock()
	l.segs = append([]*segment(nil), l.segs[n:]...)
	res.FirstSeqno = l.segs[0].first
	l.gen.Add(1)
	l.broadcast()
	l.mu.Unlock()
	l.wmu.Unlock()

	// A group fsync that picked one of these segments as the active one
	// before it was rolled may still be running: wait for it before closing.
	l.smu.Lock()
	for _, s := range removed {
		s.f.Close()
	}
	l.smu.Unlock()
	// Oldest first, each removal durable before the next, so a crash leaves
	// a log without a gap.
	for _, s := range removed {
		if err := os.Remove(s.path); err != nil {
			err = fmt.Errorf("txlog: purge before %d: remove segment %s: %w", before, s.path, err)
			l.fail(err)
			return PurgeResult{}, err
		}
		if err := syncDir(l.dirf); err != nil {
			err = fmt.Errorf("txlog: purge before %d: sync directory %s: %w", before, l.dir, err)
			l.fail(err)
			return PurgeResult{}, err
		}
	}
	l.nPurgedSegs.Add(uint64(n))
	l.nPurgedBytes.Add(uint64(res.Bytes))
	l.logger.Info("txlog: purged", "before_seqno", before, "segments_removed", n, "records", res.Records,
		"bytes", res.Bytes, "first_seqno", res.FirstSeqno)
	return res, nil
}

// Size returns the bytes of whole records held and the number of segment
// files.
func (l *Log) Size() (bytes int64, segments int) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, s := range l.segs {
		bytes += s.size
	}
	return bytes, len(l.segs)
}

// Close syncs the log and releases its files and directory lock. Waiters and
// readers get ErrClosed.
func (l *Log) Close() error {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.smu.Lock()
	defer l.smu.Unlock()
	l.mu.RLock()
	closed, failed := l.closed, l.failed
	l.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	var err error
	if failed == nil {
		if err = l.fsync(l.active()); err == nil {
			l.advanceDurable(l.last)
		}
	}
	l.mu.Lock()
	l.closed = true
	l.broadcast()
	l.mu.Unlock()
	if l.metrics != nil {
		l.metrics.unregister()
	}
	return errors.Join(err, l.closeFiles())
}

// closeFiles closes every open file and releases the directory lock.
func (l *Log) closeFiles() error {
	var errs []error
	for _, s := range l.segs {
		if s.f != nil {
			errs = append(errs, s.f.Close())
		}
	}
	if l.dirf != nil {
		errs = append(errs, l.dirf.Close())
	}
	errs = append(errs, unlockDir(l.lock))
	return errors.Join(errs...)
}

var _ io.Closer = (*Log)(nil)
