package txlog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tsOf is the commit time makeRecord gives seqno.
func tsOf(seqno uint64) time.Time { return time.Unix(1_700_000_000+int64(seqno), 0) }

// TestPurgeAge checks the commit-time condition: a segment goes only when
// its last record committed before the cut-off, and purging stops at the
// first segment that is too young even if later ones are older.
func TestPurgeAge(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentSize: 4096})
	appendN(t, l, 1, 30, 1, 1000) // segments start at 1, 4, 7, ..., 28
	tests := []struct {
		before    uint64
		olderThan time.Time
		wantFirst uint64
		segments  int
		records   uint64
	}{
		{1000, tsOf(3), 1, 0, 0},   // the first segment's last record (3) is not before 3
		{1000, tsOf(4), 4, 1, 3},   // ... it is before 4
		{1000, tsOf(10), 10, 2, 6}, // segments 4-6 and 7-9
		{13, tsOf(1000), 13, 1, 3}, // the seqno bound wins: 13-15 holds 13
		{1000, tsOf(15), 13, 0, 0}, // 13-15: its last record 15 is not before 15
		{1000, tsOf(1000), 28, 5, 15},
	}
	for _, tt := range tests {
		res, err := l.Purge(tt.before, tt.olderThan)
		if err != nil {
			t.Fatalf("Purge(%d, %v): %v", tt.before, tt.olderThan.Unix(), err)
		}
		if res.Segments != tt.segments || res.Records != tt.records || res.FirstSeqno != tt.wantFirst || l.FirstSeqno() != tt.wantFirst {
			t.Fatalf("Purge(%d, ts %d) = %+v, first %d; want %d segments, %d records, first %d",
				tt.before, tt.olderThan.Unix(), res, l.FirstSeqno(), tt.segments, tt.records, tt.wantFirst)
		}
		if tt.segments > 0 && res.Bytes <= int64(tt.records)*1000 {
			t.Fatalf("Purge: %d bytes for %d records of 1000 event bytes", res.Bytes, tt.records)
		}
	}
	if st := l.Stats(); st.PurgedSegments != 9 {
		t.Fatalf("Stats().PurgedSegments = %d, want 9", st.PurgedSegments)
	}
	if got := segmentFiles(t, dir); len(got) != 1 || got[0] != segmentName(28) {
		t.Fatalf("segment files %v, want only %s", got, segmentName(28))
	}
	bytes, n := l.Size()
	if n != 1 || bytes != fileSize(t, filepath.Join(dir, segmentName(28))) {
		t.Fatalf("Size() = %d bytes, %d segments; want the one file's size, 1", bytes, n)
	}
}

// TestPurgeKeepsLastRecord: after a crash right after a segment roll the
// last segment is empty; the segment before it holds the last record and
// must stay, or the log would be empty and its last record unreadable.
func TestPurgeKeepsLastRecord(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentSize: 4096})
	appendN(t, l, 1, 5, 3, 1000) // segments 1-3, 4-5
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, segmentName(6)), nil, 0o640); err != nil {
		t.Fatal(err)
	}
	l = openLog(t, dir, Options{SegmentSize: 4096})
	if _, n := l.Size(); n != 3 {
		t.Fatalf("%d segments after reopening, want 3 (the last one empty)", n)
	}
	n, err := l.PurgeBefore(1000)
	if err != nil || n != 1 {
		t.Fatalf("PurgeBefore(1000) = %d, %v; want 1 segment", n, err)
	}
	if s, e := l.Last(); l.FirstSeqno() != 4 || s != 5 || e != 3 {
		t.Fatalf("first %d, last %d epoch %d; want 4, 5, 3", l.FirstSeqno(), s, e)
	}
	if rec, err := l.Read(5); err != nil || !equalRecords(rec, makeRecord(5, 3, 1000)) {
		t.Fatalf("Read(5) = %s, %v", describe(rec), err)
	}
	appendN(t, l, 6, 6, 3, 1000)
	if n, err := l.PurgeBefore(1000); err != nil || n != 1 || l.FirstSeqno() != 6 {
		t.Fatalf("PurgeBefore(1000) = %d, %v, first %d; want 1 segment, first 6", n, err, l.FirstSeqno())
	}
}

// TestPurgeReaderBehind: a Reader holding a chunk of records of a segment
// that is purged does not return them afterwards; it fails with ErrPurged.
// A Reader in a later segment goes on.
func TestPurgeReaderBehind(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{SegmentSize: 4096})
	appendN(t, l, 1, 12, 1, 1000) // segments 1-3, 4-6, 7-9, 10-12
	ctx := context.Background()
	behind, err := l.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := behind.Next(ctx); err != nil || rec.Seqno != 1 {
		t.Fatalf("Next = %d, %v", rec.Seqno, err)
	}
	ahead, err := l.NewReader(8)
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := ahead.Next(ctx); err != nil || rec.Seqno != 8 {
		t.Fatalf("Next = %d, %v", rec.Seqno, err)
	}
	if n, err := l.PurgeBefore(7); err != nil || n != 2 {
		t.Fatalf("PurgeBefore(7) = %d, %v; want 2", n, err)
	}
	if rec, err := behind.Next(ctx); !errors.Is(err, ErrPurged) {
		t.Fatalf("Next on a purged segment = %s, %v; want ErrPurged", describe(rec), err)
	}
	for s := uint64(9); s <= 12; s++ {
		if rec, err := ahead.Next(ctx); err != nil || !equalRecords(rec, makeRecord(s, 1, 1000)) {
			t.Fatalf("Next after the purge = %s, %v; want seqno %d", describe(rec), err, s)
		}
	}
}

// TestPurgeConcurrent runs a writer, a group-fsync loop, tailing readers,
// random reads and a purger together: every record read must be exactly
// the one written, every failure must be ErrPurged, and the log must stay
// usable (a purge must not close a segment under a running fsync). Run it
// with -race.
func TestPurgeConcurrent(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{SegmentSize: 8192})
	const n = 3000
	const size = 300
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var writing atomic.Bool
	writing.Store(true)
	errc := make(chan error, 16)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	wg.Add(1)
	go func() { // writer
		defer wg.Done()
		defer writing.Store(false)
		for s := uint64(1); s <= n; s++ {
			if err := l.Append(makeRecord(s, 1, size)); err != nil {
				fail(err)
				return
			}
		}
	}()
	wg.Add(1)
	go func() { // group fsync
		defer wg.Done()
		for writing.Load() {
			if err := l.Sync(); err != nil {
				fail(err)
				return
			}
		}
	}()
	var purged atomic.Int64
	wg.Add(1)
	go func() { // purger: everything it may, or all but the last 50 records
		defer wg.Done()
		for i := 0; writing.Load() && ctx.Err() == nil; i++ {
			before := l.LastSeqno() + 1
			if i%2 == 1 {
				before -= min(before, 50)
			}
			k, err := l.PurgeBefore(before)
			if err != nil {
				fail(err)
				return
			}
			purged.Add(int64(k))
		}
	}()
	var sawPurged atomic.Int64
	for range 2 { // tailing readers that restart at the first seqno when overtaken
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := l.NewReader(1)
			if err != nil {
				fail(err)
				return
			}
			for ctx.Err() == nil {
				want := r.NextSeqno()
				if want > n {
					return
				}
				rec, err := r.Next(ctx)
				switch {
				case errors.Is(err, ErrPurged):
					sawPurged.Add(1)
					if r, err = l.NewReader(l.FirstSeqno()); err != nil && !errors.Is(err, ErrPurged) {
						fail(err)
						return
					} else if err != nil {
						r, _ = l.NewReader(l.LastSeqno() + 1)
					}
				case err != nil:
					if ctx.Err() == nil {
						fail(err)
					}
					return
				case !equalRecords(rec, makeRecord(want, 1, size)):
					fail(errors.New("reader returned " + describe(rec) + ", not the record written"))
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // random reads around the first seqno
		defer wg.Done()
		for i := uint64(0); writing.Load() && ctx.Err() == nil; i++ {
			first, last := l.FirstSeqno(), l.LastSeqno()
			// From a little below the first seqno to a little above it.
			s := min(first-min(first-1, 3)+i%8, last)
			if s == 0 {
				continue
			}
			rec, err := l.Read(s)
			switch {
			case errors.Is(err, ErrPurged):
				sawPurged.Add(1)
			case err != nil:
				fail(err)
				return
			case !equalRecords(rec, makeRecord(s, 1, size)):
				fail(errors.New("Read returned " + describe(rec) + ", not the record written"))
				return
			}
		}
	}()
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatalf("log unusable after the concurrent purges: %v", err)
	}
	if purged.Load() == 0 || l.FirstSeqno() == 1 {
		t.Fatalf("nothing was purged (first seqno %d)", l.FirstSeqno())
	}
	for s := l.FirstSeqno(); s <= n; s++ {
		if rec, err := l.Read(s); err != nil || !equalRecords(rec, makeRecord(s, 1, size)) {
			t.Fatalf("Read(%d) = %s, %v", s, describe(rec), err)
		}
	}
	t.Logf("%d segments purged, %d ErrPurged seen by readers", purged.Load(), sawPurged.Load())
}
