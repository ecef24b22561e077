package txlog

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestAppendReadRoundTrip appends random records, one of them 20 MiB, reads
// them back by seqno and with a Reader, and again after reopening.
func TestAppendReadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 300
	sizes := make([]int, n+1)
	for s := 1; s <= n; s++ {
		switch {
		case s == 150:
			sizes[s] = 20 << 20
		case s%50 == 0:
			sizes[s] = 300<<10 + rng.IntN(100<<10) // read as "big" by readers
		default:
			sizes[s] = rng.IntN(8 << 10)
		}
	}
	epochOf := func(s uint64) uint64 { return 1 + s/100 }
	want := func(s uint64) Record { return makeRecord(s, epochOf(s), sizes[s]) }

	l := openLog(t, dir, Options{SegmentSize: 1 << 20})
	for s := uint64(1); s <= n; {
		batch := []Record{}
		for k := 0; k < 1+rng.IntN(5) && s <= n; k++ {
			batch = append(batch, want(s))
			s++
		}
		if err := l.Append(batch...); err != nil {
			t.Fatalf("Append(%d..%d): %v", batch[0].Seqno, batch[len(batch)-1].Seqno, err)
		}
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}

	check := func(l *Log) {
		t.Helper()
		if first, last := l.FirstSeqno(), l.LastSeqno(); first != 1 || last != n {
			t.Fatalf("FirstSeqno, LastSeqno = %d, %d; want 1, %d", first, last, n)
		}
		if seq, ep := l.Last(); seq != n || ep != epochOf(n) || l.LastEpoch() != ep {
			t.Fatalf("Last() = %d, %d; want %d, %d", seq, ep, n, epochOf(n))
		}
		if d := l.DurableSeqno(); d != n {
			t.Fatalf("DurableSeqno = %d, want %d", d, n)
		}
		for _, s := range rng.Perm(n) {
			seqno := uint64(s + 1)
			got, err := l.Read(seqno)
			if err != nil {
				t.Fatalf("Read(%d): %v", seqno, err)
			}
			if !equalRecords(got, want(seqno)) {
				t.Fatalf("Read(%d) = %s, want %s", seqno, describe(got), describe(want(seqno)))
			}
		}
		r, err := l.NewReader(1)
		if err != nil {
			t.Fatal(err)
		}
		for seqno := uint64(1); seqno <= n; seqno++ {
			got, ok, err := r.TryNext()
			if err != nil || !ok {
				t.Fatalf("reader at %d: ok %v, err %v", seqno, ok, err)
			}
			if !equalRecords(got, want(seqno)) {
				t.Fatalf("reader: got %s, want %s", describe(got), describe(want(seqno)))
			}
		}
		if _, ok, err := r.TryNext(); ok || err != nil {
			t.Fatalf("reader past the end: ok %v, err %v", ok, err)
		}
	}
	check(l)
	if segs := segmentFiles(t, dir); len(segs) < 5 {
		t.Fatalf("%d segments with 1 MiB segment size, want several: %v", len(segs), segs)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	check(openLog(t, dir, Options{SegmentSize: 1 << 20}))
}

func TestSegmentRolling(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentSize: 4096})
	// Records of about 1.3 KiB: three fit in 4 KiB, not four.
	appendN(t, l, 1, 9, 1, 1000)
	// A record larger than a segment gets one of its own.
	appendN(t, l, 10, 10, 1, 10000)
	appendN(t, l, 11, 11, 1, 1000)
	want := []string{
		"00000000000000000001.seg",
		"00000000000000000004.seg",
		"00000000000000000007.seg",
		"00000000000000000010.seg",
		"00000000000000000011.seg",
	}
	if got := segmentFiles(t, dir); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("segments = %v, want %v", got, want)
	}
	// One Append that spans a roll is split across segments too.
	batch := []Record{makeRecord(12, 1, 1000), makeRecord(13, 1, 1000), makeRecord(14, 1, 1000)}
	if err := l.Append(batch...); err != nil {
		t.Fatal(err)
	}
	if got := segmentFiles(t, dir); got[len(got)-1] != "00000000000000000014.seg" {
		t.Fatalf("after batch: segments = %v", got)
	}
	// Rolling fsyncs the finished segment, so its records are durable.
	if d := l.DurableSeqno(); d != 13 {
		t.Fatalf("DurableSeqno = %d after rolling past 13, want 13", d)
	}
	for s := uint64(1); s <= 14; s++ {
		if _, err := l.Read(s); err != nil {
			t.Fatalf("Read(%d): %v", s, err)
		}
	}
}

func TestFirstSeqnoOption(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{FirstSeqno: 1000})
	if l.FirstSeqno() != 1000 || l.LastSeqno() != 999 {
		t.Fatalf("new log: first %d last %d, want 1000 999", l.FirstSeqno(), l.LastSeqno())
	}
	if err := l.Append(makeRecord(1, 1, 10)); !errors.Is(err, ErrOutOfSequence) {
		t.Fatalf("Append(1) to a log starting at 1000: %v, want ErrOutOfSequence", err)
	}
	appendN(t, l, 1000, 1001, 1, 10)
	l.Close()
	// The option is ignored for an existing log.
	l = openLog(t, dir, Options{FirstSeqno: 5})
	if l.FirstSeqno() != 1000 || l.LastSeqno() != 1001 {
		t.Fatalf("reopened: first %d last %d, want 1000 1001", l.FirstSeqno(), l.LastSeqno())
	}
}

// TestAppendRejects checks that bad appends are refused with a clear error
// and change nothing.
func TestAppendRejects(t *testing.T) {
	unsorted := makeRecord(6, 2, 10)
	unsorted.Schemas = []string{"b", "a"}
	dup := makeRecord(6, 2, 10)
	dup.Schemas = []string{"a", "a"}
	long := makeRecord(6, 2, 10)
	long.GTID = strings.Repeat("x", 70000)
	tests := []struct {
		name string
		recs []Record
		is   error
		msg  string
	}{
		{"gap", []Record{makeRecord(7, 2, 10)}, ErrOutOfSequence, "append seqno 7, want 6 (last is 5)"},
		{"repeat", []Record{makeRecord(5, 2, 10)}, ErrOutOfSequence, "append seqno 5, want 6"},
		{"zero", []Record{makeRecord(0, 2, 10)}, ErrOutOfSequence, "append seqno 0, want 6"},
		{"gap inside batch", []Record{makeRecord(6, 2, 10), makeRecord(8, 2, 10)}, ErrOutOfSequence, "append seqno 8, want 7"},
		{"epoch goes down", []Record{makeRecord(6, 1, 10)}, ErrOutOfSequence, "epoch 1, lower than epoch 2 of seqno 5"},
		{"epoch down inside batch", []Record{makeRecord(6, 3, 10), makeRecord(7, 2, 10)}, ErrOutOfSequence, "epoch 2, lower than epoch 3 of seqno 6"},
		{"unsorted schemas", []Record{unsorted}, ErrInvalidRecord, `"b" before "a"`},
		{"duplicate schemas", []Record{dup}, ErrInvalidRecord, `"a" before "a"`},
		{"GTID too long", []Record{makeRecord(6, 2, 10), long}, ErrOutOfSequence, "append seqno 6, want 7"},
		{"GTID too long alone", []Record{long}, ErrInvalidRecord, "GTID is 70000 bytes"},
	}
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentSize: 4096})
	appendN(t, l, 1, 5, 2, 1000)
	seg := filepath.Join(dir, segmentFiles(t, dir)[len(segmentFiles(t, dir))-1])
	size, stats := fileSize(t, seg), l.Stats()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.Append(tt.recs...)
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Append: %v, want %v containing %q", err, tt.is, tt.msg)
			}
			if s, e := l.Last(); s != 5 || e != 2 {
				t.Fatalf("Last() = %d, %d after rejected append, want 5, 2", s, e)
			}
			if got := fileSize(t, seg); got != size {
				t.Fatalf("segment grew from %d to %d bytes", size, got)
			}
			if got := l.Stats(); got != stats {
				t.Fatalf("stats changed: %+v -> %+v", stats, got)
			}
		})
	}
	// The log still works.
	appendN(t, l, 6, 6, 2, 10)
}

// TestGroupCommit runs many concurrent writers that each wait for their own
// record to be durable; fsyncs must be shared.
func TestGroupCommit(t *testing.T) {
	for _, writers := range []int{8, 64} {
		t.Run(fmt.Sprintf("%d writers", writers), func(t *testing.T) {
			l := openLog(t, t.TempDir(), Options{})
			perWriter := 40
			if testing.Short() {
				perWriter = 10
			}
			var mu sync.Mutex // orders seqno assignment, like an extractor would
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for range writers {
				wg.Go(func() {
					for range perWriter {
						mu.Lock()
						seqno := l.LastSeqno() + 1
						err := l.Append(makeRecord(seqno, 1, 200))
						mu.Unlock()
						if err == nil {
							err = l.Sync()
						}
						if err == nil && l.DurableSeqno() < seqno {
							err = errors.New("Sync returned before the record was durable")
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			records := uint64(writers * perWriter)
			st := l.Stats()
			if l.LastSeqno() != records || l.DurableSeqno() != records {
				t.Fatalf("last %d durable %d, want %d", l.LastSeqno(), l.DurableSeqno(), records)
			}
			// Open fsyncs once; every other fsync served at least one Sync.
			if st.Fsyncs >= records {
				t.Fatalf("%d fsyncs for %d records: no group commit", st.Fsyncs, records)
			}
			t.Logf("%d writers: %d records, %d fsyncs", writers, records, st.Fsyncs)
		})
	}
}

func TestAppendSyncAndWaitDurable(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	appendN(t, l, 1, 3, 1, 10)
	if d := l.DurableSeqno(); d != 0 {
		t.Fatalf("DurableSeqno = %d before any sync, want 0", d)
	}
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { done <- l.WaitDurable(ctx, 4) }()
	if err := l.AppendSync(makeRecord(4, 1, 10)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitDurable(4): %v", err)
	}
	if d := l.DurableSeqno(); d != 4 {
		t.Fatalf("DurableSeqno = %d, want 4", d)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := l.WaitDurable(short, 5); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitDurable(5) with nothing appended: %v, want deadline exceeded", err)
	}
}

// TestTruncateAfter truncates at various points, appends in a new epoch and
// checks the result, also after reopening.
func TestTruncateAfter(t *testing.T) {
	// 30 records of ~1.3 KiB in 4 KiB segments: segments start at 1, 4, 7, ... 28.
	tests := []struct {
		name      string
		after     uint64
		wantErr   error
		wantLast  uint64
		wantEpoch uint64
		wantSegs  int
	}{
		{"middle of a segment", 14, nil, 14, 1, 5},
		{"end of a segment", 15, nil, 15, 1, 5},
		{"start of a segment", 16, nil, 16, 1, 6},
		{"in the last segment", 29, nil, 29, 1, 10},
		{"no-op at last", 30, nil, 30, 1, 10},
		{"no-op beyond last", 99, nil, 30, 1, 10},
		{"everything", 0, nil, 0, 0, 1},
		{"after the first", 1, nil, 1, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, Options{SegmentSize: 4096})
			appendN(t, l, 1, 30, 1, 1000)
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := l.TruncateAfter(tt.after); err != nil {
				t.Fatalf("TruncateAfter(%d): %v", tt.after, err)
			}
			if s, e := l.Last(); s != tt.wantLast || e != tt.wantEpoch {
				t.Fatalf("Last() = %d, %d; want %d, %d", s, e, tt.wantLast, tt.wantEpoch)
			}
			if d := l.DurableSeqno(); d != tt.wantLast {
				t.Fatalf("DurableSeqno = %d, want %d", d, tt.wantLast)
			}
			if got := segmentFiles(t, dir); len(got) != tt.wantSegs {
				t.Fatalf("segments %v, want %d", got, tt.wantSegs)
			}
			if _, err := l.Read(tt.wantLast + 1); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Read(%d) after truncation: %v, want ErrNotFound", tt.wantLast+1, err)
			}
			// Appends continue at the right seqno, in a new epoch.
			if err := l.Append(makeRecord(tt.wantLast+2, 2, 10)); !errors.Is(err, ErrOutOfSequence) {
				t.Fatalf("Append(%d): %v, want ErrOutOfSequence", tt.wantLast+2, err)
			}
			appendN(t, l, tt.wantLast+1, tt.wantLast+5, 2, 1000)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openLog(t, dir, Options{SegmentSize: 4096})
			if s, e := l.Last(); s != tt.wantLast+5 || e != 2 {
				t.Fatalf("reopened: Last() = %d, %d; want %d, 2", s, e, tt.wantLast+5)
			}
			for s := uint64(1); s <= tt.wantLast+5; s++ {
				epoch := uint64(1)
				if s > tt.wantLast {
					epoch = 2
				}
				got, err := l.Read(s)
				if err != nil || !equalRecords(got, makeRecord(s, epoch, 1000)) {
					t.Fatalf("reopened: Read(%d) = %s, %v; want epoch %d", s, describe(got), err, epoch)
				}
			}
		})
	}

	t.Run("before the first seqno", func(t *testing.T) {
		l := openLog(t, t.TempDir(), Options{SegmentSize: 4096})
		appendN(t, l, 1, 30, 1, 1000)
		if _, err := l.PurgeBefore(10); err != nil {
			t.Fatal(err)
		}
		first := l.FirstSeqno()
		err := l.TruncateAfter(first - 2)
		if !errors.Is(err, ErrPurged) {
			t.Fatalf("TruncateAfter(%d) with first %d: %v, want ErrPurged", first-2, first, err)
		}
		if l.LastSeqno() != 30 {
			t.Fatalf("LastSeqno = %d after failed truncation", l.LastSeqno())
		}
		// Truncating to just before the first empties the log but keeps its place.
		if err := l.TruncateAfter(first - 1); err != nil {
			t.Fatal(err)
		}
		if l.FirstSeqno() != first || l.LastSeqno() != first-1 {
			t.Fatalf("emptied log: first %d last %d, want %d %d", l.FirstSeqno(), l.LastSeqno(), first, first-1)
		}
		appendN(t, l, first, first, 2, 10)
	})
}

func TestPurgeBefore(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{SegmentSize: 4096})
	appendN(t, l, 1, 30, 1, 1000) // segments start at 1, 4, 7, ..., 28
	tests := []struct {
		before    uint64
		wantFirst uint64
		removed   int
	}{
		{1, 1, 0},
		{3, 1, 0},
		{4, 4, 1},
		{12, 10, 2},
		{12, 10, 0},
		{29, 28, 6},
		{1000, 28, 0}, // the last segment stays
	}
	for _, tt := range tests {
		n, err := l.PurgeBefore(tt.before)
		if err != nil {
			t.Fatalf("PurgeBefore(%d): %v", tt.before, err)
		}
		if n != tt.removed || l.FirstSeqno() != tt.wantFirst {
			t.Fatalf("PurgeBefore(%d): removed %d, first %d; want %d, %d", tt.before, n, l.FirstSeqno(), tt.removed, tt.wantFirst)
		}
		for s := tt.wantFirst; s <= 30; s++ {
			if _, err := l.Read(s); err != nil {
				t.Fatalf("after PurgeBefore(%d): Read(%d): %v", tt.before, s, err)
			}
		}
		if tt.wantFirst > 1 {
			if _, err := l.Read(tt.wantFirst - 1); !errors.Is(err, ErrPurged) {
				t.Fatalf("Read(%d) below first: %v, want ErrPurged", tt.wantFirst-1, err)
			}
			if _, err := l.NewReader(tt.wantFirst - 1); !errors.Is(err, ErrPurged) {
				t.Fatalf("NewReader(%d) below first: %v, want ErrPurged", tt.wantFirst-1, err)
			}
		}
	}
	l.Close()
	l = openLog(t, dir, Options{SegmentSize: 4096})
	if l.FirstSeqno() != 28 || l.LastSeqno() != 30 {
		t.Fatalf("reopened: first %d last %d, want 28 30", l.FirstSeqno(), l.LastSeqno())
	}
}

// TestReaderTails checks that a reader at the end of the log wakes up for a
// new record, without polling.
func TestReaderTails(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{SegmentSize: 4096})
	appendN(t, l, 1, 3, 1, 100)
	r, err := l.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for s := uint64(1); s <= 3; s++ {
		if rec, err := r.Next(ctx); err != nil || rec.Seqno != s {
			t.Fatalf("Next = %d, %v; want %d", rec.Seqno, err, s)
		}
	}
	if _, ok, err := r.TryNext(); ok || err != nil {
		t.Fatalf("TryNext at the end: ok %v err %v", ok, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := r.Next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with nothing to read: %v, want deadline exceeded", err)
	}

	got := make(chan uint64)
	go func() {
		defer close(got)
		for {
			rec, err := r.Next(ctx)
			if err != nil {
				return
			}
			got <- rec.Seqno
		}
	}()
	for s := uint64(4); s <= 20; s++ { // crosses several segment rolls
		appendN(t, l, s, s, 1, 1000)
		select {
		case g := <-got:
			if g != s {
				t.Fatalf("tailing reader got %d, want %d", g, s)
			}
		case <-ctx.Done():
			t.Fatalf("tailing reader did not see seqno %d", s)
		}
	}
	// Close wakes the waiting reader.
	l.Close()
	select {
	case _, ok := <-got:
		if ok {
			t.Fatal("reader returned a record after Close")
		}
	case <-ctx.Done():
		t.Fatal("Close did not wake the waiting reader")
	}
	if _, err := r.Next(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
}

func TestReaderTruncated(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{SegmentSize: 4096})
	appendN(t, l, 1, 10, 1, 500)
	ahead, _ := l.NewReader(1)  // will have read past the truncation point
	behind, _ := l.NewReader(1) // will not have
	ctx := context.Background()
	for s := uint64(1); s <= 8; s++ {
		if _, err := ahead.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for s := uint64(1); s <= 3; s++ {
		if _, err := behind.Next(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.TruncateAfter(5); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 6, 10, 2, 500)
	if _, err := ahead.Next(ctx); !errors.Is(err, ErrTruncated) {
		t.Fatalf("reader past the truncation: %v, want ErrTruncated", err)
	}
	for s := uint64(4); s <= 10; s++ {
		rec, err := behind.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := uint64(1)
		if s > 5 {
			want = 2
		}
		if rec.Seqno != s || rec.Epoch != want {
			t.Fatalf("reader behind the truncation: got seqno %d epoch %d, want %d %d", rec.Seqno, rec.Epoch, s, want)
		}
	}
}

// TestConcurrentReadersWhileWriting has tailing readers and random Reads run
// against a writer that rolls segments and purges; run it with -race.
func TestConcurrentReadersWhileWriting(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{SegmentSize: 16 << 10})
	n := uint64(3000)
	if testing.Short() {
		n = 500
	}
	size := func(s uint64) int { return int(s%13) * 97 }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 4 {
		wg.Go(func() {
			r, err := l.NewReader(1)
			if err != nil {
				errs <- err
				return
			}
			for s := uint64(1); s <= n; s++ {
				rec, err := r.Next(ctx)
				if err != nil {
					errs <- err
					return
				}
				if !equalRecords(rec, makeRecord(s, 1, size(s))) {
					errs <- errors.New("tailing reader: wrong record " + describe(rec))
					return
				}
			}
		})
	}
	wg.Go(func() { // random reads of what is there
		rng := rand.New(rand.NewPCG(3, 4))
		for l.LastSeqno() < n {
			if err := l.Wait(ctx, l.LastSeqno()+1); err != nil {
				errs <- err
				return
			}
			last := l.LastSeqno()
			s := 1 + rng.Uint64N(last)
			rec, err := l.Read(s)
			if err != nil {
				errs <- err
				return
			}
			if !equalRecords(rec, makeRecord(s, 1, size(s))) {
				errs <- errors.New("Read: wrong record " + describe(rec))
				return
			}
		}
	})
	wg.Go(func() { // a syncer acking durable positions
		for l.DurableSeqno() < n {
			if err := l.Wait(ctx, l.DurableSeqno()+1); err != nil {
				errs <- err
				return
			}
			if err := l.Sync(); err != nil {
				errs <- err
				return
			}
		}
	})
	for s := uint64(1); s <= n; s++ {
		if err := l.Append(makeRecord(s, 1, size(s))); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestLockedDirectory(t *testing.T) {
	dir := t.TempDir()
	openLog(t, dir, Options{})
	if l2, err := Open(dir, Options{}); err == nil {
		l2.Close()
		t.Fatal("second Open of the same directory succeeded")
	} else if !strings.Contains(err.Error(), "LOCK") {
		t.Fatalf("second Open: %v, want a lock error", err)
	}
}

func TestClosed(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	appendN(t, l, 1, 2, 1, 10)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if d := l.DurableSeqno(); d != 2 {
		t.Fatalf("DurableSeqno after Close = %d, want 2", d)
	}
	checks := map[string]error{
		"Append":      l.Append(makeRecord(3, 1, 10)),
		"Sync":        l.Sync(),
		"Close":       l.Close(),
		"Wait":        l.Wait(context.Background(), 3),
		"TruncateAft": l.TruncateAfter(1),
	}
	_, checks["Read"] = l.Read(1)
	_, checks["NewReader"] = l.NewReader(1)
	_, checks["PurgeBefore"] = l.PurgeBefore(2)
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	dir := t.TempDir()
	l := openLog(t, dir, Options{Registerer: reg})
	appendN(t, l, 1, 5, 1, 10)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
	}
	want := map[string]float64{
		"quire_txlog_appended_records_total": 5,
		"quire_txlog_last_seqno":             5,
		"quire_txlog_durable_seqno":          5,
		"quire_txlog_first_seqno":            1,
		"quire_txlog_segments":               1,
		"quire_txlog_fsyncs_total":           1, // the Sync; a new log has nothing to fsync at Open
		"quire_txlog_fsync_duration_seconds": 1,
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v", name, got[name], v)
		}
	}
	if b, _ := l.Size(); got["quire_txlog_bytes"] != float64(b) || b == 0 {
		t.Errorf("quire_txlog_bytes = %v, want %d", got["quire_txlog_bytes"], b)
	}
	for _, name := range []string{"quire_txlog_appended_bytes_total", "quire_txlog_purged_segments_total", "quire_txlog_purged_bytes_total"} {
		if _, ok := got[name]; !ok {
			t.Errorf("metric %s missing", name)
		}
	}
	if len(got) != 11 {
		t.Errorf("metrics = %v, want 11", got)
	}
	// Close unregisters, so the log can be reopened with the same registry.
	l.Close()
	openLog(t, dir, Options{Registerer: reg})
}
