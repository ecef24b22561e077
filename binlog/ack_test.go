package binlog

import (
	"context"
	"database/sql"
	"strconv"
	"testing"
	"time"

	"github.com/quire-ha/quire/internal/mariadbtest"
)

// commitAsync runs a statement in its own connection and reports on the
// returned channel when it has returned.
func commitAsync(t testing.TB, in *mariadbtest.Instance, q string) <-chan error {
	done := make(chan error, 1)
	db, err := sql.Open("mysql", in.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	go func() {
		_, err := db.Exec(q)
		done <- err
	}()
	return done
}

// returned reports whether the statement behind done has returned (and
// fails the test if it failed).
func returned(t testing.TB, done <-chan error) bool {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("statement failed: %v", err)
		}
		return true
	default:
		return false
	}
}

// waitReturned waits for the statement behind done to return.
func waitReturned(t testing.TB, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s has not returned after 10s", what)
	}
}

func statusInt(t testing.TB, in *mariadbtest.Instance, name string) int {
	t.Helper()
	v, err := strconv.Atoi(status(t, in, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return v
}

// TestAck shows that mariadbd (rpl_semi_sync_master_wait_point=AFTER_SYNC,
// wait_no_slave=ON) holds a client's COMMIT until the reader acknowledges
// its position, that reading alone acknowledges nothing, that an ack
// releases exactly the transactions up to its position, and what a dump's
// start position does (it acknowledges).
func TestAck(t *testing.T) {
	in := mariadbtest.Start(t, 1, mariadbtest.Options{Settings: mariadbtest.SemiSyncPrimary})[0]
	start := firstPosition(t, in)

	// Start-up, no semi-sync replica connected. Observed on 10.11:
	// Rpl_semi_sync_master_status is ON from the start (enabling the
	// master switches it on), and with wait_no_slave=ON a commit waits.
	if got := status(t, in, "Rpl_semi_sync_master_status"); got != "ON" {
		t.Errorf("Rpl_semi_sync_master_status at start-up = %s, observed ON before", got)
	}
	if got := statusInt(t, in, "Rpl_semi_sync_master_clients"); got != 0 {
		t.Fatalf("Rpl_semi_sync_master_clients = %d before any reader", got)
	}
	a := commitAsync(t, in, "CREATE DATABASE a")
	waitFor(t, 10*time.Second, "commit A waiting for an ack", func() bool {
		return statusInt(t, in, "Rpl_semi_sync_master_wait_sessions") == 1
	})
	if returned(t, a) {
		t.Fatal("commit A returned with no semi-sync replica connected")
	}

	cfg := testConfig(t, in, true)
	src, err := Open(context.Background(), cfg, Resume{Position: start})
	if err != nil {
		t.Fatal(err)
	}
	r := startReader(t, src, false)
	recA := r.take(t, 1, 10*time.Second)[0]
	if got := statusInt(t, in, "Rpl_semi_sync_master_clients"); got != 1 {
		t.Errorf("Rpl_semi_sync_master_clients = %d with the reader connected", got)
	}
	b := commitAsync(t, in, "CREATE DATABASE b")
	recB := r.take(t, 1, 10*time.Second)[0]
	// Reading (and heartbeats) acknowledge nothing: both still wait after
	// several heartbeat periods.
	r.expectNone(t, 4*cfg.HeartbeatPeriod)
	// Only A's session waits for the ack itself (wait_sessions = 1): with
	// AFTER_SYNC the waiting group-commit leader holds the after-sync
	// stage, so B, already in the binlog, queues behind it.
	if n, ra, rb := statusInt(t, in, "Rpl_semi_sync_master_wait_sessions"), returned(t, a), returned(t, b); n != 1 || ra || rb {
		t.Fatalf("before any ack: %d sessions waiting for an ack (A returned %v, B returned %v), want 1 and neither", n, ra, rb)
	}
	if n := statusInt(t, in, "Rpl_semi_sync_master_get_ack"); n != 0 {
		t.Fatalf("Rpl_semi_sync_master_get_ack = %d before any ack", n)
	}

	// Ack A: A returns, B (later in the binlog) keeps waiting.
	if err := src.Ack(recA.SourceFile, recA.SourcePos); err != nil {
		t.Fatal(err)
	}
	waitReturned(t, a, "commit A after its ack")
	if n := statusInt(t, in, "Rpl_semi_sync_master_get_ack"); n != 1 {
		t.Errorf("Rpl_semi_sync_master_get_ack = %d after one ack", n)
	}
	// B now waits for its own ack.
	waitFor(t, 10*time.Second, "commit B waiting for its ack", func() bool {
		return statusInt(t, in, "Rpl_semi_sync_master_wait_sessions") == 1
	})
	r.expectNone(t, 2*cfg.HeartbeatPeriod)
	if returned(t, b) {
		t.Fatal("commit B returned after the ack for A")
	}
	if err := src.Ack(recB.SourceFile, recB.SourcePos); err != nil {
		t.Fatal(err)
	}
	waitReturned(t, b, "commit B after its ack")
	if err := src.Ack(recB.SourceFile, recB.SourcePos+1); err == nil {
		t.Error("ack past the last record read was accepted")
	}

	// The agent crashes after logging C but before the sync set holds it.
	c := commitAsync(t, in, "CREATE DATABASE c")
	recC := r.take(t, 1, 10*time.Second)[0]
	r.stop()
	src.Close()
	waitFor(t, 10*time.Second, "the reader gone", func() bool {
		return statusInt(t, in, "Rpl_semi_sync_master_clients") == 0
	})
	if returned(t, c) {
		t.Fatal("commit C returned without an ack")
	}

	// Restart with Acked = B: the dump starts at B (acknowledging only
	// what was acknowledged), C is read again and dropped, and C waits
	// until it is acknowledged.
	src, err = Open(context.Background(), cfg, Resume{Seqno: recC.Seqno, GTID: recC.GTID,
		Position: Position{recC.SourceFile, recC.SourcePos}, Acked: Position{recB.SourceFile, recB.SourcePos}})
	if err != nil {
		t.Fatal(err)
	}
	r = startReader(t, src, false)
	waitFor(t, 10*time.Second, "the reader back", func() bool {
		return statusInt(t, in, "Rpl_semi_sync_master_clients") == 1
	})
	r.expectNone(t, 4*cfg.HeartbeatPeriod)
	if n := statusInt(t, in, "Rpl_semi_sync_master_wait_sessions"); n != 1 || returned(t, c) {
		t.Fatalf("after restarting from B: %d sessions waiting, want C", n)
	}
	if err := src.Ack(recC.SourceFile, recC.SourcePos); err != nil {
		t.Fatal(err)
	}
	waitReturned(t, c, "commit C after its ack")

	// Without Acked, the dump starts at the last record and that start
	// alone releases D: why Resume.Acked exists.
	d := commitAsync(t, in, "CREATE DATABASE d")
	recD := r.take(t, 1, 10*time.Second)[0]
	if recD.Seqno != recC.Seqno+1 {
		t.Errorf("D numbered %d after C %d", recD.Seqno, recC.Seqno)
	}
	r.stop()
	src.Close()
	if returned(t, d) {
		t.Fatal("commit D returned without an ack")
	}
	acks := statusInt(t, in, "Rpl_semi_sync_master_get_ack")
	src, err = Open(context.Background(), cfg, Resume{Seqno: recD.Seqno, GTID: recD.GTID,
		Position: Position{recD.SourceFile, recD.SourcePos}})
	if err != nil {
		t.Fatal(err)
	}
	waitReturned(t, d, "commit D after a dump started at its end")
	if n := statusInt(t, in, "Rpl_semi_sync_master_get_ack"); n != acks {
		t.Errorf("D released by %d ack packets; want none (the dump start did it)", n-acks)
	}
	t.Logf("yes_tx=%s no_tx=%s status=%s", status(t, in, "Rpl_semi_sync_master_yes_tx"),
		status(t, in, "Rpl_semi_sync_master_no_tx"), status(t, in, "Rpl_semi_sync_master_status"))
	src.Close()

	// mariadbd restarts (crash): semi-sync is ON again at once and the
	// first commit waits for the reader's ack.
	if err := in.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := in.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := status(t, in, "Rpl_semi_sync_master_status"); got != "ON" {
		t.Errorf("Rpl_semi_sync_master_status after a restart = %s, observed ON before", got)
	}
	e := commitAsync(t, in, "CREATE DATABASE e")
	waitFor(t, 10*time.Second, "commit E waiting for an ack after the restart", func() bool {
		return statusInt(t, in, "Rpl_semi_sync_master_wait_sessions") == 1
	})
	src, err = Open(context.Background(), cfg, Resume{Seqno: recD.Seqno, GTID: recD.GTID,
		Position: Position{recD.SourceFile, recD.SourcePos}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	r = startReader(t, src, false)
	recE := r.take(t, 1, 10*time.Second)[0]
	if recE.Seqno != recD.Seqno+1 || recE.SourceFile == recD.SourceFile {
		t.Errorf("E after the restart: %s", describe(recE))
	}
	if returned(t, e) {
		t.Fatal("commit E returned without an ack")
	}
	if err := src.Ack(recE.SourceFile, recE.SourcePos); err != nil {
		t.Fatal(err)
	}
	waitReturned(t, e, "commit E after its ack")
}
