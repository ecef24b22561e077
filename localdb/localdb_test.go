package localdb_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/quire-ha/quire/internal/mariadbtest"
	"github.com/quire-ha/quire/localdb"
)

// waitingCommit starts a commit on db that waits for a semi-sync ACK (no
// replica will send one) and returns a channel with its outcome. It waits
// until the server shows the session waiting.
func waitingCommit(t *testing.T, db *sql.DB, admin *sql.DB) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := db.Exec("INSERT INTO app.t VALUES (1)")
		done <- err
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n int
		if err := admin.QueryRow(`SELECT COUNT(*) FROM information_schema.processlist
			WHERE state LIKE '%semi-sync%' OR state LIKE '%Waiting for semi-sync ACK%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return done
		}
		select {
		case err := <-done:
			t.Fatalf("the commit returned (%v) instead of waiting for a semi-sync ACK", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no session waits for a semi-sync ACK")
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

func setup(t *testing.T, settings []string) (*mariadbtest.Instance, *sql.DB) {
	t.Helper()
	in := mariadbtest.Start(t, 1, mariadbtest.Options{Settings: settings})[0]
	if _, err := in.DB.Exec("SET GLOBAL rpl_semi_sync_master_enabled = OFF"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)"} {
		if _, err := in.DB.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if _, err := in.DB.Exec("SET GLOBAL rpl_semi_sync_master_enabled = ON"); err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("mysql", in.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	return in, admin
}

// TestFenceDoesNotHangBehindWaitingCommit: a commit waits for a semi-sync
// ACK that never comes; SET GLOBAL read_only=ON alone would wait behind it.
// Fence kills it (its client gets an error, not a success) and returns.
func TestFenceDoesNotHangBehindWaitingCommit(t *testing.T) {
	in, admin := setup(t, mariadbtest.SemiSyncPrimary)
	done := waitingCommit(t, in.DB, admin)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	start := time.Now()
	killed, err := localdb.Fence(ctx, admin)
	if err != nil {
		t.Fatalf("fence: %v (after %s)", err, time.Since(start))
	}
	if killed < 1 {
		t.Fatalf("fence killed %d sessions, want the waiting one", killed)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the waiting commit was acknowledged to its client")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting commit still waits after the fence")
	}
	ro, err := localdb.ReadOnly(ctx, admin)
	if err != nil || !ro {
		t.Fatalf("read_only after fence: %v, %v", ro, err)
	}
}

// TestStopSemiSyncWaitsFencesFirst: a restarted server comes up with
// semi-sync on, and a privileged client (READ_ONLY ADMIN) commits and waits.
// Switching semi-sync off must not release that commit as a success.
func TestStopSemiSyncWaitsFencesFirst(t *testing.T) {
	in, admin := setup(t, mariadbtest.FailClosed)
	done := waitingCommit(t, in.DB, admin)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	changed, err := localdb.StopSemiSyncWaits(ctx, admin, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil || !changed {
		t.Fatalf("StopSemiSyncWaits = %v, %v", changed, err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a commit that waited for an ACK was released as a success")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting commit still waits")
	}
	var semi, ro bool
	if err := admin.QueryRow("SELECT @@global.rpl_semi_sync_master_enabled, @@global.read_only").Scan(&semi, &ro); err != nil {
		t.Fatal(err)
	}
	if semi || !ro {
		t.Fatalf("after: semi-sync %v read_only %v, want off and on", semi, ro)
	}
	// Nothing to do the second time.
	if changed, err := localdb.StopSemiSyncWaits(ctx, admin, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil || changed {
		t.Fatalf("second StopSemiSyncWaits = %v, %v", changed, err)
	}
}

// TestCheckPrimarySettings: a server started without semi-sync gets the
// settable settings and answers no error; one with a wrong binlog format
// is refused with the variable named.
func TestCheckPrimarySettings(t *testing.T) {
	in := mariadbtest.Start(t, 1, mariadbtest.Options{Settings: []string{"binlog_format=MIXED"}})[0]
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err := localdb.CheckPrimarySettings(ctx, in.DB, log)
	if err == nil || !strings.Contains(err.Error(), "binlog_format is MIXED") {
		t.Fatalf("MIXED binlog accepted: %v", err)
	}
	if _, err := in.DB.Exec("SET GLOBAL binlog_format = ROW"); err != nil {
		t.Fatal(err)
	}
	if err := localdb.CheckPrimarySettings(ctx, in.DB, log); err != nil {
		t.Fatal(err)
	}
	var semi bool
	var point string
	if err := in.DB.QueryRow("SELECT @@global.rpl_semi_sync_master_enabled, @@global.rpl_semi_sync_master_wait_point").Scan(&semi, &point); err != nil {
		t.Fatal(err)
	}
	if !semi || point != "AFTER_SYNC" {
		t.Fatalf("semi-sync %v wait point %s", semi, point)
	}
}
