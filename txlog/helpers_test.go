package txlog

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
)

// makeRecord returns a record whose content is a pure function of seqno,
// epoch and the event size, so readers can verify what they get.
func makeRecord(seqno, epoch uint64, eventBytes int) Record {
	rng := rand.New(rand.NewPCG(seqno, epoch))
	schemas := []string{"app", "billing", "crm", "shop"}[:int(seqno%4)]
	var flags Flags
	if len(schemas) > 1 {
		flags |= FlagMultiSchema
	}
	if seqno%7 == 0 {
		flags |= FlagDDL
	}
	fd := make([]byte, 100+int(seqno%32))
	for i := range fd {
		fd[i] = byte(rng.Uint32())
	}
	ev := make([]byte, eventBytes)
	for i := 0; i < len(ev); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(ev); j++ {
			ev[i+j] = byte(v >> (8 * j))
		}
	}
	return Record{
		Seqno:      seqno,
		Epoch:      epoch,
		GTID:       fmt.Sprintf("0-1-%d", seqno),
		SourceFile: fmt.Sprintf("mariadb-bin.%06d", 1+seqno/1000),
		SourcePos:  4 + seqno*300,
		ServerID:   1,
		Timestamp:  1_700_000_000 + uint32(seqno),
		Schemas:    schemas,
		Flags:      flags,
		FormatDesc: fd,
		Events:     ev,
	}
}

// equalRecords compares records treating nil and empty slices alike.
func equalRecords(a, b Record) bool {
	norm := func(r Record) Record {
		if len(r.Schemas) == 0 {
			r.Schemas = nil
		}
		if len(r.FormatDesc) == 0 {
			r.FormatDesc = nil
		}
		if len(r.Events) == 0 {
			r.Events = nil
		}
		return r
	}
	a, b = norm(a), norm(b)
	return reflect.DeepEqual(a, b)
}

// describe summarizes a record for failure messages without dumping its bytes.
func describe(r Record) string {
	return fmt.Sprintf("{seqno %d epoch %d gtid %q file %q:%d schemas %v flags %v fd %d bytes events %d bytes}",
		r.Seqno, r.Epoch, r.GTID, r.SourceFile, r.SourcePos, r.Schemas, r.Flags, len(r.FormatDesc), len(r.Events))
}

// logBuffer is a concurrency-safe buffer for slog output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a logger writing text to a buffer the test can inspect.
func testLogger() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// openLog opens a log in dir, failing the test on error, and closes it at
// the end of the test unless already closed.
func openLog(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger, _ = testLogger()
	}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// appendN appends records from..to (inclusive) of the given size and epoch.
func appendN(t testing.TB, l *Log, from, to, epoch uint64, size int) {
	t.Helper()
	for s := from; s <= to; s++ {
		if err := l.Append(makeRecord(s, epoch, size)); err != nil {
			t.Fatalf("Append(%d): %v", s, err)
		}
	}
}

// segmentFiles returns the segment file names in dir, sorted.
func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	return m
}

// copyDir copies the regular files of src into a new temporary directory.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// fileSize returns the size of a file.
func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// flipByte inverts one byte of a file.
func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}
