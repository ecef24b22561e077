package txlog

import (
	"context"
	"fmt"
	"os"
	"sort"
)

const (
	// minReadChunk and maxReadChunk bound how many bytes of small records a
	// Reader reads at once: it starts small, so that a seek is cheap, and
	// doubles with every read, so that a long scan makes few system calls.
	minReadChunk = 32 << 10
	maxReadChunk = 1 << 20
	// bigRecord is the size from which a Reader reads a record into a
	// buffer of its own that the returned Record keeps, instead of copying.
	bigRecord = 256 << 10
)

// find returns the segment holding seqno and the record's index in it.
// Callers hold mu and have checked that seqno is in the log.
func (l *Log) find(seqno uint64) (*segment, int) {
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].first > seqno }) - 1
	s := l.segs[i]
	return s, int(seqno - s.first)
}

// locate checks that seqno is held; callers hold mu.
func (l *Log) locate(seqno uint64) error {
	if l.closed {
		return ErrClosed
	}
	if seqno > l.last {
		return fmt.Errorf("%w: seqno %d, last is %d", ErrNotFound, seqno, l.last)
	}
	if first := l.segs[0].first; seqno < first {
		return fmt.Errorf("%w: seqno %d, first is %d", ErrPurged, seqno, first)
	}
	return nil
}

// Read returns the record with the given seqno, reading it with one
// positioned read and verifying its checksums. It returns an error wrapping
// ErrNotFound or ErrPurged when the log does not hold seqno.
func (l *Log) Read(seqno uint64) (Record, error) {
	for {
		l.mu.RLock()
		if err := l.locate(seqno); err != nil {
			l.mu.RUnlock()
			return Record{}, err
		}
		s, i := l.find(seqno)
		off, end := s.span(i)
		f, path, gen := s.f, s.path, l.gen.Load()
		l.mu.RUnlock()

		// The read happens without mu so that a large record does not hold
		// up writers; if records were removed meanwhile, look again.
		rec, err := readRecord(f, path, off, end, seqno)
		if l.gen.Load() != gen {
			continue
		}
		return rec, err
	}
}

// readRecord reads and decodes the record at [off, end) of f; the returned
// record owns its memory.
func readRecord(f *os.File, path string, off, end int64, seqno uint64) (Record, error) {
	buf := make([]byte, end-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return Record{}, fmt.Errorf("txlog: read segment %s at offset %d: %w", path, off, err)
	}
	rec, err := decodeRecord(buf, false)
	if err != nil {
		return Record{}, &CorruptError{Segment: path, Offset: off, Seqno: seqno, Reason: err.Error()}
	}
	if rec.Seqno != seqno {
		return Record{}, &CorruptError{Segment: path, Offset: off, Seqno: seqno, Reason: fmt.Sprintf("record holds seqno %d", rec.Seqno)}
	}
	return rec, nil
}

// Reader reads the log forward from a seqno, tailing it: at the end it waits
// for new records. It reads small records in chunks of up to 1 MiB and never
// holds more than one chunk or one record in memory. A Reader is not safe for
// concurrent use; any number of Readers may read one Log concurrently with
// its writer.
type Reader struct {
	l    *Log
	next uint64 // seqno Next returns next
	gen  uint64 // l.gen when pending was read and truncations were checked
	err  error  // sticky error

	chunk int64 // bytes to read next time

	buf     []byte // reused read buffer
	pending []byte // whole records, starting with seqno next
	path    string // segment pending was read from
	off     int64  // offset of pending[0] in that segment
}

// NewReader returns a Reader whose first record will be seqno from. from may
// lie beyond the end of the log (Next then waits), but not before its start
// (an error wrapping ErrPurged).
func (l *Log) NewReader(from uint64) (*Reader, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return nil, ErrClosed
	}
	if first := l.segs[0].first; from < first {
		return nil, fmt.Errorf("%w: reader from seqno %d, first is %d", ErrPurged, from, first)
	}
	return &Reader{l: l, next: from, gen: l.gen.Load()}, nil
}

// NextSeqno returns the seqno of the record Next returns next.
func (r *Reader) NextSeqno() uint64 { return r.next }

// Next returns the next record, waiting for it to be appended if needed,
// until ctx is done. It fails with an error wrapping ErrTruncated once
// records it returned were removed by TruncateAfter, ErrPurged if the records
// it needs were purged, ErrClosed when the log is closed, or a *CorruptError.
func (r *Reader) Next(ctx context.Context) (Record, error) {
	for {
		rec, ok, err := r.TryNext()
		if err != nil || ok {
			return rec, err
		}
		l := r.l
		l.mu.RLock()
		ready, closed, truncated, ch := r.next <= l.last, l.closed, l.gen.Load() != r.gen, l.notify
		l.mu.RUnlock()
		if ready || closed || truncated {
			continue // TryNext reports the state
		}
		select {
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-ch:
		}
	}
}

// TryNext returns the next record if the log holds it, or ok == false
// without waiting if it does not (yet).
func (r *Reader) TryNext() (rec Record, ok bool, err error) {
	if r.err != nil {
		return Record{}, false, r.err
	}
	if len(r.pending) > 0 && r.l.gen.Load() != r.gen {
		r.pending = nil // records may have been removed; look again
	}
	if len(r.pending) == 0 {
		big, ok, err := r.fill()
		if err != nil {
			r.err = err
			return Record{}, false, err
		}
		if !ok {
			return Record{}, false, nil
		}
		if big != nil {
			return *big, true, nil
		}
	}
	rec, err = r.decodePending()
	if err != nil {
		r.err = err
		return Record{}, false, err
	}
	return rec, true, nil
}

// decodePending decodes the first pending record.
func (r *Reader) decodePending() (Record, error) {
	h, err := parseHeader(r.pending)
	if err != nil {
		return Record{}, &CorruptError{Segment: r.path, Offset: r.off, Seqno: r.next, Reason: err.Error()}
	}
	n := int(h.length)
	if n > len(r.pending) {
		return Record{}, &CorruptError{Segment: r.path, Offset: r.off, Seqno: r.next,
			Reason: fmt.Sprintf("record length %d runs past the next record", n)}
	}
	rec, err := decodeRecord(r.pending[:n], true)
	if err == nil && rec.Seqno != r.next {
		err = fmt.Errorf("record holds seqno %d", rec.Seqno)
	}
	if err != nil {
		return Record{}, &CorruptError{Segment: r.path, Offset: r.off, Seqno: r.next, Reason: err.Error()}
	}
	r.pending = r.pending[n:]
	r.off += int64(n)
	r.next++
	return rec, nil
}

// fill reads the next chunk of records into pending and reports whether
// there was any. If the next record is big, fill instead reads it into a
// buffer of its own and returns it.
func (r *Reader) fill() (big *Record, ok bool, err error) {
	l := r.l
	for {
		l.mu.RLock()
		if l.closed {
			l.mu.RUnlock()
			return nil, false, ErrClosed
		}
		if gen := l.gen.Load(); gen != r.gen {
			for _, t := range l.truncs {
				if t.gen > r.gen && t.after+1 < r.next {
					l.mu.RUnlock()
					return nil, false, fmt.Errorf("%w: reader at seqno %d, log truncated after %d", ErrTruncated, r.next, t.after)
				}
			}
			r.gen = gen
		}
		if r.next > l.last {
			l.mu.RUnlock()
			return nil, false, nil
		}
		if err := l.locate(r.next); err != nil {
			l.mu.RUnlock()
			return nil, false, err
		}
		s, i := l.find(r.next)
		off, end := s.span(i)
		big := end-off >= bigRecord
		if !big {
			// Read whole records up to readChunk bytes.
			r.chunk = min(max(2*r.chunk, minReadChunk), maxReadChunk)
			limit := off + r.chunk
			j := sort.Search(len(s.offsets)-i, func(k int) bool { return s.boundary(i+k+1) > limit })
			end = s.boundary(i + max(j, 1))
		}
		f, path := s.f, s.path
		l.mu.RUnlock()

		if big {
			rec, err := readRecord(f, path, off, end, r.next)
			if l.gen.Load() != r.gen {
				continue
			}
			if err != nil {
				return nil, false, err
			}
			r.next++
			return &rec, true, nil
		}
		n := int(end - off)
		if cap(r.buf) < n {
			r.buf = make([]byte, n, max(n, 64<<10))
		}
		buf := r.buf[:n]
		_, err := f.ReadAt(buf, off)
		if l.gen.Load() != r.gen {
			continue
		}
		if err != nil {
			return nil, false, fmt.Errorf("txlog: read segment %s at offset %d: %w", path, off, err)
		}
		r.pending, r.path, r.off = buf, path, off
		return nil, true, nil
	}
}
