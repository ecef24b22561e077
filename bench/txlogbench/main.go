// Command txlogbench measures the transaction log (package txlog): append
// throughput with an fsync per record and with group fsync across concurrent
// writers, sequential read and random seek speed, and recovery (Open) speed.
// It prints tables; it asserts nothing.
//
//	go run ./bench/txlogbench -dir /var/tmp -duration 3s
//
// Use a directory on the disk you care about: tmpfs makes fsync free.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/quire-ha/quire/txlog"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory to create the benchmark logs in")
	duration := flag.Duration("duration", 2*time.Second, "how long each append measurement runs")
	sizesFlag := flag.String("sizes", "200,2048,65536", "event bytes per record, comma-separated")
	writersFlag := flag.String("writers", "1,8,64", "concurrent writers, comma-separated; 1 means an fsync per record")
	readRecords := flag.Int("read-records", 200000, "records of 2 KiB written for the read and seek measurements")
	flag.Parse()

	sizes, err := parseInts(*sizesFlag)
	if err != nil {
		fatal(err)
	}
	writers, err := parseInts(*writersFlag)
	if err != nil {
		fatal(err)
	}
	root, err := os.MkdirTemp(*dir, "txlogbench-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(root)

	fmt.Printf("txlogbench: log library: quire txlog (own implementation, format v1, CRC32C per record, group fsync)\n")
	fmt.Printf("go %s %s/%s, %d CPUs, directory %s\n\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), root)

	fmt.Println("Append (each writer: Append its record, then wait until it is durable)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "record bytes\tmode\twriters\trecords\trecords/s\tMB/s\tfsyncs\trecords/fsync\tp50 commit\tp99 commit\t")
	for _, size := range sizes {
		for _, w := range writers {
			res, err := benchAppend(filepath.Join(root, fmt.Sprintf("append-%d-%d", size, w)), size, w, *duration)
			if err != nil {
				fatal(err)
			}
			mode := "group fsync"
			if w == 1 {
				mode = "fsync/record"
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.0f\t%.1f\t%d\t%.1f\t%s\t%s\t\n",
				res.recordBytes, mode, w, res.records, res.perSec(), res.mbPerSec(), res.fsyncs,
				float64(res.records)/float64(max(res.fsyncs, 1)), round(res.p50), round(res.p99))
		}
	}
	tw.Flush()

	fmt.Printf("\nRead (%d records of 2 KiB events, from the page cache)\n", *readRecords)
	if err := benchRead(filepath.Join(root, "read"), *readRecords); err != nil {
		fatal(err)
	}
}

type appendResult struct {
	records, fsyncs uint64
	recordBytes     int // encoded size of one record
	bytes           uint64
	elapsed         time.Duration
	p50, p99        time.Duration
}

func (r appendResult) perSec() float64   { return float64(r.records) / r.elapsed.Seconds() }
func (r appendResult) mbPerSec() float64 { return float64(r.bytes) / r.elapsed.Seconds() / 1e6 }

// benchAppend runs writers goroutines that each append one record and wait
// for it to be durable, over and over, for d. With one writer every record
// gets its own fsync; with more, concurrent Syncs share fsyncs.
func benchAppend(dir string, size, writers int, d time.Duration) (appendResult, error) {
	l, err := txlog.Open(dir, txlog.Options{Logger: quietLogger()})
	if err != nil {
		return appendResult{}, err
	}
	defer l.Close()
	template := record(0, size)
	encoded, err := template.EncodedSize()
	if err != nil {
		return appendResult{}, err
	}
	before := l.Stats()
	var (
		mu        sync.Mutex // orders seqno assignment among writers
		wg        sync.WaitGroup
		latMu     sync.Mutex
		latencies []time.Duration
		firstErr  error
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	for range writers {
		wg.Go(func() {
			var lat []time.Duration
			rec := template
			for time.Now().Before(deadline) {
				t0 := time.Now()
				mu.Lock()
				rec.Seqno = l.LastSeqno() + 1
				err := l.Append(rec)
				mu.Unlock()
				if err == nil {
					err = l.Sync()
				}
				if err != nil {
					latMu.Lock()
					firstErr = err
					latMu.Unlock()
					return
				}
				lat = append(lat, time.Since(t0))
			}
			latMu.Lock()
			latencies = append(latencies, lat...)
			latMu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return appendResult{}, firstErr
	}
	after := l.Stats()
	slices.Sort(latencies)
	return appendResult{
		records:     after.Records - before.Records,
		bytes:       after.Bytes - before.Bytes,
		fsyncs:      after.Fsyncs - before.Fsyncs,
		recordBytes: encoded,
		elapsed:     elapsed,
		p50:         percentile(latencies, 0.50),
		p99:         percentile(latencies, 0.99),
	}, nil
}

// benchRead writes n records, then measures recovery at Open, a sequential
// Reader pass, random Read(seqno) calls and reader seeks.
func benchRead(dir string, n int) error {
	l, err := txlog.Open(dir, txlog.Options{Logger: quietLogger()})
	if err != nil {
		return err
	}
	const batch = 256
	recs := make([]txlog.Record, 0, batch)
	for s := 1; s <= n; s++ {
		recs = append(recs, record(uint64(s), 2048))
		if len(recs) == batch || s == n {
			if err := l.Append(recs...); err != nil {
				return err
			}
			recs = recs[:0]
		}
	}
	if err := l.Close(); err != nil {
		return err
	}
	bytes := l.Stats().Bytes

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\tcount\tops/s\tMB/s\tper op\t")
	row := func(name string, count int, mb float64, d time.Duration) {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.1f\t%s\t\n", name, count, float64(count)/d.Seconds(), mb/d.Seconds(), round(d/time.Duration(count)))
	}

	t0 := time.Now()
	l, err = txlog.Open(dir, txlog.Options{Logger: quietLogger()})
	if err != nil {
		return err
	}
	defer l.Close()
	row("open (verify every CRC, build index)", n, float64(bytes)/1e6, time.Since(t0))

	r, err := l.NewReader(1)
	if err != nil {
		return err
	}
	t0 = time.Now()
	for range n {
		if _, err := r.Next(context.Background()); err != nil {
			return err
		}
	}
	row("sequential Reader.Next", n, float64(bytes)/1e6, time.Since(t0))

	rng := rand.New(rand.NewPCG(1, 2))
	const reads = 50000
	t0 = time.Now()
	for range reads {
		if _, err := l.Read(1 + rng.Uint64N(uint64(n))); err != nil {
			return err
		}
	}
	row("random Read(seqno)", reads, float64(bytes)/float64(n)*reads/1e6, time.Since(t0))

	const seeks = 20000
	t0 = time.Now()
	for range seeks {
		r, err := l.NewReader(1 + rng.Uint64N(uint64(n)))
		if err != nil {
			return err
		}
		if _, err := r.Next(context.Background()); err != nil {
			return err
		}
	}
	row("seek: NewReader(random) + Next", seeks, float64(bytes)/float64(n)*seeks/1e6, time.Since(t0))
	return tw.Flush()
}

// record returns a plausible record with size bytes of events.
func record(seqno uint64, size int) txlog.Record {
	ev := make([]byte, size)
	for i := range ev {
		ev[i] = byte(i * 7)
	}
	return txlog.Record{
		Seqno:      seqno,
		Epoch:      1,
		GTID:       "0-1-" + strconv.FormatUint(seqno, 10),
		SourceFile: "mariadb-bin.000001",
		SourcePos:  seqno * 300,
		ServerID:   1,
		Timestamp:  uint32(time.Now().Unix()),
		Schemas:    []string{"sbtest"},
		FormatDesc: make([]byte, 120),
		Events:     ev,
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d > time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q in %q", f, s)
		}
		out = append(out, n)
	}
	return out, nil
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "txlogbench:", err)
	os.Exit(1)
}
