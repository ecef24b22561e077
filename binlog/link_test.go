package binlog

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/txlog"
)

// metricValue gathers one metric (counter or gauge) from reg.
func metricValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// checkContinues checks that recs continue prev without gap or duplicate:
// consecutive seqnos and consecutive GTID sequence numbers (one domain,
// one server here).
func checkContinues(t testing.TB, prev txlog.Record, recs []txlog.Record) {
	t.Helper()
	for _, rec := range recs {
		var d, s, n uint64
		fmt.Sscanf(prev.GTID, "%d-%d-%d", &d, &s, &n)
		if want := fmt.Sprintf("%d-%d-%d", d, s, n+1); rec.Seqno != prev.Seqno+1 || rec.GTID != want {
			t.Fatalf("after %s: got %s, want seqno %d GTID %s", describe(prev), describe(rec), prev.Seqno+1, want)
		}
		prev = rec
	}
}

// TestLinkFailures stops the source's mariadbd (SIGSTOP: the connection
// stays open but goes silent) and checks that the missing heartbeats make
// the reader reconnect; then kills and restarts mariadbd. Both times the
// records continue without gap or duplicate.
func TestLinkFailures(t *testing.T) {
	in := mariadbtest.Start(t, 1)[0]
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, in, false)
	cfg.Metrics = m
	cfg.ConnectTimeout = time.Second
	src, err := Open(context.Background(), cfg, Resume{Position: firstPosition(t, in)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r := startReader(t, src, false)
	run(t, in, "", "CREATE DATABASE s1", "CREATE TABLE s1.t (id INT PRIMARY KEY)")
	for i := range 3 {
		run(t, in, "s1", fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	recs := r.take(t, 5, 10*time.Second)
	checkContinues(t, txlog.Record{GTID: "0-101-0"}, recs)
	if got := metricValue(t, reg, "quire_binlog_connected"); got != 1 {
		t.Fatalf("connected = %v with a running dump", got)
	}

	// Silent link: heartbeats stop, the TCP connection stays up.
	pid := in.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	cont := func() { syscall.Kill(pid, syscall.SIGCONT) }
	t.Cleanup(cont)
	waitFor(t, 10*time.Second, "the silent link declared dead", func() bool {
		return metricValue(t, reg, "quire_binlog_connected") == 0
	})
	t.Logf("silent link detected after %s (heartbeat %s, dead after %s)", time.Since(stopped).Round(time.Millisecond), cfg.HeartbeatPeriod, 2*cfg.HeartbeatPeriod)
	// A stopped server accepts TCP connections (the kernel does) but never
	// greets: attempts time out after ConnectTimeout and are retried.
	waitFor(t, 10*time.Second, "two reconnection attempts", func() bool {
		return metricValue(t, reg, "quire_binlog_reconnects_total") >= 2
	})
	if got := metricValue(t, reg, "quire_binlog_connected"); got != 0 {
		t.Fatalf("connected = %v while mariadbd is stopped", got)
	}
	cont()
	waitFor(t, 15*time.Second, "the dump running again", func() bool {
		return metricValue(t, reg, "quire_binlog_connected") == 1
	})
	for i := 3; i < 6; i++ {
		run(t, in, "s1", fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	more := r.take(t, 3, 10*time.Second)
	checkContinues(t, recs[len(recs)-1], more)
	recs = append(recs, more...)

	// Crash and restart: the dump breaks, reconnection fails until
	// mariadbd is back, then continues in the next binlog file.
	if err := in.Kill(); err != nil {
		t.Fatal(err)
	}
	before := metricValue(t, reg, "quire_binlog_reconnects_total")
	waitFor(t, 10*time.Second, "reconnection attempts while mariadbd is down", func() bool {
		return metricValue(t, reg, "quire_binlog_reconnects_total") >= before+2
	})
	if err := in.Restart(); err != nil {
		t.Fatal(err)
	}
	for i := 6; i < 9; i++ {
		run(t, in, "s1", fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	more = r.take(t, 3, 20*time.Second)
	checkContinues(t, recs[len(recs)-1], more)
	if more[0].SourceFile == recs[len(recs)-1].SourceFile {
		t.Errorf("after the restart records still come from %s", more[0].SourceFile)
	}
	r.expectNone(t, 500*time.Millisecond)
	t.Logf("reconnects=%v transactions=%v events=%v bytes=%v", metricValue(t, reg, "quire_binlog_reconnects_total"),
		metricValue(t, reg, "quire_binlog_transactions_read_total"), metricValue(t, reg, "quire_binlog_events_read_total"),
		metricValue(t, reg, "quire_binlog_bytes_read_total"))
	if got := metricValue(t, reg, "quire_binlog_transactions_read_total"); got != 11 {
		t.Errorf("transactions_read_total = %v, want 11", got)
	}
	if ts := metricValue(t, reg, "quire_binlog_last_event_timestamp_seconds"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last event timestamp %v is not recent", ts)
	}

	// Next gives up when its context ends and continues where it was on
	// the next call; Close ends a blocked Next.
	r.stop()
	<-r.errs
	ctx, cancel := context.WithTimeout(context.Background(), 3*cfg.HeartbeatPeriod)
	defer cancel()
	if _, err := src.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with an expiring context: %v", err)
	}
	run(t, in, "s1", "INSERT INTO t VALUES (100)")
	rec, err := src.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkContinues(t, more[len(more)-1], []txlog.Record{rec})
	closed := make(chan error, 1)
	go func() { _, err := src.Next(context.Background()); closed <- err }()
	time.Sleep(2 * cfg.HeartbeatPeriod) // let Next block; the check below does not depend on it
	src.Close()
	select {
	case err := <-closed:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Next after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a blocked Next")
	}
}
