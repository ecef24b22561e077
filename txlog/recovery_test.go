package txlog

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildLog writes records 1..n of the given size into a fresh directory with
// the given segment size and returns the directory, closed.
func buildLog(t *testing.T, n uint64, size int, segSize int64) string {
	t.Helper()
	dir := t.TempDir()
	l, err := Open(dir, Options{SegmentSize: segSize, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, l, 1, n, 1, size)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// recordOffsets returns the byte offset of every record in a segment file.
func recordOffsets(t *testing.T, path string) []int64 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for off := 0; off < len(data); {
		h, err := parseHeader(data[off:])
		if err != nil {
			t.Fatalf("%s at %d: %v", path, off, err)
		}
		offs = append(offs, int64(off))
		off += int(h.length)
	}
	return offs
}

// TestTornTailEveryLength cuts the last record of the last segment at every
// possible length: Open must cut the partial record, log how many bytes it
// cut, and keep everything before it.
func TestTornTailEveryLength(t *testing.T) {
	for _, tc := range []struct {
		name    string
		segSize int64
	}{
		{"single segment", 1 << 20},
		{"last of several segments", 2048}, // ~3 records per segment
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 10
			src := buildLog(t, n, 500, tc.segSize)
			segs := segmentFiles(t, src)
			lastSeg := segs[len(segs)-1]
			path := filepath.Join(src, lastSeg)
			offs := recordOffsets(t, path)
			full := fileSize(t, path)
			start := offs[len(offs)-1] // the last record, seqno n
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			dir := src
			for cut := start; cut < full; cut++ {
				// Restore the directory: the original segments, the last one cut.
				for _, name := range segmentFiles(t, dir) {
					if name > lastSeg {
						os.Remove(filepath.Join(dir, name))
					}
				}
				if err := os.WriteFile(path, orig[:cut], 0o640); err != nil {
					t.Fatal(err)
				}
				logger, logs := testLogger()
				l, err := Open(dir, Options{SegmentSize: tc.segSize, Logger: logger})
				if err != nil {
					t.Fatalf("cut at %d of %d: Open: %v", cut, full, err)
				}
				if l.LastSeqno() != n-1 {
					t.Fatalf("cut at %d: LastSeqno = %d, want %d", cut, l.LastSeqno(), n-1)
				}
				if got := fileSize(t, filepath.Join(dir, lastSeg)); got != start {
					t.Fatalf("cut at %d: segment is %d bytes after recovery, want %d", cut, got, start)
				}
				if torn := cut - start; torn > 0 {
					if want := fmt.Sprintf("bytes_cut=%d", torn); !strings.Contains(logs.String(), want) {
						t.Fatalf("cut at %d: log lacks %q:\n%s", cut, want, logs)
					}
				}
				// The log goes on from there.
				appendN(t, l, n, n, 1, 500)
				if got, err := l.Read(n); err != nil || !equalRecords(got, makeRecord(n, 1, 500)) {
					t.Fatalf("cut at %d: re-appended record reads back as %s, %v", cut, describe(got), err)
				}
				l.Close()
			}
		})
	}
}

func TestTornTailKinds(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, lastOff, size int64)
		reason string
		keep   uint64 // records kept
	}{
		{"checksum of last record", func(t *testing.T, path string, lastOff, size int64) {
			flipByte(t, path, size-1)
		}, "record checksum mismatch", 4},
		{"body of last record", func(t *testing.T, path string, lastOff, size int64) {
			flipByte(t, path, lastOff+headerSize+20)
		}, "record checksum mismatch", 4},
		{"zero-filled extension", func(t *testing.T, path string, lastOff, size int64) {
			if err := os.Truncate(path, size+8192); err != nil {
				t.Fatal(err)
			}
		}, "zero-filled tail", 5},
		{"last record zeroed", func(t *testing.T, path string, lastOff, size int64) {
			f, _ := os.OpenFile(path, os.O_RDWR, 0)
			defer f.Close()
			if _, err := f.WriteAt(make([]byte, size-lastOff), lastOff); err != nil {
				t.Fatal(err)
			}
		}, "zero-filled tail", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := buildLog(t, 5, 300, 1<<20)
			path := filepath.Join(dir, segmentFiles(t, dir)[0])
			offs := recordOffsets(t, path)
			size := fileSize(t, path)
			tt.damage(t, path, offs[4], size)
			logger, logs := testLogger()
			l, err := Open(dir, Options{Logger: logger})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer l.Close()
			wantSize := size
			if tt.keep < 5 {
				wantSize = offs[tt.keep]
			}
			if l.LastSeqno() != tt.keep || fileSize(t, path) != wantSize {
				t.Fatalf("LastSeqno %d, size %d; want %d, %d", l.LastSeqno(), fileSize(t, path), tt.keep, wantSize)
			}
			if !strings.Contains(logs.String(), tt.reason) || !strings.Contains(logs.String(), "cut torn tail") {
				t.Fatalf("log lacks %q:\n%s", tt.reason, logs)
			}
		})
	}
}

// TestCorruptionIsAnError damages records that are not a torn tail: Open
// must fail with an error naming the segment file, the offset and the seqno.
func TestCorruptionIsAnError(t *testing.T) {
	// 12 records of ~830 bytes in 2 KiB segments: two per segment.
	type target struct {
		seg    int // index into the segment files; -1 is the last
		rec    int // index of the record in the segment
		offset int64
	}
	tests := []struct {
		name   string
		at     target
		damage string // "flip" a byte at offset into the record, or "garbage" tail
		reason string
	}{
		{"header of a middle segment's record", target{1, 1, 20}, "flip", "header checksum mismatch"},
		{"magic of a middle segment's record", target{1, 0, 0}, "flip", "bad magic"},
		{"body of a middle segment's record", target{1, 1, 300}, "flip", "record checksum mismatch"},
		{"checksum of a middle segment's last record", target{1, -1, -1}, "flip", "record checksum mismatch"},
		{"first segment's first record", target{0, 0, 100}, "flip", "record checksum mismatch"},
		{"middle record of the last segment", target{-1, 0, 300}, "flip", "record checksum mismatch"},
		{"garbage after the last record", target{-1, -1, 0}, "garbage", "bad magic"},
	}
	src := buildLog(t, 12, 700, 2048)
	segs := segmentFiles(t, src)
	if len(segs) < 4 {
		t.Fatalf("want at least 4 segments, have %v", segs)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, src)
			si := tt.at.seg
			if si < 0 {
				si = len(segs) + si
			}
			path := filepath.Join(dir, segs[si])
			offs := recordOffsets(t, path)
			ri := tt.at.rec
			if ri < 0 {
				ri = len(offs) + ri
			}
			first, _ := parseSegmentName(segs[si])
			seqno := first + uint64(ri)
			recOff := offs[ri]
			switch tt.damage {
			case "flip":
				at := recOff + tt.at.offset
				if tt.at.offset < 0 { // the record's trailing checksum
					end := fileSize(t, path)
					if ri+1 < len(offs) {
						end = offs[ri+1]
					}
					at = end - 1
				}
				flipByte(t, path, at)
			case "garbage":
				f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
				f.Write([]byte(strings.Repeat("garbage!", 20)))
				f.Close()
				seqno = first + uint64(len(offs))
				recOff = offs[len(offs)-1] + int64(recordLen(t, path, offs[len(offs)-1]))
			}
			_, err := Open(dir, Options{Logger: discardLogger()})
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open: %v, want a *CorruptError", err)
			}
			if ce.Segment != path || ce.Seqno != seqno || ce.Offset != recOff || !strings.Contains(ce.Reason, tt.reason) {
				t.Fatalf("error %v\nwant segment %s, offset %d, seqno %d, reason containing %q", err, path, recOff, seqno, tt.reason)
			}
			for _, want := range []string{segs[si], fmt.Sprintf("seqno %d", seqno), fmt.Sprintf("offset %d", recOff)} {
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func recordLen(t *testing.T, path string, off int64) uint32 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(data[off:])
	if err != nil {
		t.Fatal(err)
	}
	return h.length
}

func TestSeqnoGapBetweenSegments(t *testing.T) {
	dir := buildLog(t, 12, 700, 2048)
	segs := segmentFiles(t, dir)
	if err := os.Remove(filepath.Join(dir, segs[1])); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{Logger: discardLogger()})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "seqno gap") || !strings.Contains(err.Error(), segs[2]) {
		t.Fatalf("Open with a missing segment: %v, want a seqno gap error naming %s", err, segs[2])
	}
}

func TestBadSegmentName(t *testing.T) {
	dir := buildLog(t, 2, 10, 1<<20)
	if err := os.WriteFile(filepath.Join(dir, "junk.seg"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{Logger: discardLogger()}); err == nil || !strings.Contains(err.Error(), "junk.seg") {
		t.Fatalf("Open with junk.seg: %v, want an error naming it", err)
	}
}

// TestReadDetectsLaterCorruption damages a record after Open: Read and
// readers report it with the seqno instead of returning bad data.
func TestReadDetectsLaterCorruption(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, Options{})
	appendN(t, l, 1, 5, 1, 300)
	path := filepath.Join(dir, segmentFiles(t, dir)[0])
	offs := recordOffsets(t, path)
	flipByte(t, path, offs[2]+200)
	_, err := l.Read(3)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Seqno != 3 || ce.Offset != offs[2] {
		t.Fatalf("Read(3) of a damaged record: %v", err)
	}
	r, _ := l.NewReader(1)
	for s := uint64(1); s <= 2; s++ {
		if _, ok, err := r.TryNext(); !ok || err != nil {
			t.Fatalf("reader at %d: %v", s, err)
		}
	}
	if _, _, err := r.TryNext(); !errors.As(err, &ce) || ce.Seqno != 3 {
		t.Fatalf("reader at the damaged record: %v", err)
	}
}

// FuzzOpenSegment opens a log whose only segment holds arbitrary bytes
// (after a valid record): Open must either recover or fail, never panic, and
// what it recovers must read back.
func FuzzOpenSegment(f *testing.F) {
	r1, r2 := makeRecord(1, 1, 100), makeRecord(2, 1, 100)
	good, err := r1.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	second, err := r2.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add(second)
	f.Add(second[:70])
	f.Add(make([]byte, 100))
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		data := append(append([]byte(nil), good...), tail...)
		if err := os.WriteFile(filepath.Join(dir, segmentName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, Options{Logger: discardLogger()})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open failed with a non-corruption error: %v", err)
			}
			return
		}
		defer l.Close()
		if l.LastSeqno() < 1 {
			t.Fatalf("recovery lost the valid first record: last %d", l.LastSeqno())
		}
		for s := uint64(1); s <= l.LastSeqno(); s++ {
			if _, err := l.Read(s); err != nil {
				t.Fatalf("Read(%d) after recovery: %v", s, err)
			}
		}
	})
}
