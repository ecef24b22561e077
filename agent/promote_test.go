package agent_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quire-ha/quire/agent"
	"github.com/quire-ha/quire/api/agentpb"
)

// TestPromoteAfterRestartAppliesWholeLog: db2's log holds records beyond
// the commit index (K=2 with db3's agent down), which its database has not
// applied. The primary's agent and db2's agent are killed, and db2's agent
// comes back without a role. Promote (AgentControl) must apply every record
// of db2's log, with its applier's preparation and restart rows, stop that
// applier, and only then open writes.
func TestPromoteAfterRestartAppliesWholeLog(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dbs, procs := applyCluster(t, 2)
	db1, db2, db3 := procs[0], procs[1], procs[2]
	mustExec(t, dbs[0], "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY, v INT)", "INSERT INTO app.t VALUES (0, 0)")
	committed := binlogTransactions(t, dbs[0])
	waitApplied(t, db2, committed, time.Minute)

	// K=2 and db3 down: the commits wait, db2's log holds them, its
	// commit index stays at committed.
	db3.Kill()
	for i := 1; i <= 3; i++ {
		commit(dbs[0], i)
	}
	db2.WaitStatus("db2's log holds waiting transactions", 30*time.Second, func(s agent.Status) bool {
		return s.DurableSeqno > committed
	})
	db1.Kill() // the primary fails: the stream ends
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := db2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := st.LastSeqno
	if st.Apply == nil || st.Apply.AppliedSeqno != committed || st.Apply.CommitSeqno != committed || last <= committed {
		t.Fatalf("db2 before the restart: log last %d, apply %+v; want applied = commit index = %d < log last", last, st.Apply, committed)
	}
	want := int(last - committed) // one inserted row per record

	// db2's agent restarts without a role.
	db2.Kill()
	cfgPath := filepath.Join(db2.Dir, "agent.yaml")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "  role: replica\n", "  role: none\n", 1)
	cfg = regexp.MustCompile(`(?m)^  primary_agent: .*\n`).ReplaceAllString(cfg, "")
	if cfg == string(b) || strings.Contains(cfg, "primary_agent") {
		t.Fatalf("could not take db2's role away in its configuration:\n%s", b)
	}
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := db2.Restart(); err != nil {
		t.Fatal(err)
	}
	db2.WaitStatus("db2 up without a role", time.Minute, func(s agent.Status) bool {
		return s.Role.Kind == agent.RoleNone && s.LastSeqno == last
	})
	ro, n := readOnlyAndRows(t, dbs[1].DB)
	if !ro || n != 0 {
		t.Fatalf("db2 before the promotion: read_only %v, %d rows beyond the commit index; want read-only, none", ro, n)
	}

	// While Promote runs, every sample that finds db2 writable must find
	// every record applied.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var violations []string
	samples := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond): // sampling interval
			}
			var ro bool
			if err := dbs[1].DB.QueryRow("SELECT @@global.read_only").Scan(&ro); err != nil {
				continue // the agent may kill this session while it fences
			}
			mu.Lock()
			samples++
			mu.Unlock()
			if ro {
				continue
			}
			var n int
			if err := dbs[1].DB.QueryRow("SELECT COUNT(*) FROM app.t WHERE id > 0").Scan(&n); err != nil {
				continue
			}
			if n < want {
				mu.Lock()
				violations = append(violations, fmt.Sprintf("writable with %d of %d rows applied", n, want))
				mu.Unlock()
			}
		}
	}()
	resp, err := controlClient(t, db2.GRPCAddr).Promote(ctx, &agentpb.PromoteRequest{Epoch: 2, ExpectLastSeqno: last})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if resp.ReadOnly || resp.Role != agent.RolePrimary || !resp.Serving || resp.Epoch != 2 {
		t.Fatalf("after promote: %+v", resp)
	}
	if len(violations) > 0 {
		t.Fatalf("db2 opened writes before its whole log was applied: %v", violations)
	}
	ro, n = readOnlyAndRows(t, dbs[1].DB)
	if ro || n != want {
		t.Fatalf("db2 after the promotion: read_only %v, %d of the %d rows of records %d..%d", ro, n, want, committed+1, last)
	}
	if rows := restartRows(t, dbs[1].DB); len(rows) != 4 || slices.Max(rows) != last {
		t.Fatalf("db2's restart rows %v, want 4 reaching %d", rows, last)
	}
	// The applier that applied them is stopped: its lock is free.
	var holder sql.NullInt64
	if err := dbs[1].DB.QueryRow("SELECT IS_USED_LOCK('quire.apply')").Scan(&holder); err != nil || holder.Valid {
		t.Fatalf("the applier's lock is held by connection %v (%v) after the promotion", holder, err)
	}
	// The agent's log says so, in that order.
	logs := db2.Logs()
	applied, opened := strings.Index(logs, "applied the log up to the seqno; run stopped"), strings.Index(logs, "promoted: writes open")
	if applied < 0 || opened < 0 || applied > opened {
		t.Fatalf("db2's log: whole log applied at %d, writes opened at %d; want both, in that order:\n%s", applied, opened, db2.LogTail(30))
	}
	// Writes open: the new primary commits.
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err := dbs[1].DB.ExecContext(wctx, "INSERT INTO app.t VALUES (100, 1)"); err != nil {
		t.Fatalf("write on the promoted db2: %v", err)
	}
	t.Logf("db2 applied records %d..%d (%d rows) before opening writes; %d samples during Promote", committed+1, last, want, samples)
}

// readOnlyAndRows reads read_only and the rows of app.t beyond the first.
func readOnlyAndRows(t *testing.T, db *sql.DB) (bool, int) {
	t.Helper()
	var ro bool
	var n int
	if err := db.QueryRow("SELECT @@global.read_only").Scan(&ro); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow("SELECT COUNT(*) FROM app.t WHERE id > 0").Scan(&n); err != nil && !errors.Is(err, sql.ErrNoRows) {
		t.Fatal(err)
	}
	return ro, n
}
